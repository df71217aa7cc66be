#!/usr/bin/env bash
# The GPU checks and benchmark, for a machine with a GPU that reaches no package registry:
# nothing is built there. Bring a release binary built beforehand and the Vulkan loader .debs.
#
#   here:   cargo build --release && scripts/gpu-bench.sh --bundle      # fills gpu-bundle/ and .gl/
#   there:  scripts/gpu-bench.sh OUT_DIR [--quick]                       # writes results to OUT_DIR
#
# --bundle strips the release binary into gpu-bundle/morphogen (xz-compressed when over 60 MB)
# and downloads the x86-64 Vulkan/EGL loader .debs into .gl/ (both ignored by git; the device
# tool carries them with `carry: ["gpu-bundle", ".gl"]`).
# OUT_DIR receives golden.txt (every single-call fixture through the GPU path, checked by
# scripts/check_fixtures.py), bench.json and bench.log (`morphogen bench --device gpu --json`),
# bench-no-merge.json (the P = 3 rows with every key kept, to show what merging saves),
# and device.txt. --quick runs a small bench (for a software adapter such as lavapipe, where
# the full one takes hours) and only the MNIST fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--bundle" ]; then
  target=${CARGO_TARGET_DIR:-target}
  mkdir -p gpu-bundle .gl
  strip -o gpu-bundle/morphogen "$target/release/morphogen"
  size=$(stat -c %s gpu-bundle/morphogen)
  if [ "$size" -gt $((60 << 20)) ]; then
    xz -T0 -6 -f gpu-bundle/morphogen
  fi
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  mkdir -p /tmp/amd64/partial
  # shellcheck disable=SC2086
  apt-get $o update -qq
  # shellcheck disable=SC2086
  (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 >/dev/null)
  ls -l gpu-bundle .gl
  exit 0
fi

out=${1:?usage: scripts/gpu-bench.sh OUT_DIR [--quick] | --bundle}
quick=${2:-}
mkdir -p "$out"
if ! ldconfig -p | grep -q libvulkan && ls .gl/*.deb >/dev/null 2>&1; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
bin=gpu-bundle/morphogen
if [ -f "$bin.xz" ]; then
  xz -dc "$bin.xz" > /tmp/morphogen && chmod +x /tmp/morphogen && bin=/tmp/morphogen
elif [ ! -x "$bin" ]; then
  bin=${MORPHOGEN_BIN:-target/release/morphogen}
fi
{ "$bin" --version; nvidia-smi -L 2>/dev/null || true; } > "$out/device.txt"

status=0
if [ "$quick" = "--quick" ]; then
  python3 scripts/check_fixtures.py "$bin" tests/fixtures gpu manifest.json mnist12 2>&1 | tee "$out/golden.txt" || status=1
  "$bin" bench --device gpu --json --only P3 --n 200 --n-rgb 100 --reps 1 > "$out/bench.json" 2> "$out/bench.log" || status=1
else
  python3 scripts/check_fixtures.py "$bin" tests/fixtures gpu 2>&1 | tee "$out/golden.txt" || status=1
  python3 scripts/check_fixtures.py "$bin" tests/fixtures gpu manifest_extremes.json 2>&1 | tee -a "$out/golden.txt" || status=1
  python3 scripts/check_fixtures.py "$bin" tests/fixtures gpu manifest_machines.json 2>&1 | tee -a "$out/golden.txt" || status=1
  # MNIST N = 2000 and RGB 32×32 N = 5000, then MNIST at the paper's N = 10000.
  "$bin" bench --device gpu --json --n 2000 --n-rgb 5000 > "$out/bench.json" 2> "$out/bench.log" || status=1
  "$bin" bench --device gpu --json --n 10000 --only 28x28-gray > "$out/bench-n10000.json" 2>> "$out/bench.log" || status=1
  # What merging repeated keys saves on this GPU: the P = 3 rows again with every key kept.
  "$bin" bench --device gpu --json --n 2000 --only gray-P3 --no-merge > "$out/bench-no-merge.json" 2>> "$out/bench.log" || status=1
fi
cat "$out/bench.log" "$out"/bench*.json
exit $status
