#!/usr/bin/env bash
# The controllability check of docs/RESULTS.md §1: DDI branched three times from one static backbone (the one
# benchmarks/run_cpu_results.sh trains) with --target_cost 0.3, 0.5 and 0.7 and nothing else changed; the
# learned-gates path's mean cost on the test split should land within 0.05 of each target.
#   DDI_DATA=/path/to/cifar10(.tar.gz) bash benchmarks/run_targets.sh [runs_dir] [seed] [targets...]
# Each target's run goes to runs/cifar_cpu_t030 etc. (target 0.5 with no DDI_EXTRA is configs/cifar_cpu.flags itself).
# DDI_EXTRA adds training flags and DDI_TAG a suffix to the run names. The runs of RESULTS §1 (the config's
# multiplier step 0.1, every target, named as they were when 0.01 was the default):
#   DDI_EXTRA=--cost_dual_lr=0.1 DDI_TAG=_dl01 DDI_DATA=... bash benchmarks/run_targets.sh runs 0 0.3 0.5 0.7
# and the step-0.01 runs: DDI_EXTRA=--cost_dual_lr=0.01 DDI_DATA=... bash benchmarks/run_targets.sh runs 0 0.3
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DDI_DATA:?set DDI_DATA to the CIFAR-10 folder or archive}"
RUNS=${1:-runs}
SEED=${2:-0}
shift $(( $# < 2 ? $# : 2 ))
TARGETS=${*:-0.3 0.7}
SFX=$([ "$SEED" = 0 ] && echo "" || echo "_s$SEED")
train() { /usr/bin/time -f "%e s wall-clock" python -m ddi_tf.train --data_dir="$DDI_DATA" --seed="$SEED" "$@"; }
for t in $TARGETS; do
  name=$(printf 't%03d' "$(python -c "print(round($t * 100))")")
  # shellcheck disable=SC2086  # DDI_EXTRA: several flags, split on spaces
  train --flagfile=configs/cifar_cpu.flags --init_from="$RUNS/cifar_cpu_backbone$SFX" --target_cost="$t" \
      ${DDI_EXTRA:-} --workdir="$RUNS/cifar_cpu_$name${DDI_TAG:-}$SFX"
done
