#!/usr/bin/env bash
# A careless afternoon, scripted: the real studio window under Xvfb, driven with xdotool for
# SOAK_SECONDS (default 600) with random dataset switches (mnist, fashion, digits8), machine
# switches, locality-slider drags, timeline scrubs, export clicks, machine-zoo runs and the
# compare column turned on and off. Logs the studio's resident memory every 10 s to
# $OUT/rss.csv and prints it after the first run of each machine and at the end (the bound:
# the end within 1.2x of the former). The studio itself logs its frame times and caches once a
# second (`studio --stats`, $OUT/frames.csv); the UI thread's work per frame is printed for the
# first and the last minute of the soak. Screenshots at the start and end. Coordinates are for the default 1440x900 window on a 1600x1000 screen.
# Usage: scripts/soak-studio.sh [path/to/morphogen] [out-dir]
set -euo pipefail
BIN=${1:-target/release/morphogen}
OUT=${2:-/tmp/morphogen-soak}
SECONDS_TOTAL=${SOAK_SECONDS:-600}
mkdir -p "$OUT"
export DISPLAY=${DISPLAY:-:99}
pgrep -x Xvfb >/dev/null || { Xvfb "$DISPLAY" -screen 0 1600x1000x24 >/dev/null 2>&1 & sleep 1; }
HOME_DIR=$(mktemp -d)
rm -f "$OUT/frames.csv"
XDG_RUNTIME_DIR=/tmp HOME=$HOME_DIR "$BIN" studio --fresh --stats "$OUT/frames.csv" >"$OUT/studio.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf "$HOME_DIR"' EXIT
sleep 25
xdotool windowfocus "$(xdotool search --name Morphogen | head -1)"
rss() { awk '/VmRSS/ {print $2 * 1024}' "/proc/$PID/status"; }
mb() { echo $(( $1 / 1000000 )); }
click() { xdotool mousemove "$1" "$2" click 1; }
# The Run section, the zoo and the compare switch sit below the fold of the controls panel.
controls_down() { xdotool mousemove 150 600; for _ in $(seq 30); do xdotool click 5; done; sleep 0.3; }
controls_up() { xdotool mousemove 150 600; for _ in $(seq 30); do xdotool click 4; done; sleep 0.3; }

# The first run of each machine on MNIST (waiting for each to finish).
MACHINES=("15 336" "69 336" "161 336" "263 336" "15 359" "115 359" "210 359" "216 336")
for m in "${MACHINES[@]}"; do click $m; sleep 20; done
WARM=$(rss)
echo "after the first run of each machine: $(mb "$WARM") MB"
import -window root "$OUT/start.png"

DATASETS=(89 112 135)   # mnist, fashion, digits8 in the open dataset list
echo "seconds,rss_bytes" >"$OUT/rss.csv"
START=$(date +%s)
SOAK_FROM=$(tail -1 "$OUT/frames.csv" | cut -d, -f1)
NEXT_LOG=0
while (( $(date +%s) - START < SECONDS_TOTAL )); do
  case $(( RANDOM % 12 )) in
    0) click 107 61; sleep 0.4; click 50 "${DATASETS[$(( RANDOM % 3 ))]}" ;;          # dataset
    1|2) click ${MACHINES[$(( RANDOM % 8 ))]} ;;                                       # machine
    3|4) x=$(( 25 + RANDOM % 90 )); xdotool mousemove 63 485 mousedown 1;             # locality drag
         for i in 1 2 3 4 5; do xdotool mousemove $(( 63 + (x - 63) * i / 5 )) 485; sleep 0.05; done
         xdotool mouseup 1 ;;
    5|6|7) click $(( 360 + RANDOM % 770 )) 699 ;;                                      # scrub
    8) click 1214 266; sleep 0.5; xdotool key Escape ;;                                # export a frame
    9) sleep 2 ;;                                                                      # look
    10) controls_down; click 55 775; sleep 0.5; click 539 134; sleep 4;                # machine zoo
        click 662 77; controls_up ;;
    11) controls_down; click 15 831; sleep 3; controls_up ;;                           # compare on/off
  esac
  sleep 0.$(( 3 + RANDOM % 6 ))
  NOW=$(( $(date +%s) - START ))
  if (( NOW >= NEXT_LOG )); then echo "$NOW,$(rss)" >>"$OUT/rss.csv"; NEXT_LOG=$(( NOW + 10 )); fi
done
# Back to where it began: MNIST, ELS; let it finish.
click 107 61; sleep 0.4; click 50 89; sleep 2; click 216 336; sleep 30
END=$(rss)
import -window root "$OUT/end.png"
echo "after ${SECONDS_TOTAL} s of careless use: $(mb "$END") MB ($(awk -v a="$END" -v b="$WARM" 'BEGIN {printf "%.2f", a / b}')x)"
peak=$(cut -d, -f2 "$OUT/rss.csv" | tail -n +2 | sort -n | tail -1)
echo "peak during the soak: $(mb "$peak") MB; log in $OUT/rss.csv"
# Frame times: the UI thread's work per frame, from the studio's own log, over the soak's first
# and last minute (medians of each second's p50 and p95, and the largest frame).
SOAK_TO=$(tail -1 "$OUT/frames.csv" | cut -d, -f1)
awk -F, -v a="$SOAK_FROM" -v b="$SOAK_TO" 'NR > 1 {
    if ($1 >= a && $1 < a + 60) { s50[++n] = $3; s95[n] = $4; if ($5 > m) m = $5 }
    if ($1 > b - 60) { e50[++k] = $3; e95[k] = $4; if ($5 > mm) mm = $5 }
  }
  function med(v, c,   i, j, t) { for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return v[int((c + 1) / 2)] }
  END {
    printf "UI work per frame, first minute: p50 %.1f ms, p95 %.1f ms, largest %.0f ms (%d s logged)\n", med(s50, n), med(s95, n), m, n
    printf "UI work per frame, last minute:  p50 %.1f ms, p95 %.1f ms, largest %.0f ms (%d s logged)\n", med(e50, k), med(e95, k), mm, k
  }' "$OUT/frames.csv"
