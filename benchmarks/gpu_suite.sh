#!/usr/bin/env bash
# GPU session, optional part 3: the memory suite's published answer on one H100 — the Easy
# table (LSTM, GRU, no memory) and the length sweeps (LSTM), 3 seeds each, many cells at
# once. The sweep settings are the ones the CPU runs in benchmarks/RESULTS.md used (32 envs;
# tmaze_100.yaml and remember_ab.yaml with adam_eps 1e-8). The sweeps take longer than one
# 10-minute device call (TMaze-1000 ran ~25 min per seed on one CPU core); the suite is
# resumable, so a call that runs out of time loses nothing: run the script again in the
# next call (finished cells are skipped). Run it after gpu_speed.sh. OUT holds the logs.
set -uo pipefail
OUT=${OUT:-out}; SUITE=${SUITE:-/root/suite}; JOBS=${JOBS:-12}
mkdir -p "$OUT"
python -m rlstm suite --tasks easy --cores lstm,gru,none --seeds 3 --steps 3000000 \
  --jobs "$JOBS" --device cuda --set RepeatFirstEasy:env.num_envs=512 \
  --out "$SUITE/easy" 2>&1 | tail -30 | tee "$OUT/suite_easy.txt"
python -m rlstm suite --tasks MemoryChain,TMaze,RememberAB --cores lstm --seeds 3 \
  --steps 15000000 --lengths MemoryChain=30,100 TMaze=10,100,1000 RememberAB=10,100,1000 \
  --jobs "$JOBS" --device cuda --set env.num_envs=32 \
  --out "$SUITE/sweeps" 2>&1 | tail -30 | tee "$OUT/suite_sweeps.txt"
cp "$SUITE"/easy/suite.{md,csv,png} "$SUITE"/sweeps/suite.{md,csv} "$OUT"/ 2>/dev/null
