#!/usr/bin/env bash
# GPU session: CUDA tests, then where the time goes: the end-to-end memory run (summary with
# its time split) and benchmarks/profile_iteration.py on RepeatPreviousEasy (65,536 envs) and
# Pong (64 and 128 envs), each with update variants (MINIBATCHES:BPTT_LEN). OUT holds logs.
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
log="$OUT/profile.txt"
nvidia-smi -L | tee "$log"; nproc | tee -a "$log"; date -u | tee -a "$log"
python -m pytest -q -m gpu tests/test_gpu.py tests/test_atari.py -k "not never_syncs" \
  -p no:cacheprovider 2>&1 | tail -15 | tee -a "$log"
echo "== e2e RepeatPreviousEasy B=65536 T=32 L=16 mb=4 epochs=4" | tee -a "$log"
python -m rlstm train configs/memory/repeat_previous_easy.yaml env.num_envs=65536 \
  ppo.num_steps=32 ppo.bptt_len=16 ppo.num_minibatches=4 ppo.update_epochs=4 \
  ppo.total_timesteps=1000000000 run.device=cuda run.time_limit=20 run.progress=false \
  run.out_dir=/tmp/runs run.run_name=e2e > /dev/null 2>&1
cat /tmp/runs/e2e/summary.json | tee -a "$log"
echo "== profile RepeatPreviousEasy B=65536" | tee -a "$log"
python benchmarks/profile_iteration.py configs/memory/repeat_previous_easy.yaml \
  env.num_envs=65536 ppo.num_steps=32 ppo.bptt_len=16 ppo.num_minibatches=4 \
  ppo.update_epochs=4 run.device=cuda --variants 1:16 2:16 4:32 2>&1 | tee -a "$log"
for B in 64 128; do
  echo "== profile Pong B=$B" | tee -a "$log"
  python benchmarks/profile_iteration.py configs/atari/pong.yaml env.num_envs=$B \
    run.device=cuda run.torch_threads=1 --trace "$OUT/pong_$B.json" \
    --variants 8:32 4:32 2:32 4:64 4:128 16:128 2>&1 | tee -a "$log"
done
gzip -f "$OUT"/*.json; date -u | tee -a "$log"
