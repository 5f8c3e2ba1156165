#!/usr/bin/env bash
# GPU session 1: CUDA tests, core and memory-env benchmarks, end-to-end training speed.
# Run from the repo root on the GPU machine; OUT is where logs go (default ./out).
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
nvidia-smi -L | tee "$OUT/bench.txt"
python -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider 2>&1 | tail -5 | tee -a "$OUT/bench.txt"
python -m rlstm bench core --device cuda --seconds 6 2>&1 | tee -a "$OUT/bench.txt"
python -m rlstm bench memory --device cuda --seconds 1 \
  --tasks RepeatFirstEasy RepeatPreviousEasy AutoencodeEasy CountRecallEasy 2>&1 | tee -a "$OUT/bench.txt"
for B in 4096 16384 65536; do
  echo "== e2e RepeatPreviousEasy B=$B" | tee -a "$OUT/bench.txt"
  python -m rlstm train configs/memory/repeat_previous_easy.yaml env.num_envs=$B \
    ppo.num_steps=32 ppo.bptt_len=16 ppo.num_minibatches=4 ppo.update_epochs=4 \
    run.device=cuda run.time_limit=30 run.progress=false run.out_dir=/tmp/runs \
    run.run_name=e2e_$B 2>/dev/null | tee -a "$OUT/bench.txt"
done
