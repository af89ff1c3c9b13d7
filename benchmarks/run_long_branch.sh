#!/usr/bin/env bash
# Issue 13: does a longer branch close DDI's gap? DDI (target 0.5) and the exits-only baseline branched from one
# bf16 static backbone (configs/cifar_cpu_backbone.flags) for 3x the default 1,200 steps (stage 1/2/3 =
# 1,200/300/2,100 for DDI, 3,600 of stage 1 for exits-only; the same recipe, the cosine over the branch), beside
# the default-length DDI from the same backbone. Results: docs/results/report_<run>.json and
# docs/results/long_branch_cpu.{json,md,png} (python -m ddi_tf.compare).
#   DDI_DATA=/path/to/cifar10(.tar.gz) bash benchmarks/run_long_branch.sh [runs_dir]
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DDI_DATA:?set DDI_DATA to the CIFAR-10 folder or archive}"
RUNS=${1:-runs}
CACHE=${DDI_CACHE:+--cache_dir=$DDI_CACHE}
train() { /usr/bin/time -f "%e s wall-clock" python -m ddi_tf.train --data_dir="$DDI_DATA" $CACHE "$@"; }
BB="$RUNS/cifar_cpu_backbone_bf16"
train --flagfile=configs/cifar_cpu_backbone.flags --workdir="$BB"
train --flagfile=configs/cifar_cpu.flags --init_from="$BB" --workdir="$RUNS/cifar_cpu_bf16"
train --flagfile=configs/cifar_cpu.flags --init_from="$BB" --stage1_steps=1200 --stage2_steps=300 \
    --stage3_steps=2100 --workdir="$RUNS/cifar_cpu_long"
train --flagfile=configs/cifar_cpu.flags --init_from="$BB" --gate_type=none --stage1_steps=3600 --stage2_steps=0 \
    --stage3_steps=0 --workdir="$RUNS/cifar_cpu_exits_long"
