#!/usr/bin/env bash
# The SFT and chat part of `make demo`: fine-tunes the pretrained demo model on the bundled
# English + Korean chat set (data/sft, licenses in data/sft/LICENSE-NOTE.txt), loss on the
# assistant's turns only, then holds a few scripted chat turns.
#
#   scripts/demo_sft.sh BASE_RUN_DIR [WORK_DIR]      (default WORK_DIR: out/demo-sft)
#
# Environment: AJI (binary; build/aji), SFT_STEPS (optimizer steps of 8 packed rows of 256 tokens, ~20 conversations each
# step; 150, about 1.1 epochs, ~3 minutes on 2 cores),
# AJI_THREADS. Continue an interrupted run with: $AJI sft train --out WORK_DIR/run --resume
set -euo pipefail
cd "$(dirname "$0")/.."
AJI=${AJI:-build/aji}
BASE=${1:?usage: scripts/demo_sft.sh BASE_RUN_DIR [WORK_DIR]}
WORK=${2:-out/demo-sft}
mkdir -p "$WORK"

echo "== 1. SFT: $(wc -l < data/sft/train.jsonl) conversations, ${SFT_STEPS:-150} steps of 8 packed rows of 256 tokens, loss on the assistant's turns"
"$AJI" sft train --model "$BASE" --data data/sft/train.jsonl --val data/sft/val.jsonl --out "$WORK/run" --force \
  --steps "${SFT_STEPS:-150}" --batch-size 8 --seq-len 256 --batching pack --lr 1e-3 --warmup 10 --decay linear \
  --eval-every 100 --save-every 100 --keep 1

echo "== 2. chat with the fine-tuned model (greedy)"
if ! "$AJI" chat --help > /dev/null 2>&1; then
  echo "(this build has no \`aji chat\`: chat turns skipped)" | tee "$WORK/chat.txt"
  exit 0
fi
"$AJI" chat --model "$WORK/run" --transcript --temperature 0 --max-tokens 60 \
  --prompt "Who are you?" --prompt "What is the capital of France?" \
  --prompt "안녕하세요" --prompt "오늘 너무 피곤해" 2>&1 | tee "$WORK/chat.txt"
