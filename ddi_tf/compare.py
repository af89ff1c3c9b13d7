"""Side-by-side comparison of training reports: one PNG plot and a Markdown table.

    python -m ddi_tf.compare --reports=DDI=runs/a/report.json,static=runs/b/report.json --out=docs/results/cifar_cpu

Writes ``<out>.png`` (accuracy against mean MACs, every policy of every report), ``<out>_pareto.png`` (each
model's float Pareto front, and its int8 accuracy under hard budgets with ``--int8=label=latency.json``),
``<out>.md`` (every row, and the models side by side at equal mean MACs, energy and latency where reported)
and, when the reports carry energy or latency, ``<out>_fronts.png`` (a Pareto panel per cost).
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

flags.DEFINE_list("reports", [], "label=path/to/report.json, ...")
flags.DEFINE_string("out", None, "Output prefix (without extension).")
flags.DEFINE_list("int8", [], "label=path/to/latency.json (benchmarks/runtime_latency.py) of a report's int8 "
                  "export: adds its int8 accuracy under hard budgets to <out>_pareto.png")
FLAGS = flags.FLAGS


def _fmt_row(label: str, policy: str, setting: str, r: dict, ref_macs: float) -> str:
    return (f"| {label} | {policy} | {setting} | {100 * r['accuracy']:.2f} | {r['mean_macs'] / 1e6:.2f} "
            f"({r['mean_macs'] / ref_macs:.2f}x) | {r['max_macs'] / 1e6:.2f} | {r.get('over_budget', 0)} | "
            + " | ".join(f"{r[k]:.4g}" if k in r else "-" for k in ("mean_uj", "mean_ms")) + " |")


def markdown(reports: dict[str, dict]) -> str:
    """A Markdown table of every policy row of every report; MACs also relative to the first report's
    static backbone MACs."""
    ref = next(iter(reports.values()))["backbone_macs"]
    lines = [f"MACs relative to the static backbone body ({ref / 1e6:.2f}M MACs).", "",
             "| model | policy | setting | test accuracy (%) | mean MMACs (x backbone) | max MMACs | over budget "
             "| mean uJ | mean ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, rep in reports.items():
        for r in rep.get("exits_all_full", []):
            lines.append(_fmt_row(label, "exit, gates full", f"exit{r['exit']} (after block {r['position']})", r, ref))
        for r in rep.get("exits_learned_gates", []):
            lines.append(_fmt_row(label, "exit, learned gates", f"exit{r['exit']}", r, ref))
        for r in rep.get("anytime", []):
            lines.append(_fmt_row(label, "anytime budget (gates full)", f"budget {r['budget_fraction']:.2f}", r, ref))
        for r in rep.get("budget_deferred", []):
            lines.append(_fmt_row(label, "budget, exits deferred", f"budget {r['budget_fraction']:.2f}", r, ref))
        for r in rep.get("threshold", []):
            lines.append(_fmt_row(label, "thresholds (learned gates)",
                                  f"target {r['target_fraction']:.2f}, t={r['threshold']:.3f}", r, ref))
        for r in rep.get("ddi_pareto", []):
            lines.append(_fmt_row(label, "DDI (pareto)", f"budget {r['budget_fraction']:.2f}, t={r['threshold']:.3f}",
                                  r, ref))
    for unit in units_present(reports):
        lines += ["", envelope_table(reports, unit=unit)]
    return "\n".join(lines) + "\n"


ENVELOPE_FRACTIONS = (0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)
"""Mean-cost levels of the side-by-side table: fractions of the first report's static backbone MACs, or of its
full path (every piece at its widest) in energy and latency."""

UNIT_NAMES = {"macs": "MACs", "uj": "energy (uJ, int8 energy model)", "ms": "latency (ms, measured per-piece table)"}


def operating_points(rep: dict, unit: str = "macs", latency_sha256: str | None = None
                     ) -> list[tuple[float, float, str]]:
    """Every evaluated (mean cost, accuracy, policy) of a report in ``unit`` (``macs``, ``uj`` or ``ms``): all
    exits, anytime, thresholds, DDI. Rows without that unit (older reports, no latency table) are left out, and
    so are latencies from a table other than ``latency_sha256`` when given (estimates from different tables,
    measured at different times, do not compare)."""
    if unit == "ms" and latency_sha256 is not None and rep.get("latency_table_sha256") != latency_sha256:
        return []
    points = []
    for key in ("exits_all_full", "exits_learned_gates", "anytime", "budget_deferred", "threshold", "ddi",
                "ddi_pareto"):
        for r in rep.get(key, []):
            if f"mean_{unit}" in r:
                points.append((float(r[f"mean_{unit}"]), float(r["accuracy"]), key))
    return points


def _reference(rep: dict, unit: str) -> float | None:
    return rep.get("backbone_macs") if unit == "macs" else rep.get(f"full_{unit}")


def envelope_table(reports: dict[str, dict], fractions=ENVELOPE_FRACTIONS, unit: str = "macs") -> str:
    """Best test accuracy of each model at a mean cost of at most each fraction of a reference cost (over every
    operating point its report evaluated): the models side by side at equal mean cost. The reference is the
    first report's static backbone MACs, or its full-path energy or latency."""
    first_label, first = next(iter(reports.items()))
    ref = _reference(first, unit)
    if not ref:
        return f"(no {UNIT_NAMES[unit]} in the report of {first_label})"
    labels = list(reports)
    what = "static backbone" if unit == "macs" else f"the full path of {first_label}"
    scale, fmt = (1e-6, "{:.1f}M") if unit == "macs" else (1.0, "{:.3g}")
    lines = [f"Best accuracy (%) at mean {UNIT_NAMES[unit]} <= fraction x {what} (any evaluated policy; "
             "- : none that cheap; n/a: not measured in this unit).", "",
             f"| mean {unit} <= | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    sha = first.get("latency_table_sha256") if unit == "ms" else None
    if unit == "ms":
        lines[0] += f" Latencies only from the latency table of {first_label} ({first.get('latency_table')})."
    points = {label: operating_points(rep, unit, sha) for label, rep in reports.items()}
    for f in fractions:
        cells = []
        for label in labels:
            ok = [acc for cost, acc, _ in points[label] if cost <= f * ref * (1 + 1e-9)]
            cells.append(f"{100 * max(ok):.2f}" if ok else "-" if points[label] else "n/a")
        lines.append(f"| {f:.2f} ({fmt.format(f * ref * scale)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def units_present(reports: dict[str, dict]) -> list[str]:
    """The cost units the first report has operating points in, MACs first (latency needs its table's hash)."""
    first = next(iter(reports.values()))
    return [u for u in UNIT_NAMES if operating_points(first, u, first.get("latency_table_sha256") or "")]


def pareto(points: list[tuple[float, float, str]]) -> list[tuple[float, float]]:
    """The (mean MACs, accuracy) points no other point beats on both, sorted by cost."""
    front, best = [], -1.0
    for macs, acc, _ in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((macs, acc))
            best = acc
    return front


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


def main(argv: list[str]) -> None:
    """Writes the plot and the table."""
    del argv
    if not FLAGS.reports or not FLAGS.out:
        raise app.UsageError("--reports and --out are required")
    import ddi_tf  # noqa: F401
    from ddi_tf.evaluate import plot_report

    reports = {}
    for item in FLAGS.reports:
        label, _, path = item.partition("=")
        if not path or not os.path.exists(path):
            print(f"error: report {path or item!r} not found (expected label=path)", file=sys.stderr)
            sys.exit(2)
        with open(path) as f:
            reports[label] = json.load(f)
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    plot_report(reports, FLAGS.out + ".png", title="CIFAR-10 test accuracy against mean MACs")
    with open(FLAGS.out + ".md", "w") as f:
        f.write(markdown(reports))
    int8 = {}
    for item in FLAGS.int8:
        label, _, path = item.partition("=")
        if label not in reports or not os.path.exists(path):
            print(f"error: --int8 {item!r}: needs label=path with a label of --reports and an existing file",
                  file=sys.stderr)
            sys.exit(2)
        with open(path) as f:
            int8[label] = json.load(f)
    plot_pareto(reports, int8, FLAGS.out + "_pareto.png")
    written = [f"{FLAGS.out}.png", f"{FLAGS.out}_pareto.png", f"{FLAGS.out}.md"]
    if len(units_present(reports)) > 1:
        plot_fronts(reports, FLAGS.out + "_fronts.png")
        written.append(f"{FLAGS.out}_fronts.png")
    print("wrote " + ", ".join(written))


if __name__ == "__main__":
    app.run(main)
