#!/usr/bin/env bash
# Which DeViSE loss, for hit@k on the trained classes and for zero-shot on the held-out ones?
# Each variant warm-starts from one softmax run trained with --unseen 20 (e.g. the softmax run of
# `devise reproduce --preset cpu`), trains alike, is evaluated, and ranks the 20 held-out labels.
# Prints one line per variant. Usage:
#   bash benchmarks/devise_losses.sh DATA_ROOT SOFTMAX_RUN OUT_FOLDER [EPOCHS]
set -euo pipefail
data_root=${1:?data root}; softmax=${2:?softmax run trained with --unseen 20}; out=${3:?output folder}
epochs=${4:-6}
mkdir -p "$out"
variant() {
  name=$1; shift
  run="$out/$name"
  [ -f "$run/summary.json" ] || devise train --preset cpu --head embedding --init "$softmax" --unseen 20 \
    --data-root "$data_root" --epochs "$epochs" --out "$run" --quiet "$@" > /dev/null
  devise evaluate "$run" --quiet > /dev/null
  devise zeroshot "$run" "$softmax" --target unseen --vocabulary target --out "$run/zs" --quiet > /dev/null
  python - "$run" <<'PY'
import json, sys
run = sys.argv[1]
hits = json.load(open(f"{run}/metrics.json"))
zs = json.load(open(f"{run}/zs/zeroshot.json"))
kinds = {m["kind"]: m for m in zs["models"].values()}
print(f"{run}: hit@1/5/10 " + " / ".join(f"{hits[f'hit@{k}']:.3f}" for k in (1, 5, 10))
      + f" | zero-shot hit@1/5 {kinds['DeViSE']['hit@1']:.3f} / {kinds['DeViSE']['hit@5']:.3f}"
      + f" | lift {kinds['DeViSE']['lift']:+.3f} (softmax {kinds['softmax']['lift']:+.3f})")
PY
}
variant rank --loss rank
variant hinge --loss hinge
variant cosine --loss cosine
variant crossentropy --loss crossentropy --temperature 0.05
variant crossentropy-mlp --loss crossentropy --temperature 0.05 --embed-hidden 512
