#!/usr/bin/env bash
# GPU session: start a learning run in the background, then evaluate it (sampled actions,
# EVAL_EPISODES, default 16). setsid: the run outlives the device call that starts it while
# the machine stays held; benchmarks/gpu_collect.sh waits for it and gathers its logs.
# Usage: gpu_bg.sh NAME CONFIG [overrides...]; the run lives in $LEARN/NAME (default
# /root/learn, outside the repo: its checkpoint is too big to come back through OUT).
set -uo pipefail
[ -n "${1:-}" ] || { echo "usage: gpu_bg.sh NAME CONFIG [overrides...]" >&2; exit 2; }
LEARN=${LEARN:-/root/learn}; mkdir -p "$LEARN"
name=$1; shift
if [ "${_RLSTM_BG_JOB:-}" != 1 ]; then
  rm -rf "${LEARN:?}/$name" "$LEARN/$name".*
  _RLSTM_BG_JOB=1 setsid nohup bash "$0" "$name" "$@" > /dev/null 2>&1 < /dev/null &
  sleep 30; tail -3 "$LEARN/$name.train.txt"; exit 0
fi
python -m rlstm train "$@" run.device="${DEVICE:-cuda}" run.progress=false \
  run.out_dir="$LEARN" run.run_name="$name" > "$LEARN/$name.train.txt" 2>&1
python -m rlstm eval "$LEARN/$name" --episodes "${EVAL_EPISODES:-16}" --device "${DEVICE:-cuda}" \
  > "$LEARN/$name.eval.txt" 2>&1
touch "$LEARN/$name.done"
