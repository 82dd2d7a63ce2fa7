#!/usr/bin/env bash
# The hit@k table of docs/results.md: DeViSE with each loss, MiniLM, both synonym rules and the
# random-vector control, all warm-started from one softmax run and trained alike, then evaluated
# side by side. Usage: bash benchmarks/devise_table.sh DATA_ROOT SOFTMAX_RUN OUT_FOLDER [EPOCHS]
set -euo pipefail
data_root=${1:?data root}; softmax=${2:?softmax run}; out=${3:?output folder}; epochs=${4:-2}
mkdir -p "$out"
common=(--preset cpu --head embedding --data-root "$data_root" --init "$softmax" --epochs "$epochs" --quiet)
train() { name=$1; shift; [ -f "$out/$name/summary.json" ] || devise train "${common[@]}" --out "$out/$name" "$@"; }
train devise-rank --loss rank --label-rule first
train devise-hinge --loss hinge --label-rule first
train devise-cosine --loss cosine --label-rule first
train devise-rank-mean --loss rank --label-rule mean
train devise-minilm --loss rank --vectors minilm --label-rule first
train devise-random --loss rank --random-vectors
devise evaluate "$softmax" "$out"/devise-{rank,hinge,cosine,rank-mean,minilm,random} --quiet \
  --names softmax "DeViSE rank" "DeViSE hinge" "DeViSE cosine" "DeViSE rank, mean rule" "DeViSE MiniLM" \
  "random vectors" --plot "$out/hit_at_k.png"
