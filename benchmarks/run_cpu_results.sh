#!/usr/bin/env bash
# Reproduces docs/RESULTS.md's CPU numbers: the DDI model and the static backbone, same recipe, one after the other.
#   bash benchmarks/run_cpu_results.sh [runs_dir]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}
# The per-piece latency tables (python -m ddi_runtime profile on each model's export, builtin kernels, this CPU)
# only add a mean-latency estimate to every policy row; rerunning a finished run re-evaluates it.
LAT=docs/results
python -m ddi_tf.train --flagfile=configs/cifar_cpu.flags --workdir="$RUNS/cifar_cpu" \
    --latency_table=$LAT/latency_cifar_cpu_builtin.json
python -m ddi_tf.train --flagfile=configs/cifar_cpu.flags --gate_type=none --exit_every=0 --exit_stage_ends=false \
    --workdir="$RUNS/cifar_cpu_static" --latency_table=$LAT/latency_cifar_cpu_static_builtin.json
python -m ddi_tf.compare --reports="DDI=$RUNS/cifar_cpu/report.json,static=$RUNS/cifar_cpu_static/report.json" \
    --out=docs/results/cifar_cpu
