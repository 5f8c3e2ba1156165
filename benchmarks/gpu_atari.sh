#!/usr/bin/env bash
# GPU session: CUDA tests, the iteration profile and the Atari benchmark (vs sb3-contrib) on
# configs/atari/pong.yaml, then Pong learning in the background (setsid: it outlives this
# command while the machine stays held; collect it with gpu_learning.sh). The learning run
# uses the minibatch count whose benchmark ratio was higher. Wheels: see gpu_speed.sh.
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"; LEARN=${LEARN:-/root/learn}; mkdir -p "$LEARN"
log="$OUT/atari.txt"
nvidia-smi -L | tee "$log"; nproc | tee -a "$log"; date -u | tee -a "$log"
python -m pytest -q -m gpu tests/test_gpu.py tests/test_atari.py -k "not never_syncs" \
  -p no:cacheprovider 2>&1 | tail -15 | tee -a "$log"
echo "== profile Pong B=64" | tee -a "$log"
python benchmarks/profile_iteration.py configs/atari/pong.yaml env.num_envs=64 \
  run.device=cuda run.torch_threads=1 --variants 8:32 4:32 2>&1 \
  | grep -v "^ *aten::\|^ *autograd\|^---\|^ *Name\|^void\|^ *cuda\|Memcpy\|Memset\|^_Z\|^sm90\|^ *Optimizer\|^ *[a-z_]*$\|Warning\|_warn_once" \
  | tee -a "$log"
echo "== atari: configs/atari/pong.yaml as is, vs sb3" | tee -a "$log"
python -m rlstm bench atari --num-envs 64 --seconds 30 --device cuda --compare sb3 \
  --json "$OUT/atari_64.json" 2>&1 | tee -a "$log"
echo "== atari: ppo.num_minibatches=8" | tee -a "$log"
python -m rlstm bench atari --num-envs 64 --seconds 20 --device cuda \
  --set ppo.num_minibatches=8 --json "$OUT/atari_64_mb8.json" 2>&1 | tee -a "$log"
echo "== atari: 128 envs" | tee -a "$log"
python -m rlstm bench atari --num-envs 128 --seconds 20 --device cuda \
  --json "$OUT/atari_128.json" 2>&1 | tee -a "$log"
date -u | tee -a "$log"
MB=$(python - "$OUT" <<'PY'
import json, sys
a = json.load(open(f"{sys.argv[1]}/atari_64.json"))["train_over_raw"]
b = json.load(open(f"{sys.argv[1]}/atari_64_mb8.json"))["train_over_raw"]
print(16 if a >= b else 8)
PY
)
echo "== Pong learning, ppo.num_minibatches=$MB" | tee -a "$log"
setsid nohup bash -c "python -m rlstm train configs/atari/pong.yaml ppo.num_minibatches=$MB \
  run.device=cuda run.progress=false run.out_dir=$LEARN run.run_name=pong \
  > $LEARN/pong_train.txt 2>&1; \
  python -m rlstm eval $LEARN/pong --episodes 32 --device cuda > $LEARN/pong_eval.txt 2>&1; \
  touch $LEARN/pong.done" > /dev/null 2>&1 < /dev/null &
sleep 15; tail -3 "$LEARN/pong_train.txt"
