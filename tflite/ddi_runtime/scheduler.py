"""Loads a ddi_tf export and runs samples piece by piece under a hard per-sample budget.

The budget rule (the same as ddi_tf's Keras policy and the C core in ``micro/``): before each piece, the
sample halts when the piece's cheapest option plus the cheapest way on to the next exit (the manifest's
reserve) no longer fits in what remains of its budget, and answers from the latest exit it reached; for a
gated block the scheduler runs the gate's choice (the argmax of its int8 logits, the widest option on a tie),
or the widest cheaper option that fits. An exit answers
early when its max softmax reaches its threshold. A budget below the cheapest way to the first exit is an
error before any sample runs; so is a budget that is NaN, zero or negative (``inf`` means no budget).

Each sample runs through the C loop (``ddi_runtime.cloop``: the same rule, from ``micro/ddi_sched.c``) where
the optional extension was built, else through the Python loop here (``Scheduler.run_python``, the reference);
``Scheduler.loop`` says which.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np

from ddi_runtime import cloop
from ddi_runtime.interpreters import choose_backend, make_interpreter, piece_io
from ddi_runtime.latency import load_latency_table
from ddi_runtime.manifest import ModelError, load_manifest

BUDGET_KINDS = {"macs": "macs", "uj": "energy_uj", "ms": "latency_ms"}


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


def _checked_image(image_uint8: np.ndarray, budget: float, kind: str) -> np.ndarray:
    """The image as an array, after the per-sample checks: BudgetError for a NaN, zero or negative budget,
    ValueError for anything but a (32, 32, 3) uint8 image."""
    if not budget > 0.0:  # (NaN too: it compares false with every cost and would mean no budget at all)
        check_budget_value(budget, kind)
    image_uint8 = np.asarray(image_uint8)
    if image_uint8.shape != (32, 32, 3) or image_uint8.dtype != np.uint8:
        raise ValueError(f"expected a (32, 32, 3) uint8 image, got {image_uint8.shape} {image_uint8.dtype}")
    return image_uint8


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


class Scheduler:
    """The stage-wise DDI scheduler over one export directory.

    Args:
      model_dir: the export directory.
      interpreter: ``auto``, ``litert``, ``tflite_runtime`` or ``tensorflow``.
      threads: CPU threads per interpreter.
      delegate: ``default``, ``none`` (builtin kernels, no XNNPACK: the parity reference) or ``edgetpu``.
      latency_table: latency.json for millisecond budgets (default: ``model_dir/latency.json`` if present).
      latency_margin: planned latency = measured x (1 + margin).
      loop: the per-sample loop: ``auto`` (the C loop where the extension was built and the interpreters allow it,
        else the Python loop, with a one-line notice), ``c`` (RuntimeSetupError when the C loop cannot run) or
        ``python``. Both give the same results; ``self.loop`` is ``"c"`` or ``"python"``, the one that runs.
    """

    def __init__(self, model_dir: str, interpreter: str = "auto", threads: int = 1, delegate: str = "default",
                 latency_table: str | None = None, latency_margin: float = 0.1, loop: str = "auto"):
        if loop not in cloop.LOOPS:
            raise cloop.CLoopUnavailableError(f"unknown loop {loop!r}; valid: {', '.join(cloop.LOOPS)}")
        self.loop_request = loop
        self.model_dir = model_dir
        self.manifest = load_manifest(model_dir)
        self.backend = choose_backend(interpreter)
        self.delegate = delegate
        self.interps = {}
        self.state_io: dict[int, tuple[int, int, int, int]] = {}  # rnn gates: id(interpreter) -> state indices
        grids = self.manifest.get("gate_state")
        self.initial_state = None if grids is None else tuple(
            np.full((1, int(grids["units"])), grids[k]["zero_point"], np.int8) for k in ("h", "c"))  # exactly 0
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
                try:
                    i, out, state = piece_io(interp)
                except ValueError as e:
                    raise ModelError(f"{o['file']}: {e}") from e
                self.interps[(p["name"], o["name"])] = (interp, i, out)
                if state is not None:
                    self.state_io[id(interp)] = state
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
        self._cloop, self.loop = cloop.attach(self.manifest, interps, self.delegate, self.num_exits, self.loop_request)

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
        """The least budget with which the cheapest path reaches the first exit: the maximum over the pieces up to
        it of ``(spent + min(costs)) + reserve``, the halting rule's own sums (with fractional costs they differ in
        the last bit; ``ddi_tf.core.costs.CostTable.cheapest_answer`` and the C core compute it the same way)."""
        costs, reserves = self.costs(kind)
        spent, least = 0.0, 0.0
        for p, c, reserve in zip(self.manifest["pieces"], costs, reserves, strict=True):
            least = max(least, spent + min(c) + reserve)
            spent += min(c)
            if p["kind"] == "exit":
                return least
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
        return cloop.exit_confidence(logits, q["scale"], q["zero_point"])

    def run(self, image_uint8: np.ndarray, budget: float = math.inf, kind: str = "macs",
            thresholds: list[float] | float | None = None, plan: tuple | None = None,
            defer_exits: bool = False) -> Result:
        """Classifies one (32, 32, 3) uint8 image within ``budget``: ``run_python`` (its arguments and rules),
        through the C loop when ``self.loop == "c"`` (the same results, the same errors)."""
        if self._cloop is not None:
            image = _checked_image(image_uint8, budget, kind)
            costs, reserves = plan or self.costs(kind)
            out = self._cloop.run(image, budget, costs, reserves, thresholds, defer_exits)
            if out is not None:
                return Result(*out)
        return self.run_python(image_uint8, budget, kind, thresholds, plan, defer_exits)

    def run_python(self, image_uint8: np.ndarray, budget: float = math.inf, kind: str = "macs",
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
        image_uint8 = _checked_image(image_uint8, budget, kind)
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
        state = self.initial_state  # rnn gates: the int8 LSTM state (h, c) carried from gate to gate
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
            if state is not None and kind_p == "gate":
                h_in, c_in, h_out, c_out = self.state_io[id(interp)]
                interp.set_tensor(h_in, state[0])
                interp.set_tensor(c_in, state[1])
                interp.invoke()
                state = (interp.get_tensor(h_out), interp.get_tensor(c_out))
            else:
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
                shape = next(d["shape"] for d in interp.get_input_details() if d["index"] == i)
                x = rng.integers(-128, 128, size=shape, dtype=np.int8)
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
