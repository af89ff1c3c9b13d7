"""Side-by-side comparison of training reports: one PNG plot and a Markdown table.

    python -m ddi_tf.compare --reports=DDI=runs/a/report.json,static=runs/b/report.json --out=docs/results/cifar_cpu

Writes ``<out>.png`` (accuracy against mean MACs, every policy of every report), ``<out>_pareto.png`` (each
model's float Pareto front, and its int8 accuracy under hard budgets with ``--int8=label=latency.json``) and
``<out>.md``.
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
            f"({r['mean_macs'] / ref_macs:.2f}x) | {r['max_macs'] / 1e6:.2f} | {r.get('over_budget', 0)} |")


def markdown(reports: dict[str, dict]) -> str:
    """A Markdown table of every policy row of every report; MACs also relative to the first report's
    static backbone MACs."""
    ref = next(iter(reports.values()))["backbone_macs"]
    lines = [f"MACs relative to the static backbone body ({ref / 1e6:.2f}M MACs).", "",
             "| model | policy | setting | test accuracy (%) | mean MMACs (x backbone) | max MMACs | over budget |",
             "|---|---|---|---|---|---|---|"]
    for label, rep in reports.items():
        for r in rep.get("exits_all_full", []):
            lines.append(_fmt_row(label, "exit, gates full", f"exit{r['exit']} (after block {r['position']})", r, ref))
        for r in rep.get("exits_learned_gates", []):
            lines.append(_fmt_row(label, "exit, learned gates", f"exit{r['exit']}", r, ref))
        for r in rep.get("anytime", []):
            lines.append(_fmt_row(label, "anytime budget (gates full)", f"budget {r['budget_fraction']:.2f}", r, ref))
        for r in rep.get("threshold", []):
            lines.append(_fmt_row(label, "thresholds (learned gates)",
                                  f"target {r['target_fraction']:.2f}, t={r['threshold']:.3f}", r, ref))
        for r in rep.get("ddi_pareto", []):
            lines.append(_fmt_row(label, "DDI (pareto)", f"budget {r['budget_fraction']:.2f}, t={r['threshold']:.3f}",
                                  r, ref))
    lines += ["", envelope_table(reports)]
    return "\n".join(lines) + "\n"


ENVELOPE_FRACTIONS = (0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)
"""Mean-cost levels (fractions of the first report's static backbone MACs) of the side-by-side table."""


def operating_points(rep: dict) -> list[tuple[float, float, str]]:
    """Every evaluated (mean MACs, accuracy, policy) of a report: all exits, anytime, thresholds, DDI."""
    points = []
    for key in ("exits_all_full", "exits_learned_gates", "anytime", "threshold", "ddi", "ddi_pareto"):
        for r in rep.get(key, []):
            points.append((float(r["mean_macs"]), float(r["accuracy"]), key))
    return points


def envelope_table(reports: dict[str, dict], fractions=ENVELOPE_FRACTIONS) -> str:
    """Best test accuracy of each model at a mean cost of at most each fraction of the static backbone's MACs
    (over every operating point its report evaluated): the models side by side at equal mean cost."""
    ref = next(iter(reports.values()))["backbone_macs"]
    labels = list(reports)
    lines = ["Best accuracy (%) at mean MACs <= fraction x static backbone (any evaluated policy; "
             "- : none that cheap).", "",
             "| mean MACs <= | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    points = {label: operating_points(rep) for label, rep in reports.items()}
    for f in fractions:
        cells = []
        for label in labels:
            ok = [acc for macs, acc, _ in points[label] if macs <= f * ref * (1 + 1e-9)]
            cells.append(f"{100 * max(ok):.2f}" if ok else "-")
        lines.append(f"| {f:.2f} ({f * ref / 1e6:.1f}M) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
            rows = [r for r in int8[label]["rows"] if r["config"] != "static"]
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
    print(f"wrote {FLAGS.out}.png, {FLAGS.out}_pareto.png and {FLAGS.out}.md")


if __name__ == "__main__":
    app.run(main)
