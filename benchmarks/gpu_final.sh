#!/usr/bin/env bash
# GPU session, last call: CUDA tests, the core benchmark (with its CUDA-graph columns), and
# the Atari benchmark on configs/atari/pong.yaml as is (vs sb3-contrib, one run) and with
# ppo.overlap_update=true at 64 and 128 envs. Wheels: see gpu_speed.sh. OUT holds the logs.
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
log="$OUT/final.txt"
S=${SECONDS_PER_RUN:-20}
nvidia-smi -L | tee "$log"; nproc | tee -a "$log"; date -u | tee -a "$log"
python -m pytest -q -m gpu tests/test_gpu.py tests/test_atari.py -k "not never_syncs" \
  -p no:cacheprovider 2>&1 | tail -15 | tee -a "$log"
python -m rlstm bench core --device cuda --seconds 2 2>&1 | tee -a "$log"
quiet() { grep -v "A.L.E: Arcade\|Powered by Stella\|^$"; }
echo "== atari: configs/atari/pong.yaml as is, vs sb3" | tee -a "$log"
python -m rlstm bench atari --num-envs 64 --seconds $S --device cuda --compare sb3 \
  --json "$OUT/atari_64.json" 2>&1 | quiet | tee -a "$log"
for B in 64 128; do
  echo "== atari: $B envs, ppo.overlap_update=true" | tee -a "$log"
  python -m rlstm bench atari --num-envs $B --seconds $S --device cuda \
    --set ppo.overlap_update=true --json "$OUT/atari_${B}_overlap.json" 2>&1 | quiet | tee -a "$log"
done
date -u | tee -a "$log"
