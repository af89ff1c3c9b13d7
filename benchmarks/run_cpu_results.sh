#!/usr/bin/env bash
# Reproduces docs/RESULTS.md's CPU numbers: the DDI model and the static backbone, same recipe, one after the other.
#   bash benchmarks/run_cpu_results.sh [runs_dir]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}
python -m ddi_tf.train --flagfile=configs/cifar_cpu.flags --workdir="$RUNS/cifar_cpu"
python -m ddi_tf.train --flagfile=configs/cifar_cpu.flags --gate_type=none --exit_every=0 --exit_stage_ends=false \
    --workdir="$RUNS/cifar_cpu_static"
python -m ddi_tf.compare --reports="DDI=$RUNS/cifar_cpu/report.json,static=$RUNS/cifar_cpu_static/report.json" \
    --out=docs/results/cifar_cpu
