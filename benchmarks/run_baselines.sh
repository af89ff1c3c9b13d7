#!/usr/bin/env bash
# Issue 7's baselines with the CPU recipe of configs/cifar_cpu.flags (same steps, learning rates, data order):
#   exits only  (anytime ResNet-20, MSDNet-style halting: no gates, the same 6 exits as DDI)
#   layer only  (SkipNet-style: gates choose skip or the whole block, G = 1; the same exits)
# The static backbone and full DDI come from benchmarks/run_cpu_results.sh. Then all four go on one plot.
#   bash benchmarks/run_baselines.sh [runs_dir]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}
python -m ddi_tf.train --flagfile=configs/cifar_cpu.flags --gate_type=none --workdir="$RUNS/cifar_cpu_exits"
python -m ddi_tf.train --flagfile=configs/cifar_cpu.flags --groups=1 --random_width_prob=0 \
    --workdir="$RUNS/cifar_cpu_layer"
python -m ddi_tf.compare --reports="DDI=$RUNS/cifar_cpu/report.json,static=$RUNS/cifar_cpu_static/report.json,\
exits-only=$RUNS/cifar_cpu_exits/report.json,layer-only=$RUNS/cifar_cpu_layer/report.json" \
    --out=docs/results/baselines_cpu
# With the QAT + gate-margin fine-tuning of DDI (2,000 more steps than the others: labelled so), when present
# (benchmarks/run_deploy_results.sh makes it):
if [ -f "$RUNS/cifar_cpu_qatm/report.json" ]; then
  python -m ddi_tf.compare --reports="DDI=$RUNS/cifar_cpu/report.json,static=$RUNS/cifar_cpu_static/report.json,\
exits-only=$RUNS/cifar_cpu_exits/report.json,layer-only=$RUNS/cifar_cpu_layer/report.json,\
DDI+QAT (2k more steps)=$RUNS/cifar_cpu_qatm/report.json" --out=docs/results/baselines_cpu_with_qat \
      --int8="DDI+QAT (2k more steps)=docs/results/latency_cifar_cpu_qatm.json,\
exits-only=docs/results/latency_cifar_cpu_exits.json,layer-only=docs/results/latency_cifar_cpu_layer.json"
  # (the latency JSONs come from benchmarks/run_baseline_latency.sh)
fi
