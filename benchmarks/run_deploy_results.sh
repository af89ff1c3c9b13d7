#!/usr/bin/env bash
# Reproduces docs/RESULTS.md's deployment numbers from the trained runs of benchmarks/run_cpu_results.sh:
# int8 export (PTQ and QAT), parity, float vs int8 under budgets, the board runtime, and real latency savings.
#   DDI_DATA=/path/to/cifar10(.tar.gz) bash benchmarks/run_deploy_results.sh [runs_dir]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}
: "${DDI_DATA:?set DDI_DATA to the CIFAR-10 folder or archive}"
OUT=docs/results
mkdir -p "$OUT" exports
python -m ddi_tf.data --data_dir="$DDI_DATA" --write_test_npz="$RUNS/test.npz"
# QAT fine-tuning of the trained DDI run (2,000 steps, gate-margin hinge), in a copy of its work directory
if [ ! -f "$RUNS/cifar_cpu_qatm/report.json" ]; then
  rm -rf "$RUNS/cifar_cpu_qatm" && mkdir "$RUNS/cifar_cpu_qatm"
  cp -r "$RUNS"/cifar_cpu/{checkpoints,config.json,flags.txt} "$RUNS/cifar_cpu_qatm/"
  python -m ddi_tf.train --data_dir="$DDI_DATA" --flagfile=configs/cifar_cpu.flags --workdir="$RUNS/cifar_cpu_qatm" \
      --mixed_precision=float32 --qat_steps=2000 --qat_lr=0.001 --gate_margin=1.0 --gate_margin_target=0.5
fi
for run in cifar_cpu cifar_cpu_qatm cifar_cpu_backbone; do
  python -m ddi_tf.export --workdir="$RUNS/$run" --out="exports/$run" --json="$OUT/export_$run.json"
  python -m ddi_tf.parity --workdir="$RUNS/$run" --model_dir="exports/$run" --limit=1000 \
      --json="$OUT/parity_$run.json" > /dev/null
  python micro/verify.py --model_dir="exports/$run" --data="$RUNS/test.npz" --limit=200 --json "$OUT/micro_verify_$run.json"
done
python -m ddi_runtime eval --model_dir=exports/cifar_cpu --data="$RUNS/test.npz" --json="$OUT/runtime_eval_full.json"
for delegate in default none; do
  python benchmarks/runtime_latency.py --ddi=exports/cifar_cpu --static=exports/cifar_cpu_backbone \
      --data="$RUNS/test.npz" --limit=500 --threads=1 --rounds=2 --delegate=$delegate \
      --budget_fractions=0.25,0.4,0.5,0.6,0.8,1.0 --out="$OUT/runtime_latency_$delegate"
done
