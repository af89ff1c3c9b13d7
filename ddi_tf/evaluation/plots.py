"""The PNG plots of reports: accuracy against mean cost for every policy, each model's Pareto front (with its int8
accuracy under hard budgets), one panel per cost unit, and the histogram of per-image learned-path cost."""

from __future__ import annotations

import itertools
import json
import os
import sys
import tempfile

import numpy as np

from ddi_tf.evaluation.compare import markdown, operating_points, pareto, units_present
from ddi_tf.evaluation.evaluate import _fmt_ratio


def plot_report(reports: dict[str, dict], path: str, title: str = "") -> None:
    """PNG plot of accuracy against mean MACs for one or more reports (label -> report); with a second panel, the
    histogram of the per-image learned-path cost (images the full path gets right and wrong apart) of every
    report that has one (``learned_cost``, gated models)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hists = {label: rep["learned_cost"] for label, rep in reports.items()
             if (rep.get("learned_cost") or {}).get("histogram")}
    if hists:
        fig, (ax, ax_hist) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [1.5, 1]})
        _plot_learned_cost(ax_hist, hists)
    else:
        fig, ax = plt.subplots(figsize=(7, 5))
    markers = itertools.cycle("osd^v<>ph*")  # more reports than markers reuse them
    for label, rep in reports.items():
        m = next(markers)
        scale = 1e6
        if rep.get("model", {}).get("gate_type") == "none" and len(rep.get("exits_all_full", [])) == 1:
            r = rep["exits_all_full"][0]  # a static backbone without exits: one point
            ax.plot([r["mean_macs"] / scale], [100 * r["accuracy"]], marker="s", color="black", linestyle="",
                    label=f"{label}: static backbone" if label else "static backbone")
            continue
        series = [("exits (all full)", rep.get("exits_all_full", []), "--"),
                  ("anytime budget", rep.get("anytime", []), ":"),
                  ("budget, exits deferred", rep.get("budget_deferred", []), (0, (1, 1))),
                  ("thresholds (learned gates)", rep.get("threshold", []), "-."),
                  ("DDI (gates+exits+budget)", rep.get("ddi_pareto", []), "-")]
        for name, rows, ls in series:
            if not rows:
                continue
            rows = sorted(rows, key=lambda r: r["mean_macs"])
            ax.plot([r["mean_macs"] / scale for r in rows], [100 * r["accuracy"] for r in rows], linestyle=ls, marker=m,
                    label=f"{label}: {name}" if label else name, markersize=4)
    ax.set_xlabel("mean MACs per image (millions)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title or "accuracy against cost")
    fig.tight_layout()
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp_", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def _plot_learned_cost(ax, hists: dict[str, dict]) -> None:
    """Per-image learned-path cost histograms (label -> ``learned_cost``): the full path's right images solid,
    its wrong images dashed, their means as vertical lines; one colour per report (for one: green bars with the
    wrong images' red bars stacked on them)."""
    one = len(hists) == 1
    lo, hi = 1.0, 0.0
    for i, (label, lc) in enumerate(hists.items()):
        h = lc["histogram"]
        edges = np.asarray(h["bin_edges"])
        prefix = f"{label}: " if label else ""
        for key, mean_key, count_key, ls, color in (
                ("full_path_correct", "mean_ratio_full_path_correct", "correct_count", "-", "C2" if one else f"C{i}"),
                ("full_path_wrong", "mean_ratio_full_path_wrong", "wrong_count", "--", "C3" if one else f"C{i}")):
            counts = np.asarray(h[key])
            what = "right" if key == "full_path_correct" else "wrong"
            base = np.asarray(h["full_path_correct"]) if one and key == "full_path_wrong" else 0
            ax.stairs(counts + base, edges, baseline=base, linestyle=ls, color=color, fill=one,
                      alpha=0.5 if one else 1.0,
                      label=f"{prefix}full path {what} (n={lc[count_key]}, mean {_fmt_ratio(lc[mean_key])})")
            if lc[mean_key] is not None:
                ax.axvline(lc[mean_key], linestyle=ls, color=color, linewidth=1)
            nz = np.flatnonzero(counts)
            if nz.size:
                lo, hi = min(lo, edges[nz[0]]), max(hi, edges[nz[-1] + 1])
    if hi > lo:
        pad = edges[1] - edges[0]
        ax.set_xlim(max(0.0, lo - pad), min(1.0, hi + pad))
    ax.set_xlabel("learned-path cost to the last exit / full MACs (no budget)")
    ax.set_ylabel("test images")
    ax.set_title("per-image cost of the learned gates")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def plot_pareto(reports: dict[str, dict], int8: dict[str, dict], path: str) -> None:
    """One PNG: each model's float Pareto front (solid) and, where given, its int8 accuracy under hard MAC
    budgets on the board runtime (dashed, same colour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for i, (label, rep) in enumerate(reports.items()):
        color = f"C{i}"
        front = pareto(operating_points(rep))
        ax.plot([m / 1e6 for m, _ in front], [100 * a for _, a in front], "o-", color=color, label=f"{label} (float)")
        if label in int8:
            rows = [r for r in int8[label]["rows"] if r["config"].startswith("ddi@")]
            ax.plot([r["mean_macs"] / 1e6 for r in rows], [100 * r["accuracy"] for r in rows], "x--", color=color,
                    label=f"{label} (int8, budget only)")
    ax.set_xlabel("mean MACs per image (millions)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("CIFAR-10: float Pareto fronts and int8 under hard budgets")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_fronts(reports: dict[str, dict], path: str) -> None:
    """One PNG with a panel per cost unit (MACs, energy, latency): each model's float Pareto front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = units_present(reports)
    fig, axes = plt.subplots(1, len(units), figsize=(5.5 * len(units), 4.5), squeeze=False)
    for ax, unit in zip(axes[0], units, strict=True):
        scale = 1e-6 if unit == "macs" else 1.0
        sha = next(iter(reports.values())).get("latency_table_sha256")
        for i, (label, rep) in enumerate(reports.items()):
            front = pareto(operating_points(rep, unit, sha))
            if front:
                ax.plot([c * scale for c, _ in front], [100 * a for _, a in front], "o-", ms=3, color=f"C{i}",
                        label=label)
        ax.set_xlabel({"macs": "mean MACs per image (millions)", "uj": "mean energy per image (uJ, model)",
                       "ms": "mean latency per image (ms, per-piece table)"}[unit])
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("CIFAR-10: float Pareto fronts per cost")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(runs: dict[str, list[dict]], out: str, int8_items: list[str], tradeoff_table: str | None) -> None:
    """The plots and ``<out>.md`` (with ``tradeoff_table`` at its end when given); a model with several seeds is
    shown run by run (``label #1``, ...)."""

    reports = {}
    for label, reps in runs.items():
        for i, rep in enumerate(reps):
            reports[label if len(reps) == 1 else f"{label} #{i + 1}"] = rep
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    plot_report(reports, out + ".png", title="CIFAR-10 test accuracy against mean MACs")
    with open(out + ".md", "w") as f:
        f.write(markdown(reports))
        if tradeoff_table:
            f.write("\n" + tradeoff_table)
    int8 = {}
    for item in int8_items:
        label, _, path = item.partition("=")
        if label not in reports or not os.path.exists(path):
            print(f"error: --int8 {item!r}: needs label=path with a label of --reports (label #i for a model with "
                  "several seeds) and an existing file", file=sys.stderr)
            sys.exit(2)
        with open(path) as f:
            int8[label] = json.load(f)
    plot_pareto(reports, int8, out + "_pareto.png")
    written = [f"{out}.png", f"{out}_pareto.png", f"{out}.md"]
    if len(units_present(reports)) > 1:
        plot_fronts(reports, out + "_fronts.png")
        written.append(f"{out}_fronts.png")
    print("wrote " + ", ".join(written))
