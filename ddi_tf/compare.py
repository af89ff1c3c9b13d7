"""Command: side-by-side comparison of training reports: one PNG plot and a Markdown table, and the trade-off JSON.

    python -m ddi_tf.compare --reports=DDI=runs/a/report.json,static=runs/b/report.json --out=docs/results/cifar_cpu
    python -m ddi_tf.compare --reports=DDI=runs/d1/report.json+runs/d2/report.json,static=runs/s1/report.json+\
runs/s2/report.json,ResNet-8=runs/r8/report.json --json=docs/results/tradeoff_cpu.json [--kinds=DDI=ddi,...] \
        [--static=static] [--out=...]

Writes ``<out>.png`` (accuracy against mean MACs, every policy of every report), ``<out>_pareto.png`` (each
model's float Pareto front, and its int8 accuracy under hard budgets with ``--int8=label=latency.json``),
``<out>.md`` (every row, and the models side by side at equal mean MACs, energy and latency where reported)
and, when the reports carry energy or latency, ``<out>_fronts.png`` (a Pareto panel per cost).

``+`` joins the reports of several seeds (runs) of one model; the plots and the per-row tables show each run
(``label #1``, ``label #2``, ...). ``--json`` writes the trade-off of every model (``tradeoff``: best accuracy at
mean MACs <= each of ``TRADEOFF_LEVELS`` x the static reference's MACs, mean over seeds) and prints its Markdown
table, which also goes into ``<out>.md`` with ``--out``.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

from ddi_tf.evaluation.compare import KINDS, CompareError, parse_kinds, parse_reports, tradeoff, tradeoff_markdown
from ddi_tf.evaluation.plots import write_outputs

flags.DEFINE_list("reports", [], "label=path/to/report.json, ...; label=a/report.json+b/report.json gives several "
                  "seeds (runs) of one model")
flags.DEFINE_string("out", None, "Output prefix (without extension) of the plots and the Markdown table.")
flags.DEFINE_string("json", None, "Writes the trade-off of every model to this JSON file (levels, static_macs, "
                    "per model: kind, seeds, best_accuracy per level, learned_cost_ratio, target_cost) and prints "
                    "its table.")
flags.DEFINE_list("kinds", [], "label=kind, ... for --json, kind one of ddi, exits_only, layer_only, static, "
                  "static_small; a model not listed gets its kind from its report's model config")
flags.DEFINE_string("static", None, "--json: label of the static reference model whose MACs the levels scale "
                    "(default: the static model with the most MACs)")
flags.DEFINE_list("int8", [], "label=path/to/latency.json (benchmarks/runtime_latency.py) of a report's int8 "
                  "export: adds its int8 accuracy under hard budgets to <out>_pareto.png")
FLAGS = flags.FLAGS

flags.register_validator("kinds", lambda items: all(i.partition("=")[2] in KINDS for i in items),
                         f"--kinds items are label=kind with kind one of {', '.join(KINDS)}")


def main(argv: list[str]) -> None:
    """Writes the plots and the tables (``--out``) and the trade-off JSON (``--json``)."""
    del argv
    if not FLAGS.reports or not (FLAGS.out or FLAGS.json):
        raise app.UsageError("--reports and at least one of --out and --json are required")
    try:
        paths = parse_reports(FLAGS.reports)
        kinds = parse_kinds(FLAGS.kinds, list(paths))
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    runs = {}
    for label, seed_paths in paths.items():
        runs[label] = []
        for path in seed_paths:
            with open(path) as f:
                runs[label].append(json.load(f))
    table = None
    if FLAGS.json:
        try:
            result = tradeoff(runs, kinds, FLAGS.static, paths)
        except CompareError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        from ddi_tf.core.files import write_json_atomic

        write_json_atomic(FLAGS.json, result.json)
        table = tradeoff_markdown(result)
        print(table, end="")
        print(f"wrote {FLAGS.json}")
    if FLAGS.out:
        write_outputs(runs, FLAGS.out, FLAGS.int8, table)


if __name__ == "__main__":
    app.run(main)
