#!/usr/bin/env bash
# SHA-256 of everything a fixed set of CLI runs writes, one line per file: run it with two
# builds and `diff` the lists to show that a change left every output byte-identical.
#
#   scripts/output-digest.sh path/to/morphogen OUTDIR > digest.txt
#
# The runs cover every machine (sample with --maps, denoise, inspect), both boundaries, gray
# and RGB sets, the default MNIST patch schedule (key banks, direct groups and the Local
# shortcut all in play), the shipped CNN, a recipe replay and the exports. All on the CPU.
set -euo pipefail
bin=$(realpath "$1")
out=$2
root=$(cd "$(dirname "$0")/.." && pwd)
fx="$root/tests/fixtures"
rm -rf "$out"
mkdir -p "$out"
cd "$out"
export XDG_RUNTIME_DIR=/tmp
run() { "$bin" "$@" >/dev/null 2>stderr.txt || { cat stderr.txt >&2; exit 1; }; }

for m in ideal equivariant local els gaussian pspc pca-locality; do
  run sample --dataset digits8 --subset 60 --steps 6 --patch 3 --seed 4 --machine "$m" --maps \
    --device cpu --out-dir "digits8-$m"
done
run sample --dataset digits8 --subset 60 --steps 6 --patch 5 --seed 4 --machine els --boundary circular \
  --maps --device cpu --out-dir digits8-els-circular
run sample --dataset mnist --subset 200 --steps 8 --seed 2 --machine els --maps --device cpu --out-dir mnist-els
run sample --dataset mnist --subset 200 --steps 6 --seed 3 --machine local --patch 27 --device cpu \
  --out-dir mnist-local-27
run sample --dataset mnist --subset 100 --steps 4 --seed 1 --machine cnn --maps --device cpu --out-dir mnist-cnn
run sample --dataset emoji --subset 40 --steps 4 --patch 5 --seed 5 --machine els --maps --device cpu \
  --out-dir emoji-els
run sample --recipe mnist-els/recipe.json --out-dir mnist-els-replay
run export --run digits8-els --view both --scale 4 --gif digits8-els.gif --apng digits8-els.apng \
  --sheet digits8-els-sheet.png

train="$fx/emoji8_16px_train.npy"
x="$fx/emoji8_16px_t0.2_P3_near_x.npy"
for m in ideal equivariant local els gaussian pspc pca-locality; do
  run denoise --dataset "$train" --input "$x" --t 0.2 --machine "$m" --patch 3 --device cpu \
    --out "denoise-$m.npy"
  "$bin" inspect --dataset "$train" --input "$x" --t 0.2 --machine "$m" --patch 3 --pixel 5,9 --top 8 \
    >"inspect-$m.json" 2>stderr.txt || { cat stderr.txt >&2; exit 1; }
done
rm -f stderr.txt
find . -type f | LC_ALL=C sort | xargs sha256sum
