#!/usr/bin/env bash
# Reproduces docs/RESULTS.md §1's CPU numbers: the static ResNet-20 backbone, DDI branched from it, and a static
# ResNet-8 (about a third of the MACs) trained as long as backbone + DDI together, all with one recipe.
#   DDI_DATA=/path/to/cifar10(.tar.gz) bash benchmarks/run_cpu_results.sh [runs_dir] [seed]
# DDI_DATA: a cifar-10-batches-py folder, its .tar.gz, or an image-folder tree / .tar.gz (README, "Data").
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DDI_DATA:?set DDI_DATA to the CIFAR-10 folder or archive}"
RUNS=${1:-runs}
SEED=${2:-0}
SFX=$([ "$SEED" = 0 ] && echo "" || echo "_s$SEED")
train() { /usr/bin/time -f "%e s wall-clock" python -m ddi_tf.train --data_dir="$DDI_DATA" --seed="$SEED" "$@"; }
train --flagfile=configs/cifar_cpu_backbone.flags --workdir="$RUNS/cifar_cpu_backbone$SFX"
train --flagfile=configs/cifar_cpu.flags --init_from="$RUNS/cifar_cpu_backbone$SFX" --workdir="$RUNS/cifar_cpu$SFX"
if [ "${SKIP_SMALL:-0}" != 1 ]; then
  train --flagfile=configs/cifar_cpu_backbone.flags --depth=8 --stage1_steps=7200 \
      --workdir="$RUNS/cifar_cpu_resnet8$SFX"
fi
