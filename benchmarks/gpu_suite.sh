#!/usr/bin/env bash
# GPU session, optional part 3: the memory suite's published answer on one H100: the Easy
# table (LSTM, GRU, no memory) and the length sweeps (LSTM), 3 seeds each, many cells at
# once. The sweeps use the settings of the CPU runs in benchmarks/RESULTS.md (32 envs;
# tmaze_100.yaml and remember_ab.yaml with adam_eps 1e-8) with 4M steps per cell, 15M for
# TMaze-1000. Not yet run on a GPU.
#
# Each suite command stops itself before the 10-minute limit of a device call (SIGTERM: the
# running cells checkpoint and stop). Rerun the script in the next call, while the machine
# is still held, and the suite resumes: finished cells are skipped, stopped ones continue
# from their checkpoint. $SUITE lives on the device machine and is gone once it is given
# back; each call copies the reports and logs it has to $OUT. Run it after gpu_speed.sh.
set -uo pipefail
OUT=${OUT:-out}; SUITE=${SUITE:-/root/suite}; JOBS=${JOBS:-12}; LIMIT=${LIMIT:-540}
mkdir -p "$OUT"
start=$SECONDS
left() { echo $(( LIMIT - (SECONDS - start) )); }
suite() {  # NAME SECONDS ARGS...: one suite, stopped after SECONDS, report copied to $OUT
  local name=$1 seconds=$2; shift 2
  (( seconds > 30 )) || return 0
  timeout -s TERM -k 60 "$seconds" python -m rlstm suite --jobs "$JOBS" --device cuda \
    --out "$SUITE/$name" "$@" 2>&1 | tee -a "$OUT/suite_$name.txt"
  for f in suite.md suite.csv suite.png; do
    [[ -f "$SUITE/$name/$f" ]] && cp "$SUITE/$name/$f" "$OUT/${name}_$f"
  done
}
suite easy $(( $(left) / 3 )) --tasks easy --cores lstm,gru,none --seeds 3 \
  --steps 3000000 --set RepeatFirstEasy:env.num_envs=512
suite sweeps $(( $(left) / 2 )) --tasks MemoryChain,RememberAB --cores lstm --seeds 3 \
  --steps 4000000 --lengths MemoryChain=30,100 RememberAB=10,100,1000 --set env.num_envs=32
suite tmaze $(( $(left) / 3 )) --tasks TMaze --cores lstm --seeds 3 --steps 4000000 \
  --lengths TMaze=10,100 --set env.num_envs=32
suite tmaze1000 "$(left)" --tasks TMaze --cores lstm --seeds 3 --steps 15000000 \
  --lengths TMaze=1000 --set env.num_envs=32
