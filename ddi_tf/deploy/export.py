"""Export a trained DDI model as full-integer int8 TFLite pieces the on-device scheduler decides on.

    python -m ddi_tf.export --workdir=W --out=D [--calibration_images=256]

Every piece of ``ddi_tf.core.arch`` becomes its own int8 model, so that a skipped block or a narrower width
really does not execute on the device:

- ``stem``: uint8 image (as int8 = pixel - 128) -> stage-0 features (input normalisation inside);
- ``gate{b}``: features -> option logits (int8; the decision is their argmax); rnn gates (SkipNet's shared
  LSTM) also take the previous gate's int8 state ``h``, ``c`` and return the new one (manifest ``gate_state``);
- ``block{b}`` option ``w{k}``: features -> features, with the first k of G channel groups only (conv1's
  output channels and conv2's input channels sliced, batch norms folded); option ``skip`` of a projection
  block runs the 1x1 projection; ``skip`` of an identity block is no piece at all (the tensor passes on);
- ``exit{j}``: features -> logits.

Feature maps pass between pieces as int8 without requantisation: every feature tensor of a resolution
stage shares one fixed range (calibrated on real training images over the full, learned and random-option
paths), imposed on both sides of every boundary with fake-quant nodes, so producer and consumer have the
same scale and zero point; an identity skip is then exactly a no-op.

Writes into D (atomically, through a temporary directory): ``ddi.tflite`` (one signature per piece
option, for LiteRT / tflite-runtime), ``stages/<piece>__<option>.tflite`` (one model per piece option, for
TensorFlow Lite Micro, which runs only subgraph 0) and ``manifest.json`` (everything a runtime needs without
TensorFlow; see ``MANIFEST_VERSION``), with ``cost_sha256``, a checksum over its cost tables that the runtimes
check, besides recomputing every option's MACs from its ``.tflite`` graph.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import numpy as np
import tf_keras as keras
from absl import logging

from ddi_runtime import cost_digest, file_sha256
from ddi_runtime.manifest import MANIFEST_VERSION
from ddi_tf.core import names
from ddi_tf.core.arch import Piece, build_pieces, full_macs
from ddi_tf.core.config import ModelConfig
from ddi_tf.core.costs import cost_table
from ddi_tf.deploy.calibrate import calibrate_edges, calibrate_gate_state, representative_inputs
from ddi_tf.deploy.convert import EDGETPU_OPS, convert_multi_signature, convert_piece, tensor_report
from ddi_tf.deploy.pieces import STATE_IO, ExportError, PieceModel, build_piece_models
from ddi_tf.quant import qat
from ddi_tf.quant.int8 import int8_params
from ddi_tf.training import workdir as workdir_lib

INPUT_SCALE, INPUT_ZERO_POINT = 1.0, -128  # int8 image = uint8 pixel - 128, exactly


"""Operations the Coral Edge TPU compiler maps to the TPU (coral.ai, "TensorFlow models on the Edge TPU",
supported operations table); anything else falls back to the CPU."""


def load_trained(workdir: str) -> tuple[ModelConfig, dict, keras.Model]:
    """The model config, the training config dict and the float model restored from ``workdir``."""
    try:
        return workdir_lib.load_trained(workdir)
    except workdir_lib.RunDirError as e:
        raise ExportError(str(e)) from e


def export(workdir: str, out_dir: str, images: np.ndarray, mean, std, class_names: list[str],
           thresholds: dict | None = None, gate_pool: str = "mean") -> dict:
    """Exports the trained model of ``workdir`` into ``out_dir`` (replaced atomically). Returns the manifest.

    Args:
      workdir: a training work directory (config.json + checkpoints/).
      out_dir: the export directory.
      images: uint8 (N, 32, 32, 3) calibration images from the training split (representative data).
      mean, std: input normalisation.
      class_names: class names for the manifest.
      thresholds: calibrated confidence thresholds to record (from the training report).
      gate_pool: the gates' global pool (``ddi_tf.deploy.pieces.GATE_POOLS``): ``mean`` (MEAN, fast on LiteRT and
        XNNPACK) or ``average`` (AVERAGE_POOL_2D over the whole map, ~20x faster than MEAN on TensorFlow Lite
        Micro's kernels). Recorded in the manifest as ``gate_pool``; costs are the same (pooling counts no MACs).
    """
    t0 = time.time()
    cfg, _, model = load_trained(workdir)
    qat_model = qat.restore_qat(workdir, cfg, model)  # QAT: its weights (now in model), its ranges everywhere
    inner = None if qat_model is None else qat.activation_ranges(qat_model)
    ranges, edges = calibrate_edges(cfg, model, images, mean, std)
    if inner is not None:
        ranges.update({edge: inner[members[0]] for edge, members in qat.edge_groups(cfg).items()})
    state = None
    if cfg.gate_type == "rnn":
        state_ranges, state = calibrate_gate_state(cfg, model, images, mean, std)
        ranges.update(state_ranges)
    pms = build_piece_models(cfg, model, ranges, mean, std, inner, gate_pool=gate_pool)
    pieces = build_pieces(cfg)
    macs = cost_table(pieces, "macs")
    energy = cost_table(pieces, "energy", "int8")
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".export_tmp_")
    try:
        os.makedirs(os.path.join(tmp, "stages"))
        reports: dict[str, dict] = {}
        reps = {}
        for pm in pms:
            if pm.model is None:
                continue
            rep = representative_inputs(pm, images, edges, ranges, state)
            reps[pm.key] = rep
            content = convert_piece(pm, rep)
            with open(os.path.join(tmp, "stages", pm.key + ".tflite"), "wb") as f:
                f.write(content)
            reports[pm.key] = tensor_report(content)
            logging.info("converted %s: %d bytes, ops %s", pm.key, len(content), reports[pm.key]["ops"])
        multi = convert_multi_signature([pm for pm in pms if pm.model is not None], reps)
        with open(os.path.join(tmp, "ddi.tflite"), "wb") as f:
            f.write(multi)
        manifest = _manifest(cfg, pieces, pms, reports, ranges, macs, energy, mean, std, class_names, thresholds, tmp)
        manifest["quantization"] = "qat" if inner is not None else "ptq"
        manifest["gate_pool"] = gate_pool
        problems = check_manifest_quantization(manifest)
        if problems:
            raise ExportError("export check failed:\n  " + "\n  ".join(problems))
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=2)
        if os.path.exists(out_dir):
            old = out_dir.rstrip("/") + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logging.info("exported %d piece options to %s in %.1f s", len(reports), out_dir, time.time() - t0)
    return manifest


def _manifest(cfg, pieces: list[Piece], pms: list[PieceModel], reports: dict, ranges: dict, macs, energy, mean, std,
              class_names, thresholds, root: str) -> dict:
    by_key = {pm.key: pm for pm in pms}
    entries = []
    for i, p in enumerate(pieces):
        options = []
        for k, o in enumerate(p.options):
            key = names.option_key(p.name, o.name)
            pm = by_key[key]
            entry = {"name": o.name, "macs": macs.costs[i][k], "energy_uj": energy.costs[i][k],
                     "identity": pm.model is None, "input_edge": pm.in_edge, "output_edge": pm.out_edge}
            if pm.model is not None:
                path = os.path.join(root, "stages", key + ".tflite")
                entry.update({"signature": key, "file": f"stages/{key}.tflite", "sha256": file_sha256(path),
                              "bytes": os.path.getsize(path), "input": reports[key]["input"],
                              "output": reports[key]["output"], "ops": reports[key]["ops"],
                              "float_tensors": reports[key]["float_tensors"],
                              "bias_scale_problems": reports[key]["bias_scale_problems"],
                              "edgetpu_unsupported_ops": sorted(set(reports[key]["ops"]) - EDGETPU_OPS)})
                if "state" in reports[key]:
                    entry["state"] = reports[key]["state"]
            options.append(entry)
        entries.append({"name": p.name, "kind": p.kind, "index": p.index, "options": options})
    edges, grids = {}, {}
    for name, (lo, hi) in ranges.items():
        scale, zp = int8_params(lo, hi)
        (grids if name in STATE_GRIDS.values() else edges)[name] = {"lo": lo, "hi": hi, "scale": scale,
                                                                    "zero_point": zp}
    manifest = {
        "version": MANIFEST_VERSION, "format": "ddi_tf export", "model": cfg.to_dict(),
        "class_names": list(class_names), "num_classes": cfg.num_classes,
        "input": {"shape": [1, 32, 32, 3], "dtype": "int8", "from_uint8": "int8 = uint8 - 128",
                  "scale": INPUT_SCALE, "zero_point": INPUT_ZERO_POINT, "mean": list(map(float, mean)),
                  "std": list(map(float, std))},
        "edges": edges, "full_macs": float(full_macs(pieces)), "full_energy_uj": energy.full_cost(),
        "cheapest_answer_macs": macs.cheapest_answer(), "exit_positions": list(cfg.exit_positions),
        "reserves_macs": macs.reserves(), "reserves_energy_uj": energy.reserves(),
        "thresholds": thresholds or {}, "pieces": entries,
        "multi_signature": {"file": "ddi.tflite", "sha256": file_sha256(os.path.join(root, "ddi.tflite"))},
    }
    if grids:  # rnn gates: the LSTM state's size and grids (every gate's state inputs and outputs are on them)
        manifest["gate_state"] = {"units": cfg.gate_hidden, **{k: grids[g] for k, g in STATE_GRIDS.items()}}
    manifest["cost_sha256"] = cost_digest(manifest)
    return manifest


STATE_GRIDS = {"h": "gate_h", "c": "gate_c"}
"""The manifest's ``gate_state`` entries and the ranges they come from (``ddi_tf.deploy.pieces.STATE_IO``)."""


def _state_problems(manifest: dict, key: str, option: dict) -> list[str]:
    """An rnn gate option's state tensors off the manifest's ``gate_state`` grids (or an option without them)."""
    grids = manifest.get("gate_state")
    state = option.get("state")
    if grids is None and state is None:
        return []
    if grids is None or state is None:
        return [f"{key}: state tensors {sorted(state or {})} but manifest gate_state {grids is not None}"]
    problems = []
    want_names = [*STATE_IO["inputs"], *STATE_IO["outputs"]]
    if sorted(state) != sorted(want_names):
        return [f"{key}: state tensors {sorted(state)}, expected {want_names}"]
    for name, t in state.items():
        grid = grids[name[0]]  # h, h_out -> h; c, c_out -> c
        if t["dtype"] != "int8" or t["shape"] != [1, grids["units"]]:
            problems.append(f"{key}: state {name} is {t['dtype']} {t['shape']}, not int8 [1, {grids['units']}]")
        if abs(t["scale"] - grid["scale"]) > 1e-6 * grid["scale"] or t["zero_point"] != grid["zero_point"]:
            problems.append(f"{key}: state {name} quantisation ({t['scale']:.6g}, {t['zero_point']}) != gate_state "
                            f"{name[0]} ({grid['scale']:.6g}, {grid['zero_point']})")
    return problems


def check_manifest_quantization(manifest: dict) -> list[str]:
    """Problems with the exported pieces: float tensors, non-int8 IO, boundary scale/zero-point mismatches."""
    problems = []
    edges = manifest["edges"]
    for p in manifest["pieces"]:
        for o in p["options"]:
            if o["identity"]:
                if o["input_edge"] != o["output_edge"]:
                    problems.append(f"{p['name']}/{o['name']}: identity across edges "
                                    f"{o['input_edge']}->{o['output_edge']}")
                continue
            key = f"{p['name']}/{o['name']}"
            if o["float_tensors"]:
                problems.append(f"{key}: float tensors {o['float_tensors'][:5]}")
            problems += [f"{key}: {p}" for p in o.get("bias_scale_problems", [])]
            if p["kind"] == "gate":
                problems += _state_problems(manifest, key, o)
            for side, edge in (("input", o["input_edge"]), ("output", o["output_edge"])):
                if o[side]["dtype"] != "int8":
                    problems.append(f"{key}: {side} is {o[side]['dtype']}, not int8")
                if edge is None:
                    continue
                want = edges[edge]
                same_scale = abs(o[side]["scale"] - want["scale"]) <= 1e-6 * want["scale"]
                if not same_scale or o[side]["zero_point"] != want["zero_point"]:
                    problems.append(f"{key}: {side} quantisation ({o[side]['scale']:.6g}, {o[side]['zero_point']}) != "
                                    f"edge {edge} ({want['scale']:.6g}, {want['zero_point']})")
    return problems


def export_summary(manifest: dict, out_dir: str) -> dict:
    """The report the export prints: counts, sizes, checks, Edge TPU readiness."""
    options = [o for p in manifest["pieces"] for o in p["options"] if not o["identity"]]
    unsupported = sorted({op for o in options for op in o["edgetpu_unsupported_ops"]})
    return {
        "out": out_dir, "piece_options": len(options),
        "identity_skips": sum(1 for p in manifest["pieces"] for o in p["options"] if o["identity"]),
        "full_macs": manifest["full_macs"], "flash_bytes": sum(o["bytes"] for o in options),
        "float_tensors": sum(len(o["float_tensors"]) for o in options),
        "boundary_quantization_problems": len(check_manifest_quantization(manifest)),
        "ops": sorted({op for o in options for op in o["ops"]}),
        "edgetpu_ready": not unsupported, "edgetpu_unsupported_ops": unsupported,
    }
