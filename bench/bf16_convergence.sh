#!/usr/bin/env bash
# Convergence of bf16 mixed precision against fp32: the `tiny` model (configs/tiny.json)
# trained twice on the same tokens (same seed, data order and schedule), once with
# --precision fp32 and once with --precision bf16; then both validation-loss curves on one
# picture (docs/bf16_convergence.svg) and the last validation losses with their relative
# difference (the issue's target: within 1%).
#
#   bench/bf16_convergence.sh [WORK_DIR]   (default out/bf16-convergence)
#
# Environment: AJI (default build/aji), BENCH (default build/bench/bf16_train_bench, for the
# plot), STEPS (default 60), BATCH (default 4), SEQ (default 128), LR (default 3e-3),
# PARALLEL=1 runs the two trainings at the same time (one thread each).
# The corpus: DATA_TXT (default ../shared/data/tinyshakespeare/input.txt), else data/corpus/train.
set -euo pipefail
cd "$(dirname "$0")/.."
AJI=${AJI:-build/aji}
BENCH=${BENCH:-build/bench/bf16_train_bench}
WORK=${1:-out/bf16-convergence}
STEPS=${STEPS:-60}
BATCH=${BATCH:-4}
SEQ=${SEQ:-128}
LR=${LR:-3e-3}
DATA_TXT=${DATA_TXT:-../shared/data/tinyshakespeare/input.txt}
[ -f "$DATA_TXT" ] || DATA_TXT=data/corpus/train
mkdir -p "$WORK"
if [ ! -f "$WORK/data/manifest.json" ]; then
  "$AJI" -q tokenizer train --input "$DATA_TXT" --vocab-size 8192 --out "$WORK/tok.json"
  "$AJI" -q data tokenize --tokenizer "$WORK/tok.json" --input "$DATA_TXT" --out "$WORK/data" --val-fraction 0.05
fi
train() {
  "$AJI" --threads "${THREADS:-1}" pretrain --config configs/tiny.json --data "$WORK/data" --out "$WORK/$1" --force \
    --steps "$STEPS" --batch-size "$BATCH" --seq-len "$SEQ" --lr "$LR" --eval-every 25 --eval-batches 8 \
    --sample-every 0 --save-every 0 --precision "$1" > "$WORK/$1.log" 2>&1
}
if [ "${PARALLEL:-0}" = 1 ]; then
  train fp32 & p1=$!
  train bf16 & p2=$!
  wait $p1
  wait $p2
else
  train fp32
  train bf16
fi
grep -h "^precision" "$WORK/fp32.log" "$WORK/bf16.log" || true
"$BENCH" --plot docs/bf16_convergence.svg "$WORK/fp32" "$WORK/bf16" | tee "$WORK/result.json"
