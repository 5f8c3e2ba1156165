#!/usr/bin/env bash
# GPU session for Atari: CUDA tests, the emulator-vs-training benchmark, then Pong learning.
# ale-py and gymnasium travel as cp312 wheels in .whl/ (see the device tool's README);
# run from the repo root with PYTHONPATH set to the unpacked wheels. OUT holds the logs.
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"; PONG_SECONDS=${PONG_SECONDS:-420}
log="$OUT/atari.txt"
nvidia-smi -L | tee "$log"; nproc | tee -a "$log"
python -m pytest -q -m gpu tests/test_atari.py tests/test_gpu.py -p no:cacheprovider 2>&1 | tail -3 | tee -a "$log"
for n in 64 128; do
  python -m rlstm bench atari --env ALE/Pong-v5 --num-envs $n --seconds 30 --device cuda 2>&1 | tee -a "$log"
done
python -m rlstm train configs/atari/pong.yaml run.device=cuda run.time_limit=$PONG_SECONDS \
  run.progress=false run.out_dir=learn run.run_name=pong > "$OUT/pong_train.txt" 2>&1
python -m rlstm eval learn/pong --episodes 16 --device cuda >> "$OUT/pong_train.txt" 2>&1
python -m rlstm plot learn/pong --out "$OUT/pong_curve.png" >> "$OUT/pong_train.txt" 2>&1
tail -20 "$OUT/pong_train.txt"
