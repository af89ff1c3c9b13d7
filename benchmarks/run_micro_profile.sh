#!/usr/bin/env bash
# Issue 14 item 5: the gates' pooling on TensorFlow Lite Micro's kernels. Exports the --min_group_channels=16 DDI
# branch (runs/cifar_cpu_g16, benchmarks/run_long_branch.sh) twice, gates pooling with MEAN (the default) and with
# one AVERAGE_POOL_2D (--gate_pool=average), and for each: every piece's time on TFLM's kernels
# (python micro/verify.py --profile) and on LiteRT with XNNPACK (python -m ddi_runtime profile), the TFLM check
# on real test images (micro/verify.py) and the float-vs-int8 parity (python -m ddi_tf.parity). A timing
# benchmark: run nothing else beside it.
#   DDI_DATA=/path/to/cifar10(.tar.gz) bash benchmarks/run_micro_profile.sh [runs_dir] [repeats]
# Writes docs/results/latency_tflm_g16_{mean,average}.json, latency_xnnpack_g16_{mean,average}.json,
# micro_verify_g16_{mean,average}.json and parity_g16_{mean,average}.json.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}
REPEATS=${2:-20}
: "${DDI_DATA:?set DDI_DATA to the CIFAR-10 folder or archive}"
OUT=docs/results
[ -f "$RUNS/test.npz" ] || python -m ddi_tf.data --data_dir="$DDI_DATA" --write_test_npz="$RUNS/test.npz"
for pool in mean average; do
  dir=exports/cifar_cpu_g16_$pool
  [ -f "$dir/manifest.json" ] || python -m ddi_tf.export --data_dir="$DDI_DATA" --workdir="$RUNS/cifar_cpu_g16" \
      --out="$dir" --gate_pool=$pool > /dev/null
  python micro/verify.py --model_dir="$dir" --profile --repeats="$REPEATS" --out="$OUT/latency_tflm_g16_$pool.json"
  python -m ddi_runtime profile --model_dir="$dir" --repeats=300 --out="$OUT/latency_xnnpack_g16_$pool.json"
  python micro/verify.py --model_dir="$dir" --data="$RUNS/test.npz" --limit=200 --json="$OUT/micro_verify_g16_$pool.json"
  python -m ddi_tf.parity --workdir="$RUNS/cifar_cpu_g16" --model_dir="$dir" --limit=1000 \
      --json="$OUT/parity_g16_$pool.json" > /dev/null
done
