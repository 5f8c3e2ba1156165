#!/usr/bin/env bash
# GPU session, part 2: memory learning runs, all at once on the one GPU (each capped at
# LEARN_SECONDS, then evaluated greedily over 1000 episodes), while the Pong run started by
# gpu_speed.sh finishes in the background; then Pong's eval and learning curve.
# RUNS: "name:config [overrides...]" entries separated by ';'. EVAL_EPISODES (default 1000;
# 32 for Atari games, whose episodes are long) and EVAL_FLAGS (default --greedy; empty for
# sampled actions, as Atari scores are reported).
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"; LEARN=${LEARN:-/root/learn}; mkdir -p "$LEARN"
LEARN_SECONDS=${LEARN_SECONDS:-300}; DEADLINE=${DEADLINE:-540}; EVAL_EPISODES=${EVAL_EPISODES:-1000}
EVAL_FLAGS=${EVAL_FLAGS---greedy}
start=$(date +%s)
IFS=';' read -ra runs <<< "${RUNS:-}"
for entry in ${runs[@]+"${runs[@]}"}; do
  name=${entry%%:*}; rest=${entry#*:}
  ( python -m rlstm train $rest run.device=cuda run.time_limit=$LEARN_SECONDS \
      run.progress=false run.out_dir=$LEARN run.run_name=$name > $LEARN/$name.train.txt 2>&1
    python -m rlstm eval $LEARN/$name --episodes $EVAL_EPISODES $EVAL_FLAGS --device cuda > $LEARN/$name.eval.txt 2>&1 ) &
done
wait
while [ ! -e "$LEARN/pong.done" ] && [ $(( $(date +%s) - start )) -lt "$DEADLINE" ]; do sleep 5; done
for f in "$LEARN"/*.train.txt "$LEARN"/pong_train.txt; do
  [ -e "$f" ] && { echo "== $f"; tail -6 "$f"; }
done > "$OUT/learn.txt"
for f in "$LEARN"/*.eval.txt "$LEARN"/pong_eval.txt; do
  [ -e "$f" ] && { echo "== $f"; head -4 "$f"; }
done >> "$OUT/learn.txt"
[ -d "$LEARN/pong" ] && python -m rlstm plot "$LEARN/pong" --out "$OUT/pong_curve.png" >> "$OUT/learn.txt" 2>&1
[ -d "$LEARN/pong" ] && python -m rlstm plot "$LEARN/pong" --x time --out "$OUT/pong_curve_time.png" >> "$OUT/learn.txt" 2>&1
tar czf "$OUT/learn_runs.tgz" -C "$LEARN" --exclude='*.pt' .
cat "$OUT/learn.txt"
