#!/usr/bin/env bash
# The shipped model (models/cifar10_resnet20_ddi) and its deployment numbers (docs/RESULTS.md §2): QAT of the
# seed-0 DDI target-0.5 run (2,000 steps, no gate margin), int8 export, parity, TFLite Micro, the board runtime.
#   DDI_DATA=/path/to/cifar10(.tar.gz) bash benchmarks/run_deploy_t050.sh [runs_dir]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}
: "${DDI_DATA:?set DDI_DATA to the CIFAR-10 folder or archive}"
OUT=docs/results
R="$RUNS/cifar_cpu_t050_qat"
E=exports/cifar_cpu_t050_qat
if [ ! -d "$R" ]; then
  mkdir "$R" && cp -r "$RUNS"/cifar_cpu_t050_dl01/{checkpoints,config.json,flags.txt} "$R/"
fi
python -m ddi_tf.train --data_dir="$DDI_DATA" --flagfile=configs/cifar_cpu.flags  \
    --target_cost=0.5 --workdir="$R" --mixed_precision=float32 --qat_steps=2000 --qat_lr=0.001
python -m ddi_tf.data --data_dir="$DDI_DATA" --write_test_npz="$RUNS/test.npz"
python -m ddi_tf.export --workdir="$R" --out="$E" --json="$OUT/export_cifar_cpu_t050_qat.json"
python -m ddi_tf.parity --workdir="$R" --model_dir="$E" --limit=1000 --json="$OUT/parity_cifar_cpu_t050_qat.json" > /dev/null
python micro/verify.py --model_dir="$E" --data="$RUNS/test.npz" --limit=200 --json "$OUT/micro_verify_cifar_cpu_t050_qat.json"
python -m ddi_runtime eval --model_dir="$E" --data="$RUNS/test.npz" --json="$OUT/runtime_eval_cifar_cpu_t050_qat.json"
