#!/usr/bin/env bash
# GPU session: rlstm vs sb3-contrib on Pong with sb3 at the sb3 zoo's 8 envs, the issue's
# ">= 25x" comparison. rlstm runs configs/atari/pong.yaml as is (two env groups, the
# overlapped update) at 256 and 128 envs, each twice, alternating, so that the machine's
# drift shows (BATCHES: the env counts in order). Measured (ninth session): ~2.5-3 min per
# run at 20 s, mostly sb3's start-up, so three runs fit one 10-min device call, not four
# (BATCHES="256 128 256"). Wheels: see gpu_speed.sh. OUT holds the logs.
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
log="$OUT/sb3.txt"
S=${SECONDS_PER_RUN:-20}
quiet() { grep -v "A.L.E: Arcade\|Powered by Stella\|^$"; }
nvidia-smi -L | tee "$log"; nproc | tee -a "$log"; date -u | tee -a "$log"
i=0
for B in ${BATCHES:-256 128 256 128}; do
  i=$((i + 1))
  echo "== atari: rlstm with $B envs vs sb3-contrib with 8 (run $i)" | tee -a "$log"
  python -m rlstm bench atari --num-envs $B --seconds $S --device cuda --compare sb3 \
    --sb3-envs 8 --json "$OUT/atari_${B}_sb3_8_$i.json" 2>&1 | quiet | tee -a "$log"
done
date -u | tee -a "$log"
