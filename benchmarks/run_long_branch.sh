#!/usr/bin/env bash
# Issue 13/14 branches from one bf16 static backbone (configs/cifar_cpu_backbone.flags), each with the CPU recipe
# of configs/cifar_cpu.flags (target 0.5):
#   cifar_cpu_bf16        DDI, the default 1,200 steps
#   cifar_cpu_g16         DDI with --min_group_channels=16 (issue 14 item 4: one group of 16 channels in stage 1,
#                         G = 2 in stage 2, 4 in stage 3; the kernels compute 16 output channels at a time)
#   cifar_cpu_long        DDI for 3x the steps (stage 1/2/3 = 1,200/300/2,100; the cosine over the branch)
#   cifar_cpu_exits_long  exits-only for the same 3,600 steps
# A finished run (its report.json exists) is not retrained. Results: docs/results/report_<run>.json,
# docs/results/long_branch_cpu.* (python -m ddi_tf.compare).
#   DDI_DATA=/path/to/cifar10(.tar.gz) bash benchmarks/run_long_branch.sh [runs_dir]
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DDI_DATA:?set DDI_DATA to the CIFAR-10 folder or archive}"
RUNS=${1:-runs}
CACHE=${DDI_CACHE:+--cache_dir=$DDI_CACHE}
train() { /usr/bin/time -f "%e s wall-clock" python -m ddi_tf.train --data_dir="$DDI_DATA" $CACHE "$@"; }
done_() { [ -f "$1/report.json" ]; }
BB="$RUNS/cifar_cpu_backbone_bf16"
done_ "$BB" || train --flagfile=configs/cifar_cpu_backbone.flags --workdir="$BB"
DDI=(--flagfile=configs/cifar_cpu.flags --init_from="$BB")
done_ "$RUNS/cifar_cpu_bf16" || train "${DDI[@]}" --workdir="$RUNS/cifar_cpu_bf16"
done_ "$RUNS/cifar_cpu_g16" || train "${DDI[@]}" --min_group_channels=16 --workdir="$RUNS/cifar_cpu_g16"
done_ "$RUNS/cifar_cpu_long" || train "${DDI[@]}" --stage1_steps=1200 --stage2_steps=300 --stage3_steps=2100 \
    --workdir="$RUNS/cifar_cpu_long"
done_ "$RUNS/cifar_cpu_exits_long" || train "${DDI[@]}" --gate_type=none --stage1_steps=3600 --stage2_steps=0 \
    --stage3_steps=0 --workdir="$RUNS/cifar_cpu_exits_long"
