"""Evaluation of a trained DDI model: exits, anytime budgets, thresholds, and the DDI policy; report + plot.

Budgets and mean-cost targets are MACs (the cost table of the model's pieces), given as fractions of the full
cost (every gate, every block at full width, every exit head). Every policy row also reports the same runs'
mean energy (``mean_uj``, the documented energy model) and, with a measured latency table, mean latency
(``mean_ms``), from the options each sample's blocks ran.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from ddi_runtime import file_sha256
from ddi_tf.core import names
from ddi_tf.core.arch import backbone_macs, build_pieces
from ddi_tf.core.config import ModelConfig
from ddi_tf.core.costs import CostTable, cost_table
from ddi_tf.data import make_eval_dataset
from ddi_tf.evaluation import policies
from ddi_tf.model.build import build_model, set_gate_mode
from ddi_tf.model.weights import copy_weights


def exit_costs(table: CostTable, decisions: dict[str, np.ndarray], n: int) -> np.ndarray:
    """(N, E): each sample's executed cost up to and including each exit, in ``table``'s unit.

    Blocks count the option the sample ran (``block{b}_decision`` one-hots, recorded after budget downgrades;
    all zero where the sample had halted); blocks of an ungated model run full width. With the MACs table this
    equals the model's own ``exit{j}_cost`` outputs wherever the exit was reached.
    """
    total, cols = np.zeros(n), []
    for name, kind, costs in zip(table.names, table.kinds, table.costs, strict=True):
        c = np.asarray(costs, dtype=np.float64)
        if kind == "block":
            d = decisions.get(names.decision(names.index_of(name)))
            total = total + (np.asarray(d, dtype=np.float64) @ c if d is not None else c[-1])
        else:
            total = total + c[-1]
        if kind == "exit":
            cols.append(total.copy())
    return np.stack(cols, axis=1)


class Predictor:
    """Runs a model over arrays of images, optionally with a per-sample budget, in one traced function per
    gate mode; ``extra_tables`` add the executed cost in other units (``ExitOutputs.extra_costs``)."""

    def __init__(self, model: keras.Model, batch_size: int, mean, std,
                 extra_tables: dict[str, CostTable] | None = None):
        self.model = model
        self.batch_size = batch_size
        self.mean, self.std = mean, std
        self.extra_tables = extra_tables or {}
        self._fns: dict[str, tf.types.experimental.GenericFunction] = {}
        self.budget_input = isinstance(model.input, dict)

    def __call__(self, x: np.ndarray, y: np.ndarray, mode: str = "learned", budget: float | None = None
                 ) -> policies.ExitOutputs:
        set_gate_mode(self.model, mode)
        if mode not in self._fns:
            model = self.model
            kept = {k for k in model.output if (p := names.parse(k)) and p[0] == "exit"}
            kept |= {*names.decision_keys(model.output), "total_cost"}

            @tf.function
            def fn(images, budgets):
                inputs = {"image": images, "budget": budgets} if self.budget_input else images
                out = model(inputs, training=False)
                return {k: v for k, v in out.items() if k in kept}

            self._fns[mode] = fn
        fn = self._fns[mode]
        outs: dict[str, list[np.ndarray]] = {}
        b = np.inf if budget is None else float(budget)
        for images, _ in make_eval_dataset(x, y, self.batch_size, self.mean, self.std):
            budgets = tf.fill(tf.shape(images)[:1], tf.constant(b, tf.float64))
            for k, v in fn(images, budgets).items():
                outs.setdefault(k, []).append(v.numpy())
        cat = {k: np.concatenate(v) for k, v in outs.items()}
        res = policies.ExitOutputs.from_model_outputs(cat, y)
        res.extra_costs = {unit: exit_costs(t, res.decisions, len(y)) for unit, t in self.extra_tables.items()}
        return res


LEARNED_COST_BINS = 100
"""Bins of the per-image learned-path cost histogram in ``report["learned_cost"]``, evenly over [0, 1] of full."""


def learned_cost(learned: policies.ExitOutputs, full_path: policies.ExitOutputs, full: float) -> dict:
    """How much the learned gates' cost depends on the input: each test image's executed cost on the learned path
    to the last exit (no budget), as a fraction of ``full`` (every gate, block and exit head), summarised over the
    images and split by whether the full path's last exit classifies the image right.

    ``learned`` and ``full_path`` are the same images' outputs with learned and with all-full gates. Returns
    ``mean_ratio``, ``p10_ratio``, ``p50_ratio``, ``p90_ratio``, ``std_ratio``, ``mean_ratio_full_path_correct``
    and ``mean_ratio_full_path_wrong`` (None when no image is in that group), ``correct_count``, ``wrong_count``,
    the same mean and percentiles in MACs (``mean_macs``, ``p10_macs``, ...) and ``histogram``: ``bin_edges``
    (ratios) with the image counts per bin of the full path's right (``full_path_correct``) and wrong
    (``full_path_wrong``) images.
    """
    if not learned.reached[:, -1].all():
        raise ValueError("learned_cost needs the learned path without a budget: every image reaches the last exit")
    if not np.array_equal(learned.labels, full_path.labels):
        raise ValueError("learned_cost needs the learned and the full path's outputs of the same images")
    macs = learned.cost[:, -1]
    ratio = macs / full
    right = full_path.pred[:, -1] == full_path.labels
    edges = np.linspace(0.0, 1.0, LEARNED_COST_BINS + 1)

    def counts(r: np.ndarray) -> list[int]:
        return [int(c) for c in np.histogram(np.clip(r, 0.0, 1.0), edges)[0]]

    q = np.percentile(ratio, [10, 50, 90])
    return {
        "mean_ratio": float(ratio.mean()), "p10_ratio": float(q[0]), "p50_ratio": float(q[1]),
        "p90_ratio": float(q[2]), "std_ratio": float(ratio.std()),
        "mean_ratio_full_path_correct": float(ratio[right].mean()) if right.any() else None,
        "mean_ratio_full_path_wrong": float(ratio[~right].mean()) if (~right).any() else None,
        "correct_count": int(right.sum()), "wrong_count": int((~right).sum()),
        "mean_macs": float(macs.mean()), "p10_macs": float(q[0] * full), "p50_macs": float(q[1] * full),
        "p90_macs": float(q[2] * full),
        "histogram": {"bin_edges": [float(e) for e in edges], "full_path_correct": counts(ratio[right]),
                      "full_path_wrong": counts(ratio[~right])},
    }


def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.3f}"


def _row(res: dict, **extra) -> dict:
    return {**extra, "accuracy": res["accuracy"], "mean_macs": res["mean_cost"], "max_macs": res["max_cost"],
            **{k: v for k, v in res.items() if k in ("mean_uj", "mean_ms")},
            "over_budget": res["over_budget"], "exit_histogram": res["exit_histogram"]}


def evaluate_model(cfg: ModelConfig, model: keras.Model, val: tuple[np.ndarray, np.ndarray],
                   test: tuple[np.ndarray, np.ndarray], mean, std, budget_fractions: tuple[float, ...],
                   target_fractions: tuple[float, ...], batch_size: int = 500,
                   latency_table: str | None = None) -> dict:
    """Evaluates every policy on the test split, calibrating thresholds on ``val``.

    ``latency_table`` (a ``python -m ddi_runtime profile`` JSON of this architecture) adds mean latencies.
    Returns the report dict (see README, "report.json").
    """
    pieces = build_pieces(cfg)
    table: CostTable = cost_table(pieces, "macs")
    full = table.full_cost()
    extra = {"uj": cost_table(pieces, "energy")}
    if latency_table:
        extra["ms"] = cost_table(pieces, "latency", latency_path=latency_table)
    budget_model = build_model(cfg, table, budget_input=True)
    copy_weights(model, budget_model)
    run = Predictor(budget_model, batch_size, mean, std, extra)
    x_val, y_val = val
    have_val = len(y_val) > 0
    exit_pos = list(cfg.exit_positions)
    report: dict = {
        "model": cfg.to_dict(), "unit": "macs", "full_macs": full, "backbone_macs": backbone_macs(cfg),
        "cheapest_answer_macs": table.cheapest_answer(), "exit_positions": exit_pos,
        "exit_macs_full_path": table.exit_costs_full(), "test_examples": int(len(test[1])),
        "val_examples": int(len(y_val)), "full_uj": extra["uj"].full_cost(),
        "latency_table": latency_table, "latency_table_sha256": file_sha256(latency_table) if latency_table else None,
        "full_ms": extra["ms"].full_cost() if "ms" in extra else None,
    }
    gated = cfg.gated
    modes = ["full", "learned"] if gated else ["full"]
    test_outs: dict[str, policies.ExitOutputs] = {}  # no budget, per gate mode: reused below
    for mode in modes:
        outs = test_outs[mode] = run(*test, mode=mode)
        rows = []
        for j in range(outs.num_exits):
            t = np.full(outs.num_exits, np.inf)
            t[j] = 0.0  # answer at exit j
            rows.append(_row(policies.evaluate(outs, t), exit=j, position=exit_pos[j]))
        report["exits_all_full" if mode == "full" else "exits_learned_gates"] = rows
        if mode == "learned":
            usage = {k: outs.decisions[k].mean(axis=0) for k in names.decision_keys(outs.decisions)}
            report["gate_usage"] = {names.block(names.index_of(k)): [float(f) for f in v] for k, v in usage.items()}
    logging.info("exits (all full): %s", [round(r["accuracy"], 4) for r in report["exits_all_full"]])
    # an ungated model runs one path: no learned cost
    report["learned_cost"] = learned_cost(test_outs["learned"], test_outs["full"], full) if gated else None
    if gated:
        lc = report["learned_cost"]
        logging.info("learned-path cost / full: mean %.3f, p10 %.3f, p50 %.3f, p90 %.3f, std %.3f; images the full "
                     "path gets right %s (%d), wrong %s (%d)", lc["mean_ratio"], lc["p10_ratio"], lc["p50_ratio"],
                     lc["p90_ratio"], lc["std_ratio"], _fmt_ratio(lc["mean_ratio_full_path_correct"]),
                     lc["correct_count"], _fmt_ratio(lc["mean_ratio_full_path_wrong"]), lc["wrong_count"])

    budgets = [(f, f * full) for f in budget_fractions if f * full >= table.cheapest_answer()]  # answerable
    report["anytime"] = []
    for f, budget in budgets:
        res = policies.evaluate(run(*test, mode="full", budget=budget), budget=budget)
        report["anytime"].append(_row(res, budget_fraction=f, budget_macs=budget))

    mode = "learned" if gated else "full"
    # the board runtime's deployment setting (--defer_exits): budget only, exits deferred
    defer_model = build_model(cfg, table, budget_input=True, defer_exits=True)
    copy_weights(model, defer_model)
    run_deferred = Predictor(defer_model, batch_size, mean, std)
    report["budget_deferred"] = []
    for f, budget in budgets:
        res = policies.evaluate(run_deferred(*test, mode=mode, budget=budget), budget=budget)
        report["budget_deferred"].append(_row(res, budget_fraction=f, budget_macs=budget))

    if have_val:
        report["threshold"] = []
        val_out, test_out = run(*val, mode=mode), test_outs[mode]
        for f in target_fractions:
            t = policies.calibrate_threshold(val_out, f * full)
            report["threshold"].append(_row(policies.evaluate(test_out, t), target_fraction=f, threshold=t,
                                            val_mean_macs=policies.evaluate(val_out, t)["mean_cost"]))
        report["ddi"] = []
        for f, budget in budgets:
            val_b, test_b = run(*val, mode=mode, budget=budget), run(*test, mode=mode, budget=budget)
            for share in (0.5, 0.75, 1.0):
                t = policies.calibrate_threshold(val_b, share * budget)
                res = policies.evaluate(test_b, t, budget=budget)
                report["ddi"].append(_row(res, budget_fraction=f, budget_macs=budget, target_share=share,
                                          threshold=t))
        report["ddi_pareto"] = pareto([r for r in report["ddi"]])
    else:
        logging.warning("no validation split: threshold calibration and the DDI policy sweep are skipped")
    return report


def pareto(rows: list[dict]) -> list[dict]:
    """Rows not dominated in (higher accuracy, lower mean MACs), sorted by mean MACs."""
    out = []
    for r in sorted(rows, key=lambda r: (r["mean_macs"], -r["accuracy"])):
        if not out or r["accuracy"] > out[-1]["accuracy"]:
            out.append(r)
    return out


