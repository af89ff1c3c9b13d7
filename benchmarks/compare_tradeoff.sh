#!/usr/bin/env bash
# Every CPU model side by side (whatever seeds exist): docs/results/tradeoff_cpu.{json,md,png}.
#   bash benchmarks/compare_tradeoff.sh [runs_dir]
# A seed-0 run whose directory is not in runs_dir is taken from its committed report, docs/results/report_<run>.json
# (its config.json is not committed, so its target column shows "-").
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}
seeds() { local out=""
          [ ! -f "$RUNS/$1/report.json" ] && [ -f "docs/results/report_$1.json" ] && out="+docs/results/report_$1.json"
          for d in "$RUNS/$1" "$RUNS/$1"_s*; do [ -f "$d/report.json" ] && out="$out+$d/report.json"; done
          echo "${out#+}"; }
items=""
for pair in "DDI=cifar_cpu" "DDI target 0.3=cifar_cpu_t030" "DDI target 0.7=cifar_cpu_t070" \
            "DDI target 0.3 dual step 0.1=cifar_cpu_t030_dl01" "DDI target 0.5 dual step 0.1=cifar_cpu_t050_dl01" \
            "DDI target 0.7 dual step 0.1=cifar_cpu_t070_dl01" "DDI target 0.7 calibrated=cifar_cpu_t070_cal" \
            "DDI target 0.5 bf16=cifar_cpu_t050_bf16" \
            "static ResNet-20=cifar_cpu_backbone" "static ResNet-20 bf16=cifar_cpu_backbone_bf16" \
            "exits-only=cifar_cpu_exits" "layer-only=cifar_cpu_layer" "static ResNet-8=cifar_cpu_resnet8" \
            "static ResNet-20 half width=cifar_cpu_r20half"; do
  s=$(seeds "${pair#*=}"); [ -n "$s" ] && items="$items,${pair%%=*}=$s"
done
python -m ddi_tf.compare --reports="${items#,}" --static="static ResNet-20" --json=docs/results/tradeoff_cpu.json \
    --out=docs/results/tradeoff_cpu
# Item 7, the exit loss weights, on exits-only branches of the seed-0 backbone (one run each, this machine)
items=""
for pair in "exits 0.5/1 (default)=cifar_cpu_exitsw_default" "exits equal=cifar_cpu_exitsw_equal" \
            "exits growing with depth=cifar_cpu_exitsw_depth" "stage-end exits only=cifar_cpu_exitsw_stage_ends" \
            "static ResNet-20=cifar_cpu_backbone"; do
  s=$(seeds "${pair#*=}"); [ -n "$s" ] && items="$items,${pair%%=*}=$s"
done
python -m ddi_tf.compare --reports="${items#,}" --static="static ResNet-20" --json=docs/results/exit_weights_cpu.json \
    --out=docs/results/exit_weights_cpu
