#!/usr/bin/env bash
# Issue 7's ablations with the CPU recipe of configs/cifar_cpu.flags (ResNet-20, 6 exits, 7,000 steps):
#   cost the gates are trained against: MACs / energy (the documented energy model) / latency (the per-piece
#     table measured on this CPU by `python -m ddi_runtime profile`, docs/results/latency_cifar_cpu_builtin.json);
#   gate kind: ff / rnn (shared LSTM, SkipNet's recurrent gate);
#   channel groups: G = 1 (layer-only baseline, benchmarks/run_baselines.sh) / 2 / 4, and G = 4 with groups of at
#     least 16 channels (--min_group_channels=16: skip/full in stage 1, G = 2 in stage 2, 4 in stage 3; its
#     stage-1 backbone's groups merged with --init_from).
# The cost and gate-kind variants share one stage-1 backbone (stage 1 trains backbone and exits with the gates
# forced; it does not depend on the cost or the gate kind): the stage-1 run is copied and each copy resumes
# into its own stages 2-3 (the rnn gates start from it with --init_from). G = 2 is a separate backbone.
# A run that already has its report.json is not rerun. Then one plot and one table.
#   DDI_DATA=/path/to/cifar10(.tar.gz) bash benchmarks/run_ablations.sh [runs_dir]
# The committed ablation results (RESULTS §5) were made with the recipe before issue 13 (7,000 steps from
# scratch, configs/cifar_cpu.flags of commit 602ddfb); with today's configs/cifar_cpu.flags every variant branches
# from the static backbone instead.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}
: "${DDI_DATA:?set DDI_DATA to the CIFAR-10 folder or archive}"
FLAGS=configs/cifar_cpu.flags
LATENCY=docs/results/latency_cifar_cpu_builtin.json
done_() { [ -f "$1/report.json" ]; }

done_ "$RUNS/abl_stage1" || python -m ddi_tf.train --data_dir="$DDI_DATA" --flagfile=$FLAGS --stage2_steps=0 --stage3_steps=0 \
    --workdir="$RUNS/abl_stage1"
for cost in latency macs energy; do
  branch="$RUNS/abl_$cost"
  done_ "$branch" && continue
  [ -d "$branch" ] || cp -r "$RUNS/abl_stage1" "$branch"
  python -m ddi_tf.train --data_dir="$DDI_DATA" --flagfile=$FLAGS --cost=$cost --latency_table=$LATENCY --workdir="$branch"
done
done_ "$RUNS/abl_g2" || python -m ddi_tf.train --data_dir="$DDI_DATA" --flagfile=$FLAGS --groups=2 --workdir="$RUNS/abl_g2"
done_ "$RUNS/abl_rnn" || python -m ddi_tf.train --data_dir="$DDI_DATA" --flagfile=$FLAGS --gate_type=rnn --init_from="$RUNS/abl_stage1" \
    --stage1_steps=0 --workdir="$RUNS/abl_rnn"
done_ "$RUNS/abl_g16" || python -m ddi_tf.train --data_dir="$DDI_DATA" --flagfile=$FLAGS --min_group_channels=16 \
    --init_from="$RUNS/abl_stage1" --stage1_steps=0 --workdir="$RUNS/abl_g16"
reports="G4 ff MACs-trained=$RUNS/abl_macs/report.json,G4 ff energy-trained=$RUNS/abl_energy/report.json"
reports="$reports,G4 ff latency-trained=$RUNS/abl_latency/report.json,G2 ff MACs-trained=$RUNS/abl_g2/report.json"
reports="$reports,G4 rnn MACs-trained=$RUNS/abl_rnn/report.json,G1 layer-only=$RUNS/cifar_cpu_layer/report.json"
reports="$reports,G4 16-channel groups MACs-trained=$RUNS/abl_g16/report.json"
python -m ddi_tf.compare --reports="$reports" --out=docs/results/ablations_cpu
# int8 (PTQ) and measured batch-1 latency of the cost-targeted branches and of the 16-channel groups, each side
# by side with the static int8 backbone in one run (builtin kernels, 1 thread, exits also deferred); outputs
# already present are not redone.
[ -f "$RUNS/test.npz" ] || python -m ddi_tf.data --data_dir="$DDI_DATA" \
    --write_test_npz="$RUNS/test.npz"
for cost in latency macs energy g16; do
  [ -f "exports/abl_$cost/manifest.json" ] || python -m ddi_tf.export --workdir="$RUNS/abl_$cost" \
      --out="exports/abl_$cost" --json="docs/results/export_abl_$cost.json"
  [ -f "docs/results/latency_abl_$cost.json" ] || python benchmarks/runtime_latency.py --ddi="exports/abl_$cost" \
      --static=exports/cifar_cpu_static --data="$RUNS/test.npz" --limit=500 --threads=1 --rounds=2 --delegate=none \
      --budget_fractions=0.25,0.4,0.5,0.6,0.8,1.0 --defer_exits --out="docs/results/latency_abl_$cost"
done
# The 16-channel groups with the QAT stage of section 2 (a copy of the finished float run, extended), exported with
# the QAT ranges, benchmarked as above (twice: the ratios move by a few hundredths between runs) and its parity.
if [ ! -f "$RUNS/abl_g16_qat/report.json" ]; then
  rm -rf "$RUNS/abl_g16_qat" && mkdir "$RUNS/abl_g16_qat"
  cp -r "$RUNS"/abl_g16/{checkpoints,config.json,flags.txt} "$RUNS/abl_g16_qat/"
  python -m ddi_tf.train --data_dir="$DDI_DATA" --flagfile=$FLAGS --min_group_channels=16 --init_from="$RUNS/abl_stage1" --stage1_steps=0 \
      --workdir="$RUNS/abl_g16_qat" --mixed_precision=float32 --qat_steps=2000 --qat_lr=0.001 --gate_margin=1.0 --gate_margin_target=0.5
fi
[ -f exports/abl_g16_qat/manifest.json ] || python -m ddi_tf.export --workdir="$RUNS/abl_g16_qat" \
    --out=exports/abl_g16_qat --json=docs/results/export_abl_g16_qat.json
for suffix in "" _run2; do
  [ -f "docs/results/latency_abl_g16_qat$suffix.json" ] || python benchmarks/runtime_latency.py \
      --ddi=exports/abl_g16_qat --static=exports/cifar_cpu_static --data="$RUNS/test.npz" --limit=500 --threads=1 \
      --rounds=2 --delegate=none --budget_fractions=0.25,0.4,0.5,0.6,0.8,1.0 --defer_exits \
      --out="docs/results/latency_abl_g16_qat$suffix"
done
[ -f docs/results/parity_abl_g16_qat.json ] || python -m ddi_tf.parity --workdir="$RUNS/abl_g16_qat" \
    --model_dir=exports/abl_g16_qat --json=docs/results/parity_abl_g16_qat.json
