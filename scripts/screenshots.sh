#!/usr/bin/env bash
# Runs the real studio under Xvfb and writes screenshots/studio.png (MNIST) and
# screenshots/studio-emoji.png (a colour set). Needs root for apt-get the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
need=(Xvfb import xdotool)
for tool in "${need[@]}"; do
  if ! command -v "$tool" >/dev/null; then
    apt-get update -qq && apt-get install -y -qq xvfb xauth mesa-vulkan-drivers libgl1-mesa-dri libegl1 imagemagick xdotool >/dev/null
    break
  fi
done
# MORPHOGEN_BIN=path/to/morphogen skips the release build (e.g. to use a dev build).
bin=${MORPHOGEN_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release
  bin="${CARGO_TARGET_DIR:-target}/release/morphogen"
fi
display=:99
Xvfb $display -screen 0 1600x1000x24 >/dev/null 2>&1 &
xvfb=$!
trap 'kill $xvfb 2>/dev/null || true' EXIT
sleep 1
shoot() { # dataset, output, seconds to wait
  local home; home=$(mktemp -d)
  HOME=$home XDG_DATA_HOME=$home DISPLAY=$display "$bin" studio --fresh --dataset "$1" &
  local app=$!
  sleep "$3"
  DISPLAY=$display xdotool search --name Morphogen windowsize 1600 1000 >/dev/null 2>&1 || true
  sleep 2
  # click a pixel of x̂₀ so the inspector shows the training patches behind it
  DISPLAY=$display xdotool mousemove 790 360 click 1 >/dev/null 2>&1 || true
  sleep 4
  DISPLAY=$display import -window root "$2"
  kill $app 2>/dev/null || true
  wait $app 2>/dev/null || true
  echo "wrote $2"
}
shoot mnist screenshots/studio.png "${WAIT_MNIST:-40}"
shoot emoji screenshots/studio-emoji.png "${WAIT_EMOJI:-60}"
