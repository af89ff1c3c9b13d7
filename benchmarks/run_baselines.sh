#!/usr/bin/env bash
# The baselines of docs/RESULTS.md §1, branched from the same static backbone as DDI (benchmarks/run_cpu_results.sh
# trains it) with the same recipe and the same 1,200 steps (configs/cifar_cpu.flags):
#   exits only  (anytime ResNet-20, MSDNet-style halting: no gates, the same 6 exits as DDI; 1,200 steps of stage 1)
#   layer only  (SkipNet-style: gates choose skip or the whole block, G = 1; the same exits and stages as DDI)
# then every model side by side: docs/results/tradeoff_cpu.{json,md,png}.
#   DDI_DATA=/path/to/cifar10(.tar.gz) bash benchmarks/run_baselines.sh [runs_dir] [seed]
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DDI_DATA:?set DDI_DATA to the CIFAR-10 folder or archive}"
RUNS=${1:-runs}
SEED=${2:-0}
SFX=$([ "$SEED" = 0 ] && echo "" || echo "_s$SEED")
train() { /usr/bin/time -f "%e s wall-clock" python -m ddi_tf.train --data_dir="$DDI_DATA" --seed="$SEED" "$@"; }
train --flagfile=configs/cifar_cpu.flags --init_from="$RUNS/cifar_cpu_backbone$SFX" --gate_type=none \
    --stage1_steps=1200 --stage2_steps=0 --stage3_steps=0 --workdir="$RUNS/cifar_cpu_exits$SFX"
train --flagfile=configs/cifar_cpu.flags --init_from="$RUNS/cifar_cpu_backbone$SFX" --groups=1 \
    --workdir="$RUNS/cifar_cpu_layer$SFX"
