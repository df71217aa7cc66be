#!/usr/bin/env bash
# The README's "Grow and paint" pictures, from the command line alone (release binary, CPU):
#   screenshots/grow-textures-3x.png   a 96x96 canvas grown from the 32x32 textures
#   screenshots/grow-painted-map.png   MNIST with the left half local (x1/3) and the right global (x3)
#   screenshots/grow-wound.png         a wound (fresh noise at step 6) healing, beside the unedited run
#   screenshots/grow-cnn-els-2x.png    the CNN and ELS on a 56x56 canvas from the same noise, with r
# Needs python3 with numpy (for the map and r) and ImageMagick (convert, montage).
# Usage: scripts/grow-pictures.sh [path/to/morphogen]   (about 15 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/morphogen}
OUT=screenshots
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}

# 1. Textures on a canvas three times their side.
"$BIN" sample --dataset textures --canvas 96x96 --seed 2 --device cpu --out-dir "$WORK/tex" \
  --sheet "$WORK/tex.png" --scale 3
install -m 644 "$WORK/tex.png" "$OUT/grow-textures-3x.png"

# 2. A painted locality map: left half local, right half global.
python3 - "$WORK" <<'EOF'
import sys, numpy as np
m = np.ones((28, 28), np.float32); m[:, :14] = 1 / 3; m[:, 14:] = 3
np.save(sys.argv[1] + "/map.npy", m)
EOF
"$BIN" sample --locality-map "$WORK/map.npy" --seed 5 --device cpu --out-dir "$WORK/map" --sheet "$WORK/map.png"
"$BIN" sample --seed 5 --device cpu --out-dir "$WORK/plain" --sheet "$WORK/plain.png"
montage -label 'painted: left x1/3 (local), right x3 (global)' "$WORK/map.png" \
  -label 'the same seed, unpainted' "$WORK/plain.png" -tile 1x -geometry +0+6 -background '#1b1b1b' \
  -fill white "$OUT/grow-painted-map.png"

# 3. A wound at step 6 (of 20) heals: the run regrows from fresh noise in a 12x12 square.
convert -size 28x28 xc:black -fill white -draw "rectangle 8,8 19,19" "$WORK/mask.png"
echo '{"edits": [{"step": 6, "op": "noise", "seed": 1, "mask": "mask.png"}]}' > "$WORK/edits.json"
"$BIN" sample --edit "$WORK/edits.json" --seed 0 --device cpu --out-dir "$WORK/wound" \
  --sheet "$WORK/wound.png" --sheet-count 10
"$BIN" sample --seed 0 --device cpu --out-dir "$WORK/unwound" --sheet "$WORK/unwound.png" --sheet-count 10
montage -label 'wounded at step 6 (fresh noise in the centre square)' "$WORK/wound.png" \
  -label 'unedited' "$WORK/unwound.png" -tile 1x -geometry +0+6 -background '#1b1b1b' -fill white \
  "$OUT/grow-wound.png"

# 4. The CNN and ELS on a canvas twice the training side, from the same noise.
"$BIN" sample --machine cnn --canvas 56x56 --seed 3 --device cpu --out-dir "$WORK/cnn"
"$BIN" sample --machine els --canvas 56x56 --seed 3 --device cpu --out-dir "$WORK/els"
R=$(python3 - "$WORK" <<'EOF'
import sys, numpy as np
def last(d):
    a = np.load(f"{sys.argv[1]}/{d}/trajectory_x0.npy"); return a[-1].ravel()
u, v = last("cnn"), last("els"); u, v = u - u.mean(), v - v.mean()
print(f"{u @ v / np.sqrt((u @ u) * (v @ v)):.3f}")
EOF
)
for m in cnn els; do convert "$WORK/$m/final.png" -filter point -resize 336x336 "$WORK/$m-big.png"; done
montage -pointsize 18 -label 'CNN (fully convolutional)' "$WORK/cnn-big.png" -label 'ELS (closed form)' "$WORK/els-big.png" \
  -tile 2x -geometry +10+8 -background '#1b1b1b' -fill white "$WORK/pair.png"
convert "$WORK/pair.png" -gravity north -background '#1b1b1b' -splice 0x34 -fill white -pointsize 18 \
  -annotate +0+8 "56x56 canvas grown from 28x28 digits, same noise (seed 3): r = $R" "$OUT/grow-cnn-els-2x.png"
echo "r(CNN, ELS) on 56x56, seed 3: $R"
