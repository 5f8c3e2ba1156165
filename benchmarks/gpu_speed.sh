#!/usr/bin/env bash
# GPU session, part 1: CUDA tests, core / end-to-end memory speed, the Atari benchmark
# (config as is, i.e. with ppo.overlap_update, and without it, each against sb3-contrib with
# as many envs and with the sb3 zoo's 8), then Pong learning in the background (setsid:
# it outlives this command while the machine stays held; gpu_learning.sh collects it).
# ale-py, gymnasium, stable-baselines3 and sb3-contrib travel as wheels in .whl/ (see the
# device tool's README); PYTHONPATH points at the unpacked wheels. OUT holds the logs.
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"; LEARN=${LEARN:-/root/learn}; mkdir -p "$LEARN"
rm -rf /tmp/runs/e2e "$LEARN/pong" "$LEARN/pong.done"  # a rerun on a warm machine starts clean
# Measured at 15 s (seventh session): over 10 min in all, ~2 min per Atari benchmark (sb3's
# 64-128 subprocesses are slow to start), so the last (8-env) comparison did not fit in one
# 10-min device call: shorten SECONDS_PER_RUN or run that comparison in the next call.
S=${SECONDS_PER_RUN:-15}
log="$OUT/speed.txt"
quiet() { grep -v "A.L.E: Arcade\|Powered by Stella\|^$"; }
nvidia-smi -L | tee "$log"; nproc | tee -a "$log"; date -u | tee -a "$log"
python -m pytest -q -m gpu tests/test_gpu.py tests/test_atari.py -k "not never_syncs" \
  -p no:cacheprovider 2>&1 | tail -15 | tee -a "$log"
python -m rlstm bench core --device cuda --seconds 2 2>&1 | tee -a "$log"
echo "== e2e RepeatPreviousEasy B=65536 T=32 L=16 mb=4 epochs=4" | tee -a "$log"
python -m rlstm train configs/memory/repeat_previous_easy.yaml env.num_envs=65536 \
  ppo.num_steps=32 ppo.bptt_len=16 ppo.num_minibatches=4 ppo.update_epochs=4 \
  ppo.total_timesteps=1000000000 run.device=cuda run.time_limit=20 run.progress=false \
  run.out_dir=/tmp/runs run.run_name=e2e > /dev/null 2>&1
cat /tmp/runs/e2e/summary.json | tee -a "$log"  # steps/s (also after warm-up), seconds by phase
for B in 64 128; do
  for SET in "" "--set ppo.overlap_update=false"; do
    echo "== atari: $B envs $SET, vs sb3 with $B envs" | tee -a "$log"
    python -m rlstm bench atari --num-envs $B --seconds $S --device cuda $SET --compare sb3 \
      2>&1 | quiet | tee -a "$log"
  done
done
echo "== atari: 128 envs with the overlap, vs sb3 with the zoo's 8 envs" | tee -a "$log"
python -m rlstm bench atari --num-envs 128 --seconds $S --device cuda \
  --compare sb3 --sb3-envs 8 --json "$OUT/atari_128_sb3_8.json" \
  2>&1 | quiet | tee -a "$log"
date -u | tee -a "$log"
# Pong learning in the background: configs/atari/pong.yaml, 5M steps
# (PONG=0 skips it, to run it in the foreground of the next call instead).
[ "${PONG:-1}" = 0 ] && exit 0
setsid nohup bash -c "python -m rlstm train configs/atari/pong.yaml run.device=cuda \
  run.progress=false run.out_dir=$LEARN run.run_name=pong \
  > $LEARN/pong_train.txt 2>&1; \
  python -m rlstm eval $LEARN/pong --episodes 32 --device cuda > $LEARN/pong_eval.txt 2>&1; \
  touch $LEARN/pong.done" > /dev/null 2>&1 < /dev/null &
sleep 20; tail -3 "$LEARN/pong_train.txt"
