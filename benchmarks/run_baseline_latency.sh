#!/usr/bin/env bash
# Issue 7: batch-1 int8 latency of every model through the board runtime, each run side by side with the static
# int8 backbone (same interpreter, 1 thread, builtin kernels, no XNNPACK), at a sweep of hard MAC budgets.
# Needs the exports (python -m ddi_tf.export --workdir=runs/<run> --out=exports/<run>) and runs/test.npz.
#   bash benchmarks/run_baseline_latency.sh [runs_dir]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}
for run in cifar_cpu_qatm cifar_cpu_exits cifar_cpu_layer; do
  python benchmarks/runtime_latency.py --ddi="exports/$run" --static=exports/cifar_cpu_static \
      --data="$RUNS/test.npz" --limit=500 --threads=1 --rounds=2 --delegate=none \
      --budget_fractions=0.25,0.4,0.5,0.6,0.8,1.0 --defer_exits --out="docs/results/latency_$run"
done
