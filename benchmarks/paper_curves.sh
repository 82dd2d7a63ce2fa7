#!/usr/bin/env bash
# The paper's Figures 2-4 from our own runs: the plain CNN (the paper's style) with no
# regularisation, with dropout 0.5, and with dropout 0.4 + augmentation, then one overlay.
# Usage: bash benchmarks/paper_curves.sh DATA_ROOT OUT_FOLDER [EPOCHS]
set -euo pipefail
data_root=${1:?data root}; out=${2:?output folder}; epochs=${3:-6}
common=(--data tiny-imagenet --data-root "$data_root" --body cnn --width 32 --hidden 512 --image-size 32
        --epochs "$epochs" --optimizer adam --lr 1e-3 --weight-decay 0 --schedule step --step-epochs 4
        --step-gamma 0.3 --quiet)
run() { name=$1; shift; [ -f "$out/$name/summary.json" ] || devise train "${common[@]}" --out "$out/$name" "$@"; }
run no-regularisation --dropout 0 --crop-padding 0 --no-flip
run dropout --dropout 0.5 --crop-padding 0 --no-flip
run dropout-augmentation --dropout 0.4 --crop-padding 4 --flip --jitter 0.2
devise curves "$out"/{no-regularisation,dropout,dropout-augmentation} --out "$out/paper_figures_2_4.png" \
  --names "no regularisation" "dropout 0.5" "dropout 0.4 + augmentation" --title "plain CNN on Tiny ImageNet, 32 px"
