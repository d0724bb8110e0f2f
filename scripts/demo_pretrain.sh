#!/usr/bin/env bash
# The pretraining part of `make demo`: trains a tokenizer and the `tiny` model (Llama-style,
# L6 d384, ~17M parameters) on the English + Korean corpus that ships in data/corpus for a
# fixed number of steps (work, not wall time: a busy machine takes longer but trains the
# same model), then prints samples from the trained model.
#
#   scripts/demo_pretrain.sh [WORK_DIR]        (default: out/demo-pretrain)
#
# Environment: AJI (the binary; default build/aji), PRETRAIN_STEPS (optimizer steps of 2,048
# tokens; default 400, about 7 minutes on a quiet 2-core machine), DEMO_MINUTES (a time
# budget instead of PRETRAIN_STEPS: the step count then depends on the machine's speed),
# AJI_THREADS (threads; default all cores). Re-running starts the training over (--force);
# continue an interrupted run with: $AJI pretrain --out WORK_DIR/run --resume
set -euo pipefail
cd "$(dirname "$0")/.."
AJI=${AJI:-build/aji}
WORK=${1:-out/demo-pretrain}
STEPS=${PRETRAIN_STEPS:-400}
if [ -n "${DEMO_MINUTES:-}" ]; then BUDGET=(--time-budget "$DEMO_MINUTES"); WHAT="about $DEMO_MINUTES minutes"
else BUDGET=(--steps "$STEPS"); WHAT="$STEPS steps ($((STEPS * 2048)) tokens)"; fi
mkdir -p "$WORK"

if [ ! -x "$AJI" ]; then
  echo "aji binary not found at $AJI (build it first: make build)" >&2
  exit 1
fi

echo "== 1. tokenizer: byte-level BPE, 8192 tokens, on data/corpus/train"
"$AJI" tokenizer train --input data/corpus/train --vocab-size 8192 --out "$WORK/tokenizer.json"

echo "== 2. token shards (5% of the documents held out for validation)"
"$AJI" data tokenize --tokenizer "$WORK/tokenizer.json" --input data/corpus/train --out "$WORK/shards" \
  --val-fraction 0.05 --force

echo "== 3. pretraining tiny for $WHAT"
"$AJI" pretrain --config configs/tiny.json --data "$WORK/shards" --out "$WORK/run" --force \
  "${BUDGET[@]}" --batch-size 8 --seq-len 256 --lr 2e-3 --warmup 20 \
  --eval-every 50 --eval-batches 8 --sample-every 100 --sample-tokens 48 --save-every 100 --keep 2

echo "== 4. samples from the trained model"
for prompt in "ROMEO:" "And God said" "The government said" "이 영화는" "정부는"; do
  echo "--- prompt: $prompt"
  "$AJI" generate --model "$WORK/run" --prompt "$prompt" --max-tokens 60 --temperature 0.8 --top-k 40 --seed 1
done

echo "== 5. held-out news (never trained on; first 100 lines): loss and bits per byte"
for lang in en ko; do
  head -n 100 "data/corpus/heldout/${lang}_news_dev.txt" > "$WORK/heldout_$lang.txt"
  echo -n "$lang: "
  "$AJI" score --model "$WORK/run" --input "$WORK/heldout_$lang.txt"
done
echo "run directory: $WORK/run (metrics.jsonl, loss.svg, checkpoints)"
