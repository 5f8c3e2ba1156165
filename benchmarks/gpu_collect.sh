#!/usr/bin/env bash
# GPU session: wait (at most WAIT seconds, default 540) for a run started by gpu_bg.sh,
# then copy its logs to OUT: the train log's tail and eval when done, its learning curves
# (score vs steps and vs wall time) and its run directory without the checkpoint.
# Usage: gpu_collect.sh NAME
set -uo pipefail
[ -n "${1:-}" ] || { echo "usage: gpu_collect.sh NAME" >&2; exit 2; }
OUT=${OUT:-out}; mkdir -p "$OUT"; LEARN=${LEARN:-/root/learn}
name=$1; start=$(date +%s)
while [ ! -e "$LEARN/$name.done" ] && [ $(( $(date +%s) - start )) -lt "${WAIT:-540}" ]; do
  sleep 5
done
{ [ -e "$LEARN/$name.done" ] && echo "== $name: done" || echo "== $name: still running"
  tail -30 "$LEARN/$name.train.txt"; [ -e "$LEARN/$name.eval.txt" ] && cat "$LEARN/$name.eval.txt"
} > "$OUT/$name.txt" 2>&1
python -m rlstm plot "$LEARN/$name" --out "$OUT/${name}_curve.png" >> "$OUT/$name.txt" 2>&1
python -m rlstm plot "$LEARN/$name" --x time --out "$OUT/${name}_curve_time.png" \
  >> "$OUT/$name.txt" 2>&1
tar czf "$OUT/$name.tgz" -C "$LEARN" --exclude='*.pt' "$name" "$name.train.txt" \
  $( [ -e "$LEARN/$name.eval.txt" ] && echo "$name.eval.txt" )
cat "$OUT/$name.txt"
