"""The export directory's manifest: its format (this package owns it: ``ddi_tf.deploy.export`` writes it,
``micro/gen.py`` reads it through here), its reader and the checks of everything it points at (file checksums,
the cost tables' checksum and every option's MACs recomputed from its ``.tflite`` graph)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings

from ddi_runtime.graph import GraphError, file_macs

MANIFEST_VERSION = 1
"""The manifest format: this package owns it (``ddi_tf.deploy.export`` writes this version, ``micro/gen.py`` reads it).
Version 1 manifests written since the cost checksum carry ``cost_sha256``; older ones are read with a warning."""


def option_key(piece: str, option: str) -> str:
    """The key of a piece option in an export: its file ``stages/<key>.tflite`` and its signature in ``ddi.tflite``."""
    return f"{piece}__{option}"


class ModelError(ValueError):
    """An export directory that cannot be used (missing, corrupt, wrong version, checksum mismatch)."""


class ManifestWarning(UserWarning):
    """A manifest that loads but is less protected than a current one (no ``cost_sha256``: an older export)."""


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks): the ``sha256`` of every file a manifest lists."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cost_digest(manifest: dict) -> str:
    """sha256 of the manifest's cost tables, ``cost_sha256`` (``ddi_tf.deploy.export`` records it with this function).

    Covers what a budget adds up and compares against: every piece option's MACs and energy (with the piece
    order, kinds, option names and identity flags), the reserves, full costs and the cheapest answer. Canonical
    JSON (sorted keys, every number as a float), so any JSON writer that keeps the numbers keeps the digest.
    """
    table = {
        "pieces": [[p["name"], p["kind"], [[o["name"], bool(o["identity"]), float(o["macs"]), float(o["energy_uj"])]
                                           for o in p["options"]]] for p in manifest["pieces"]],
        "reserves_macs": [float(v) for v in manifest.get("reserves_macs", [])],
        "reserves_energy_uj": [float(v) for v in manifest.get("reserves_energy_uj", [])],
        "full_macs": float(manifest.get("full_macs", 0.0)),
        "full_energy_uj": float(manifest.get("full_energy_uj", 0.0)),
        "cheapest_answer_macs": float(manifest.get("cheapest_answer_macs", 0.0)),
    }
    return hashlib.sha256(json.dumps(table, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_costs(manifest: dict, model_dir: str) -> None:
    """ModelError unless the manifest's costs are the ones its files and its own checksum say.

    Each non-identity option's MACs are recomputed from its ``.tflite`` graph (``ddi_runtime.graph``) and must
    equal the manifest's exactly (an identity option costs 0); the cost tables must match ``cost_sha256``. A
    manifest without ``cost_sha256`` (exported before it existed) loads with a ManifestWarning: its MACs are
    still checked against the graphs, its energy entries only against nothing.
    """
    path = os.path.join(model_dir, "manifest.json")
    for p in manifest["pieces"]:
        for o in p["options"]:
            macs = o.get("macs")
            if isinstance(macs, bool) or not isinstance(macs, (int, float)) or not 0 <= macs < math.inf:
                raise ModelError(f"{path}: {p['name']}/{o['name']} has MACs {macs!r}, not a cost")
            if o["identity"]:
                got = 0
            else:
                try:
                    got = file_macs(os.path.join(model_dir, o["file"]))
                except GraphError as e:
                    raise ModelError(f"{o['file']} is not a loadable .tflite model: {e}") from e
            if got != macs:
                raise ModelError(f"{path}: {p['name']}/{o['name']} is listed at {macs:g} MACs but its graph "
                                 f"({o.get('file') or 'identity'}) computes {got} MACs: the manifest's costs were "
                                 "edited or belong to another export; re-export (python -m ddi_tf.export)")
    want = manifest.get("cost_sha256")
    if want is None:
        warnings.warn(f"{path} has no cost_sha256 (exported by an older ddi_tf): its MACs are checked against the "
                      "piece graphs, its energy costs and reserves are not; re-export to protect them",
                      ManifestWarning, stacklevel=3)
        return
    try:
        got = cost_digest(manifest)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{path}: malformed cost tables ({type(e).__name__}: {e})") from e
    if got != want:
        raise ModelError(f"{path}: the cost tables (MACs, energy, reserves) do not match their checksum "
                         "cost_sha256: the manifest was edited; re-export (python -m ddi_tf.export)")


def load_manifest(model_dir: str, verify: bool = True) -> dict:
    """Reads and validates ``model_dir/manifest.json``: version, files, their checksums, and (``verify``) the
    costs (recomputed MACs and ``cost_sha256``, see ``check_costs``)."""
    path = os.path.join(model_dir, "manifest.json")
    if not os.path.exists(path):
        raise ModelError(f"{model_dir} is not a ddi_tf export: no manifest.json (export with python -m ddi_tf.export)")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise ModelError(f"{path} is not valid JSON: {e}") from e
    version = manifest.get("version") if isinstance(manifest, dict) else None
    if version != MANIFEST_VERSION:
        raise ModelError(f"{path} has manifest version {version!r}; this runtime reads version {MANIFEST_VERSION}. "
                         "Re-export the model with a matching ddi_tf, or install the matching ddi_runtime.")
    if verify:
        for p in manifest["pieces"]:
            for o in p["options"]:
                if o["identity"]:
                    continue
                f = os.path.join(model_dir, o["file"])
                if not os.path.exists(f):
                    raise ModelError(f"{model_dir}: piece file {o['file']} is missing")
                if file_sha256(f) != o["sha256"]:
                    raise ModelError(f"{model_dir}: checksum mismatch for {o['file']} (corrupt or replaced file)")
        check_costs(manifest, model_dir)
    return manifest
