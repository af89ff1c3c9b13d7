"""Loads a ddi_tf export and runs samples piece by piece under a hard per-sample budget.

The budget rule (the same as ddi_tf's Keras policy and the C core in ``micro/``): before each piece, the
sample halts when the piece's cheapest option plus the cheapest way on to the next exit (the manifest's
reserve) no longer fits in what remains of its budget, and answers from the latest exit it reached; for a
gated block the scheduler runs the gate's choice (the argmax of its int8 logits, the widest option on a tie),
or the widest cheaper option that fits. An exit answers
early when its max softmax reaches its threshold. A budget below the cheapest way to the first exit is an
error before any sample runs; so is a budget that is NaN, zero or negative (``inf`` means no budget).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
import warnings

import numpy as np

from ddi_runtime.graph import GraphError, file_macs
from ddi_runtime.interpreters import choose_backend, make_interpreter

MANIFEST_VERSION = 1
"""The manifest format: this package owns it (``ddi_tf.deploy.export`` writes this version, ``micro/gen.py`` reads it).
Version 1 manifests written since the cost checksum carry ``cost_sha256``; older ones are read with a warning."""
BUDGET_KINDS = {"macs": "macs", "uj": "energy_uj", "ms": "latency_ms"}


class ModelError(ValueError):
    """An export directory that cannot be used (missing, corrupt, wrong version, checksum mismatch)."""


class ManifestWarning(UserWarning):
    """A manifest that loads but is less protected than a current one (no ``cost_sha256``: an older export)."""


class BudgetError(ValueError):
    """A budget no sample can meet, or a value that is no budget (NaN, zero, negative)."""


def check_budget_value(budget: float, kind: str = "macs") -> float:
    """``budget`` as a float if it is one: positive, or ``inf`` for "no budget"; else BudgetError.

    NaN compares false with every cost, so a NaN budget would silently run as no budget at all; zero, negative
    and -inf budgets can never be met.
    """
    try:
        value = float(budget)
    except (TypeError, ValueError) as e:
        raise BudgetError(f"budget {budget!r} {kind} is not a number") from e
    if not value > 0.0:
        raise BudgetError(f"budget {budget!r} {kind} is not a budget: it must be positive (inf: no budget)")
    return value


@dataclasses.dataclass(slots=True)
class Result:
    """What one sample did."""

    pred: int
    exit: int
    cost: float
    macs: float
    decisions: list[int]
    latency_ms: float
    invoke_ms: float
    exit_logits: list[np.ndarray]
    halted: bool


def gate_choice(logits: np.ndarray) -> int:
    """A gate's option from its int8 logits: the argmax, and on a tie the widest option (the last maximum).

    int8 gate logits tie often (about a fifth of a trained ResNet-20 DDI model's decisions); the first maximum
    would resolve every tie to the cheapest option and bias the int8 path toward skipping. (Plain Python on the
    handful of logits: several times faster than numpy's argmax on arrays this small, and the per-sample loop
    calls it once per gate.)
    """
    values = np.asarray(logits).tolist()
    return len(values) - 1 - values[::-1].index(max(values))


def first_argmax(logits: np.ndarray) -> int:
    """``int(np.argmax(logits))`` for a short 1-D array, in plain Python (the per-sample loop's exit answers)."""
    values = logits.tolist()
    return values.index(max(values))


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


def load_latency_table(path: str, manifest: dict) -> dict[tuple[str, str], float]:
    """(piece, option) -> measured milliseconds, from ``profile``'s latency.json; every piece must be there."""
    if not os.path.exists(path):
        raise ModelError(f"latency table {path} does not exist: run `python -m ddi_runtime profile --model_dir=D`")
    with open(path) as f:
        table = json.load(f)["pieces"]
    out = {}
    for p in manifest["pieces"]:
        names = [o["name"] for o in p["options"]]
        if isinstance(table.get(p["name"]), dict) and set(table[p["name"]]) != set(names):
            raise ModelError(f"latency table {path} has options {sorted(table[p['name']])} for {p['name']}, the "
                             f"export has {names}: it was measured for another export; profile this one")
        for o in p["options"]:
            try:
                out[(p["name"], o["name"])] = float(table[p["name"]][o["name"]])
            except (KeyError, TypeError, ValueError) as e:
                raise ModelError(f"latency table {path} lacks {p['name']}/{o['name']}: {e}") from e
    return out


class Scheduler:
    """The stage-wise DDI scheduler over one export directory.

    Args:
      model_dir: the export directory.
      interpreter: ``auto``, ``litert``, ``tflite_runtime`` or ``tensorflow``.
      threads: CPU threads per interpreter.
      delegate: ``default``, ``none`` (builtin kernels, no XNNPACK: the parity reference) or ``edgetpu``.
      latency_table: latency.json for millisecond budgets (default: ``model_dir/latency.json`` if present).
      latency_margin: planned latency = measured x (1 + margin).
    """

    def __init__(self, model_dir: str, interpreter: str = "auto", threads: int = 1, delegate: str = "default",
                 latency_table: str | None = None, latency_margin: float = 0.1):
        self.model_dir = model_dir
        self.manifest = load_manifest(model_dir)
        self.backend = choose_backend(interpreter)
        self.delegate = delegate
        self.interps = {}
        for p in self.manifest["pieces"]:
            for o in p["options"]:
                if o["identity"]:
                    continue
                try:
                    interp = make_interpreter(self.backend, os.path.join(model_dir, o["file"]), threads, delegate)
                except (ValueError, RuntimeError) as e:
                    if "edgetpu" in str(e).lower() or "Edge TPU" in str(e):
                        raise
                    raise ModelError(f"{o['file']} is not a loadable .tflite model: {e}") from e
                self.interps[(p["name"], o["name"])] = (interp, interp.get_input_details()[0]["index"],
                                                        interp.get_output_details()[0]["index"])
        self.latency: dict[tuple[str, str], float] | None = None
        table = latency_table or os.path.join(model_dir, "latency.json")
        if latency_table or os.path.exists(table):
            self.latency = load_latency_table(table, self.manifest)
        self.latency_margin = latency_margin
        self.num_exits = sum(1 for p in self.manifest["pieces"] if p["kind"] == "exit")
        self.set_interpreters(self.interps)

    def set_interpreters(self, interps: dict) -> None:
        """Runs the pieces on these interpreters: {(piece, option): (interpreter, input index, output index)}.

        Also flattens the piece graph once, so that the per-sample loop does no dict lookups:
        (kind, name, first option, ((identity, (interpreter, input index, output index) | None, macs), ...)).
        """
        self.interps = interps
        self._steps = [(p["kind"], p["name"], p["options"][0],
                        tuple((bool(o["identity"]), interps.get((p["name"], o["name"])), float(o["macs"]))
                              for o in p["options"]))
                       for p in self.manifest["pieces"]]
        self._flat_for: tuple | None = None
        self._flat: list[tuple] = []

    def _flatten(self, costs: list[list[float]], reserves: list[float], defer_exits: bool) -> list[tuple]:
        """The per-sample loop's steps for one plan: (kind, first option, options, costs, reserve, ahead).

        An exit's "ahead" (only when deferring exits) is the cheapest way from after it to the next exit: the
        next piece's cheapest option plus that piece's reserve; nan for the last exit (never deferred) and for
        other pieces.
        """
        n = len(costs)
        out = []
        for i, (kind_p, _name, first, opts) in enumerate(self._steps):
            ahead = math.nan
            if defer_exits and kind_p == "exit" and i + 1 < n:
                ahead = min(costs[i + 1]) + reserves[i + 1]
            out.append((kind_p, first, opts, costs[i], reserves[i], ahead))
        return out

    # --- costs -------------------------------------------------------------------------------------------------
    def costs(self, kind: str) -> tuple[list[list[float]], list[float]]:
        """Per-piece option costs and reserves in a budget kind (``macs``, ``uj`` or ``ms``)."""
        if kind not in BUDGET_KINDS:
            raise BudgetError(f"unknown budget kind {kind!r}; valid: {sorted(BUDGET_KINDS)}")
        pieces = self.manifest["pieces"]
        if kind == "ms":
            if self.latency is None:
                raise BudgetError("a latency budget needs a latency table: run `python -m ddi_runtime profile "
                                  f"--model_dir={self.model_dir}` first (or pass --latency_table)")
            scale = 1.0 + self.latency_margin
            costs = [[self.latency[(p["name"], o["name"])] * scale for o in p["options"]] for p in pieces]
        else:
            key = BUDGET_KINDS[kind]
            costs = [[float(o[key]) for o in p["options"]] for p in pieces]
        reserves, from_next = [0.0] * len(pieces), 0.0
        for i in range(len(pieces) - 1, -1, -1):
            is_exit = pieces[i]["kind"] == "exit"
            reserves[i] = 0.0 if is_exit else from_next
            from_next = min(costs[i]) + (0.0 if is_exit else from_next)
        return costs, reserves

    def cheapest_answer(self, kind: str) -> float:
        """The least cost of any path to the first exit."""
        costs, _ = self.costs(kind)
        total = 0.0
        for p, c in zip(self.manifest["pieces"], costs, strict=True):
            total += min(c)
            if p["kind"] == "exit":
                return total
        raise ModelError("the export has no exit")

    def check_budget(self, kind: str, budget: float) -> None:
        """BudgetError when ``budget`` is NaN, not positive or below the cheapest way to an answer (``inf``: none)."""
        check_budget_value(budget, kind)
        cheapest = self.cheapest_answer(kind)
        if not budget >= cheapest:
            raise BudgetError(f"budget {budget:g} {kind} is below the cheapest way to an answer ({cheapest:g} {kind}: "
                              "stem, gates and every block skipped, up to the first exit)")

    # --- running -------------------------------------------------------------------------------------------------
    @staticmethod
    def _confidence(option: dict, logits: np.ndarray) -> float:
        q = option["output"]
        z = (logits.astype(np.float64) - q["zero_point"]) * q["scale"]
        e = np.exp(z - z.max())
        return float(e.max() / e.sum())

    def run(self, image_uint8: np.ndarray, budget: float = math.inf, kind: str = "macs",
            thresholds: list[float] | float | None = None, plan: tuple | None = None,
            defer_exits: bool = False) -> Result:
        """Classifies one (32, 32, 3) uint8 image within ``budget`` (in ``kind`` units; ``inf``: no budget).

        A NaN, zero or negative budget is a BudgetError (``check_budget`` also refuses one below the cheapest
        answer; call it once before a loop over samples).

        ``plan`` is ``self.costs(kind)``, passed in to avoid recomputing it per sample.

        ``defer_exits``: an exit that no threshold can stop at, and whose answer the next exit would supersede
        (the cheapest way on to the next exit is already affordable), is not run at once: its input is kept
        and it runs only if the sample stops before the next exit. While an exit is deferred, its cost stays
        reserved, and a block whose gate chose to run it but that the budget would cut down to its skip option
        stops the sample instead (it answers from the deferred exit; narrowing to a cheaper width is still
        allowed): reaching the next exit through skipped blocks answers worse than the earlier exit did
        (docs/RESULTS.md section 3). With a budget that does not bind, only the last exit runs. Off by default,
        so that decisions and costs match the Keras policy and the C core exactly, exit by exit.
        """
        if not budget > 0.0:  # (NaN too: it compares false with every cost and would mean no budget at all)
            check_budget_value(budget, kind)
        image_uint8 = np.asarray(image_uint8)
        if image_uint8.shape != (32, 32, 3) or image_uint8.dtype != np.uint8:
            raise ValueError(f"expected a (32, 32, 3) uint8 image, got {image_uint8.shape} {image_uint8.dtype}")
        costs, reserves = plan or self.costs(kind)
        n_exits = self.num_exits
        if self._flat_for is None or self._flat_for[0] is not costs or self._flat_for[1] != defer_exits:
            self._flat_for, self._flat = (costs, defer_exits), self._flatten(costs, reserves, defer_exits)
        th = [math.inf] * n_exits if thresholds is None else list(np.broadcast_to(thresholds, (n_exits,)))
        clock = time.perf_counter
        t0 = clock()
        invoke_s = 0.0
        x = (image_uint8 ^ np.uint8(128)).view(np.int8)[None]  # uint8 - 128 as int8: flip the top bit
        spent, macs, option, j, exit_j, halted = 0.0, 0.0, None, 0, -1, False
        decisions, exit_logits = [], []
        pending = None  # a deferred exit: (index, its runner, its input, cost, MACs)
        held = 0.0  # the deferred exit's cost, reserved while it is pending
        for kind_p, first, opts, c, reserve, ahead in self._flat:
            if kind_p == "block":
                k = len(c) - 1 if option is None else option
                need = reserve if held <= reserve else held
                chosen = k
                while k > 0 and spent + c[k] + need > budget:
                    k -= 1
                if spent + c[k] + need > budget or (k == 0 < chosen and pending is not None):
                    halted = True  # (k = 0 is a block's cheapest option; a deferred exit answers before a
                    break  # block the budget would skip: RESULTS section 3)
                identity, runner, option_macs = opts[k]
                if not identity:
                    interp, i, o = runner
                    ti = clock()
                    interp.set_tensor(i, x)
                    interp.invoke()
                    x = interp.get_tensor(o)
                    invoke_s += clock() - ti
                spent += c[k]
                macs += option_macs
                if option is not None:
                    decisions.append(k)
                option = None
                continue
            if spent + c[0] + (0.0 if kind_p == "exit" else reserve if held <= reserve else held) > budget:
                halted = True  # (an exit that runs supersedes the deferred one: it need not stay affordable)
                break
            if kind_p == "exit":
                pending, held = None, 0.0  # this exit supersedes a deferred one
                if th[j] > 1.0 and spent + ahead <= budget:  # (ahead: nan unless deferring)
                    pending, held = (j, opts[0], x, c[0]), c[0]
                    j += 1
                    continue
            interp, i, o = opts[0][1]
            ti = clock()
            interp.set_tensor(i, x)
            interp.invoke()
            y = interp.get_tensor(o)
            invoke_s += clock() - ti
            spent += c[0]
            macs += opts[0][2]
            if kind_p == "gate":
                option = gate_choice(y[0])
            elif kind_p == "exit":
                logits = y[0]
                exit_logits.append(logits)
                exit_j = j
                if th[j] <= 1.0 and self._confidence(first, logits) >= th[j]:
                    break  # (a confidence is at most 1: a threshold above it never stops, skip the softmax)
                j += 1
            else:
                x = y
        if pending is not None:  # stopped before the next exit: the deferred exit answers
            exit_j, (_identity, (interp, i, o), option_macs), x_exit, cost = pending
            ti = clock()
            interp.set_tensor(i, x_exit)
            interp.invoke()
            exit_logits.append(interp.get_tensor(o)[0])
            invoke_s += clock() - ti
            spent += cost
            macs += option_macs
        pred = first_argmax(exit_logits[-1]) if exit_logits else -1
        return Result(pred, exit_j, spent, macs, decisions, 1e3 * (clock() - t0), 1e3 * invoke_s,
                      exit_logits, halted)

    def profile(self, repeats: int = 50, seed: int = 0) -> dict:
        """Median latency (ms) of every piece option on this device, batch 1, random int8 inputs.

        Round robin: each repeat times every piece option once, so that a machine whose speed drifts (frequency
        scaling, other tenants) shifts all pieces alike and the table's ratios hold; 3 warm-up rounds first.
        """
        rng = np.random.default_rng(seed)
        jobs = []
        for p in self.manifest["pieces"]:
            for o in p["options"]:
                if o["identity"]:
                    continue
                interp, i, out = self.interps[(p["name"], o["name"])]
                x = rng.integers(-128, 128, size=interp.get_input_details()[0]["shape"], dtype=np.int8)
                jobs.append(((p["name"], o["name"]), interp, i, out, x, []))
        for r in range(repeats + 3):
            for _, interp, i, out, x, times in jobs:
                t0 = time.perf_counter()
                interp.set_tensor(i, x)
                interp.invoke()
                interp.get_tensor(out)
                if r >= 3:
                    times.append(time.perf_counter() - t0)
        measured = {key: float(1e3 * np.median(times)) for key, *_, times in jobs}
        pieces = {p["name"]: {o["name"]: 0.0 if o["identity"] else measured[(p["name"], o["name"])]
                              for o in p["options"]} for p in self.manifest["pieces"]}
        return {"unit": "ms", "interpreter": self.backend, "delegate": self.delegate, "repeats": repeats,
                "pieces": pieces}
