#!/usr/bin/env bash
# Issue 14's runtime benchmark: the int8 export (PTQ) of the --min_group_channels=16 DDI branch (its exits pool
# with depthwise convs) against the static int8 ResNet-20 backbone it branched from, both run by the same loop,
# with XNNPACK (LiteRT's default delegate) and with the builtin kernels, budgets 0.25 / 0.4 / 0.5 / 0.6 / 0.8 / 1.0
# of the static MACs, 2 rounds each. Run nothing else beside it (a timing benchmark).
#   DDI_DATA=/path/to/cifar10(.tar.gz) bash benchmarks/run_runtime_bench.sh [runs_dir] [limit] [auto|python]
# DDI_RUN=<run> (default cifar_cpu_g16) benchmarks the export of runs/<run> instead (exports/<run>), writing
# runtime_<delegate>_<run>*.json; e.g. DDI_RUN=cifar_cpu_g16_lat, the branch trained against XNNPACK latencies.
# The contract reports the deployment setting, exits deferred (--defer_exits); the _rows files also hold every
# budget with every exit run (ddi@f).
# Writes docs/results/runtime_xnnpack.json and runtime_builtin.json (the issue's contract) and
# docs/results/runtime_{xnnpack,builtin}_rows.{json,png} (every configuration's latencies).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}
LIMIT=${2:-1000}
LOOP=${3:-auto}  # python: the reference loop, written as runtime_<delegate>_python*.json
RUN=${DDI_RUN:-cifar_cpu_g16}
SFX=$([ "$RUN" = cifar_cpu_g16 ] || echo "_$RUN")$([ "$LOOP" = python ] && echo _python || echo "")
: "${DDI_DATA:?set DDI_DATA to the CIFAR-10 folder or archive}"
OUT=docs/results
[ -f "$RUNS/test.npz" ] || python -m ddi_tf.data --data_dir="$DDI_DATA" --write_test_npz="$RUNS/test.npz"
[ -f exports/cifar_cpu_static_bf16/manifest.json ] || python -m ddi_tf.export --data_dir="$DDI_DATA" \
    --workdir="$RUNS/cifar_cpu_backbone_bf16" --out=exports/cifar_cpu_static_bf16 > /dev/null
[ -f "exports/$RUN/manifest.json" ] || python -m ddi_tf.export --data_dir="$DDI_DATA" \
    --workdir="$RUNS/$RUN" --out="exports/$RUN" --json="$OUT/export_$RUN.json" > /dev/null
for d in default none; do
  name=$([ $d = default ] && echo xnnpack || echo builtin)
  python benchmarks/runtime_latency.py --ddi="exports/$RUN" --static=exports/cifar_cpu_static_bf16 \
      --data="$RUNS/test.npz" --limit="$LIMIT" --delegate=$d --rounds=2 \
      --budget_fractions=0.25,0.4,0.5,0.6,0.8,1.0 --defer_exits --loop="$LOOP" --out="$OUT/runtime_${name}${SFX}_rows" \
      --contract="$OUT/runtime_${name}${SFX}.json" > /dev/null
done
