"""Inference policies over a data set's exit outputs, vectorised in numpy.

- Input-dependent: a sample answers at the first exit whose max-softmax confidence reaches that exit's
  threshold (the last reached exit always answers). Thresholds are calibrated on a validation split to a
  requested mean cost, never on the test split.
- Resource-dependent: a hard per-sample budget, enforced inside the model by ``BudgetGuard`` layers
  (``build_model(..., budget_input=True)``): a sample stops before a piece that would leave no affordable
  way to the next exit and answers from the latest exit reached.
- DDI: both together (the thresholds applied to the exits a budgeted sample reached).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ddi_tf.core import names


@dataclasses.dataclass
class ExitOutputs:
    """Per-sample, per-exit arrays (N samples, E exits).

    Args:
      probs_max: max softmax probability at each exit.
      pred: argmax class at each exit.
      cost: executed cost up to and including each exit.
      reached: whether the sample reached each exit (within its budget).
      labels: (N,) true labels.
      decisions: ``block{b}_decision`` one-hots (N, G+1) of a gated model, when recorded.
      extra_costs: the same executed cost up to each exit in other units, {unit: (N, E)} (e.g. energy and
        latency from ``ddi_tf.evaluation.evaluate.exit_costs``); ``evaluate`` reports their means as ``mean_<unit>``.
    """

    probs_max: np.ndarray
    pred: np.ndarray
    cost: np.ndarray
    reached: np.ndarray
    labels: np.ndarray
    decisions: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    extra_costs: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def num_exits(self) -> int:
        """E."""
        return self.pred.shape[1]

    @classmethod
    def from_model_outputs(cls, out: dict[str, np.ndarray], labels: np.ndarray) -> ExitOutputs:
        """Builds the arrays from a ``build_model`` output dict (numpy, concatenated over the data set)."""
        e = names.exit_count(out)
        logits = np.stack([out[names.exit_logits(j)] for j in range(e)], axis=1).astype(np.float64)
        z = logits - logits.max(axis=-1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
        cost = np.stack([out[names.exit_cost(j)] for j in range(e)], axis=1).astype(np.float64)
        reached = np.stack([out[names.exit(j, "reached")] for j in range(e)], axis=1) > 0.5
        if "total_cost" in out:
            # deferred exits (budget-only policies): the last exit a sample reached answers it, and it is charged
            # what the sample spent in all (a kept exit is charged only if it answers)
            rows = np.flatnonzero(reached.any(axis=1))
            last = e - 1 - reached[rows, ::-1].argmax(axis=1)
            cost[rows, last] = np.asarray(out["total_cost"], np.float64)[rows]
        return cls(probs_max=p.max(axis=-1), pred=logits.argmax(axis=-1), cost=cost, reached=reached,
                   labels=np.asarray(labels),
                   decisions={k: out[k] for k in names.decision_keys(out)})


def check_budget(budget: float) -> float:
    """``budget`` as a float if it is one: positive, or ``inf`` for no budget; else ValueError.

    A NaN budget compares false with every cost and would run as no budget at all; zero, negative and -inf
    budgets can never be met.
    """
    value = float(budget)
    if not value > 0.0:
        raise ValueError(f"budget {budget!r} is not a budget: it must be positive (inf: no budget)")
    return value


def choose_exit(outputs: ExitOutputs, thresholds: np.ndarray | list[float] | float) -> np.ndarray:
    """Index of the answering exit per sample: the first reached exit with confidence >= its threshold,
    else the last reached exit; -1 when no exit was reached."""
    n, e = outputs.pred.shape
    t = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (e,))
    confident = outputs.reached & (outputs.probs_max >= t[None, :])
    confident[:, -1] |= outputs.reached[:, -1]
    first_conf = np.where(confident.any(axis=1), confident.argmax(axis=1), -1)
    last_reached = np.where(outputs.reached.any(axis=1), e - 1 - outputs.reached[:, ::-1].argmax(axis=1), -1)
    return np.where(first_conf >= 0, first_conf, last_reached)


def evaluate(outputs: ExitOutputs, thresholds: np.ndarray | list[float] | float = 1.0 + 1e-9,
             budget: float | None = None) -> dict:
    """Accuracy and cost of the policy that answers at ``choose_exit``.

    A confidence is at most 1, so the default threshold never exits early: a sample answers from the last
    exit it reached. Returns ``accuracy``, ``mean_cost``, ``max_cost``, ``over_budget``, ``unanswered``
    and ``exit_histogram`` (fraction of samples answering at each exit). ``budget``: None or ``inf`` for none;
    NaN, zero or negative is a ValueError.
    """
    if budget is not None:
        check_budget(budget)
    idx = choose_exit(outputs, thresholds)
    rows = np.arange(len(idx))
    answered = idx >= 0
    safe = np.maximum(idx, 0)
    correct = (outputs.pred[rows, safe] == outputs.labels) & answered
    cost = np.where(answered, outputs.cost[rows, safe], 0.0)
    hist = np.bincount(safe[answered], minlength=outputs.num_exits) / max(len(idx), 1)
    extra = {f"mean_{unit}": float(np.where(answered, c[rows, safe], 0.0).mean()) if len(idx) else 0.0
             for unit, c in outputs.extra_costs.items()}
    return {
        **extra,
        "accuracy": float(correct.mean()) if len(idx) else 0.0,
        "mean_cost": float(cost.mean()) if len(idx) else 0.0,
        "max_cost": float(cost.max()) if len(idx) else 0.0,
        "over_budget": int((cost > budget).sum()) if budget is not None else 0,
        "unanswered": int((~answered).sum()),
        "exit_histogram": [float(h) for h in hist],
    }


def calibrate_threshold(outputs: ExitOutputs, target_mean_cost: float, iters: int = 40) -> float:
    """The largest shared threshold whose mean cost stays within ``target_mean_cost``.

    Mean cost grows with the threshold (more samples continue to later exits), so a bisection on
    [0, 1 + eps] finds it. When even threshold 0 (everyone at the first reached exit) costs more than the
    target, 0 is returned; when no early exit at all fits, the no-early-exit threshold is returned.
    """
    never = 1.0 + 1e-9
    if evaluate(outputs, never)["mean_cost"] <= target_mean_cost:
        return never
    lo, hi = 0.0, never
    if evaluate(outputs, lo)["mean_cost"] > target_mean_cost:
        return lo
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if evaluate(outputs, mid)["mean_cost"] <= target_mean_cost:
            lo = mid
        else:
            hi = mid
    return lo


def simulate_budget(piece_costs: list[list[float]], kinds: list[str], reserves: list[float], chosen: list[int],
                    budget: float, defer_exits: bool = False) -> tuple[list[int], float, int]:
    """The reservation rule for one sample, in plain Python (reference for tests and runtimes).

    Args:
      piece_costs: option costs of each piece in order (a block's cheapest option first).
      kinds: piece kinds.
      reserves: ``CostTable.reserves()``.
      chosen: for each piece the option it would run without a budget (gate choice; 0 for single-option
        pieces).
      budget: the sample's budget (positive; ``inf``: no budget; NaN, zero or negative: ValueError).
      defer_exits: the board runtime's deferred exits (``Scheduler.run(defer_exits=True)``, no thresholds): an
        exit whose next exit is cheaply affordable is kept instead of run (its cost reserved), answers only if
        the sample stops before the next exit, and while it is kept a block the budget would cut down to its
        skip option (its gate chose more) stops the sample.

    Returns:
      (option run per piece, -1 where halted and -2 for an exit kept but not run; cost spent, including a kept
      exit that answered; number of exits reached, kept ones included).
    """
    check_budget(budget)
    spent, halted, ran, exits = 0.0, False, [], 0
    held, kept = 0.0, False
    n = len(piece_costs)
    for i, (costs, kind, reserve, want) in enumerate(zip(piece_costs, kinds, reserves, chosen, strict=True)):
        need = reserve if kind == "exit" or held <= reserve else held
        if not halted and spent + min(costs) + need > budget:
            halted = True
        if halted:
            ran.append(-1)
            continue
        if kind == "exit":
            held, kept = 0.0, False  # superseded
            exits += 1
            if defer_exits and i + 1 < n and spent + (min(piece_costs[i + 1]) + reserves[i + 1]) <= budget:
                held, kept = costs[0], True
                ran.append(-2)
                continue
        opt = want
        while opt > 0 and spent + costs[opt] + need > budget:
            opt -= 1
        if kept and opt == 0 < want:
            halted = True
            ran.append(-1)
            continue
        spent += costs[opt]
        ran.append(opt)
    if kept:  # stopped before the next exit: the kept exit answers
        spent += held
    return ran, spent, exits
