#!/usr/bin/env bash
# GPU session, part 1: CUDA tests, core / memory-env / end-to-end memory speed, the Atari
# emulator-vs-training benchmark (with sb3-contrib), then Pong learning in the background
# (setsid: it outlives this command while the machine stays held; gpu_learning.sh collects
# it). ale-py, gymnasium, stable-baselines3 and sb3-contrib travel as wheels in .whl/ (see
# the device tool's README); PYTHONPATH points at the unpacked wheels. OUT holds the logs.
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"; LEARN=${LEARN:-/root/learn}; mkdir -p "$LEARN"
log="$OUT/speed.txt"
nvidia-smi -L | tee "$log"; nproc | tee -a "$log"; date -u | tee -a "$log"
python -m pytest -q -m gpu tests/test_gpu.py tests/test_atari.py -k "not never_syncs" \
  -p no:cacheprovider 2>&1 | tail -15 | tee -a "$log"
python -m rlstm bench core --device cuda --seconds 2 2>&1 | tee -a "$log"
for B in 16384 65536; do
  echo "== e2e RepeatPreviousEasy B=$B T=32 L=16 mb=4 epochs=4" | tee -a "$log"
  python -m rlstm train configs/memory/repeat_previous_easy.yaml env.num_envs=$B \
    ppo.num_steps=32 ppo.bptt_len=16 ppo.num_minibatches=4 ppo.update_epochs=4 \
    ppo.total_timesteps=1000000000 run.device=cuda run.time_limit=20 run.progress=false \
    run.out_dir=/tmp/runs run.run_name=e2e_$B > /dev/null 2>&1
  cat /tmp/runs/e2e_$B/summary.json | tee -a "$log"  # steps/s (also after warm-up), seconds by phase
done
echo "== atari: configs/atari/pong.yaml as is (2 groups, CUDA graph, bf16 CNN), vs sb3" | tee -a "$log"
python -m rlstm bench atari --num-envs 64 --seconds 30 --device cuda --compare sb3 \
  --json "$OUT/atari_64.json" 2>&1 | tee -a "$log"
echo "== atari: one synchronous env group" | tee -a "$log"
python -m rlstm bench atari --num-envs 64 --seconds 20 --device cuda --set env.num_groups=1 2>&1 | tee -a "$log"
echo "== atari: 128 envs, 2 groups" | tee -a "$log"
python -m rlstm bench atari --num-envs 128 --seconds 20 --device cuda 2>&1 | tee -a "$log"
date -u | tee -a "$log"
# Pong learning in the background: 5M steps (configs/atari/pong.yaml).
setsid nohup bash -c "python -m rlstm train configs/atari/pong.yaml run.device=cuda \
  run.progress=false run.out_dir=$LEARN run.run_name=pong > $LEARN/pong_train.txt 2>&1; \
  python -m rlstm eval $LEARN/pong --episodes 32 --device cuda > $LEARN/pong_eval.txt 2>&1; \
  touch $LEARN/pong.done" > /dev/null 2>&1 < /dev/null &
sleep 20; tail -3 "$LEARN/pong_train.txt"
