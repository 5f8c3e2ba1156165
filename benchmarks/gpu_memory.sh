#!/usr/bin/env bash
# GPU session: CUDA tests, core and memory-env benchmarks, end-to-end training speed, then
# the memory learning runs (five at once on the one GPU). Run from the repo root on the GPU
# machine; OUT is where logs go (default ./out). LEARN_SECONDS caps each learning run.
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"; LEARN_SECONDS=${LEARN_SECONDS:-240}
log="$OUT/bench.txt"
nvidia-smi -L | tee "$log"; nproc | tee -a "$log"
python -m pytest -q -m gpu tests/test_gpu.py -k "not never_syncs" -p no:cacheprovider 2>&1 | tail -3 | tee -a "$log"
python -m rlstm bench core --device cuda --seconds 4 2>&1 | tee -a "$log"
python -m rlstm bench memory --device cuda --seconds 1 2>&1 | tee -a "$log"
for B in 16384 65536; do
  echo "== e2e RepeatPreviousEasy B=$B T=32 L=16 mb=4 epochs=4" | tee -a "$log"
  python -m rlstm train configs/memory/repeat_previous_easy.yaml env.num_envs=$B \
    ppo.num_steps=32 ppo.bptt_len=16 ppo.num_minibatches=4 ppo.update_epochs=4 \
    run.device=cuda run.time_limit=25 run.progress=false run.out_dir=/tmp/runs \
    run.run_name=e2e_$B 2>/dev/null | grep -E '"(steps|sps|wall_time)"' | tee -a "$log"
done
mkdir -p learn
for c in repeat_previous_easy count_recall_easy tmaze_100 memory_chain_30 position_only_cartpole_easy; do
  ( python -m rlstm train configs/memory/$c.yaml run.device=cuda run.time_limit=$LEARN_SECONDS \
      run.progress=false run.out_dir=learn run.run_name=$c > learn/$c.train.txt 2>&1
    python -m rlstm eval learn/$c --episodes 1000 --greedy --device cuda > learn/$c.eval.txt 2>&1 ) &
done
wait
for c in learn/*.train.txt; do echo "== $c"; tail -12 "$c"; done > "$OUT/learn.txt"
for c in learn/*.eval.txt; do echo "== $c"; head -3 "$c"; done >> "$OUT/learn.txt"
tar czf "$OUT/learn_runs.tgz" learn
cat "$OUT/learn.txt"
