#!/usr/bin/env bash
# The SFT and chat part of `make demo`: measures the pretrained model's chat replies (the chat
# template applied to the base model: what it does before fine-tuning), fine-tunes it on the
# demo chat set (data/sft/demo_train.jsonl: short English + Korean everyday conversations and
# the identity set, built by scripts/demo_make_sft_data.sh; licenses in data/sft/LICENSE-NOTE.txt),
# loss on the assistant's turns only, then measures the fine-tuned model the same way.
# The measurement (scripts/demo_chat_eval.py): 16 fixed prompts (data/sft/demo_chat_prompts.jsonl),
# each its own conversation, greedy and sampled; the rate of degenerate replies and the
# identity answers. WORK_DIR/chat.txt: the fine-tuned model's replies, greedy beside sampled.
#
#   scripts/demo_sft.sh BASE_RUN_DIR [WORK_DIR]      (default WORK_DIR: out/demo-sft)
#
# Environment: AJI (binary; build/aji), SFT_STEPS (optimizer steps of 8 packed rows of 256
# tokens, ~45 short conversations each step; default 200, about 2.5 epochs of demo_train.jsonl), SFT_LR (default 3e-3; docs/demo.md),
# SFT_DATA / SFT_VAL (default data/sft/demo_train.jsonl / demo_val.jsonl), CHAT_MAX_TOKENS
# (tokens per measured reply, default 48), CHAT_SAMPLING (the sampled decoding; default
# "--temperature 0.7 --top-k 0 --top-p 0.9 --repetition-penalty 1.1 --seed 1"), AJI_THREADS.
# Continue an interrupted run with: $AJI sft train --out WORK_DIR/run --resume
set -euo pipefail
cd "$(dirname "$0")/.."
AJI=${AJI:-build/aji}
BASE=${1:?usage: scripts/demo_sft.sh BASE_RUN_DIR [WORK_DIR]}
WORK=${2:-out/demo-sft}
DATA=${SFT_DATA:-data/sft/demo_train.jsonl}
VAL=${SFT_VAL:-data/sft/demo_val.jsonl}
STEPS=${SFT_STEPS:-200}
SAMPLING=${CHAT_SAMPLING:---temperature 0.7 --top-k 0 --top-p 0.9 --repetition-penalty 1.1 --seed 1}
MAXTOK=${CHAT_MAX_TOKENS:-48}
PROMPTS=data/sft/demo_chat_prompts.jsonl
mkdir -p "$WORK"

if ! "$AJI" chat --help > /dev/null 2>&1; then
  echo "(this build has no \`aji chat\`: chat measurements skipped)" | tee "$WORK/chat.txt"
  CHAT=0
else
  CHAT=1
fi

if [ "$CHAT" = 1 ]; then
  echo "== 1. the base model with the chat template, before fine-tuning ($(wc -l < "$PROMPTS") prompts, greedy and sampled)"
  python3 scripts/demo_chat_eval.py --aji "$AJI" --model "$BASE" --prompts "$PROMPTS" --out "$WORK/chat_base.json" \
    --label "base model" --max-tokens "$MAXTOK" --sampled "$SAMPLING"
fi

echo "== 2. SFT: $(wc -l < "$DATA") conversations, $STEPS steps of 8 packed rows of 256 tokens, loss on the assistant's turns"
"$AJI" sft train --model "$BASE" --data "$DATA" --val "$VAL" --out "$WORK/run" --force \
  --steps "$STEPS" --batch-size 8 --seq-len 256 --batching pack --lr "${SFT_LR:-3e-3}" --warmup 10 --decay linear \
  --eval-every 50 --save-every 100 --keep 1

if [ "$CHAT" = 1 ]; then
  echo "== 3. the fine-tuned model, same prompts"
  python3 scripts/demo_chat_eval.py --aji "$AJI" --model "$WORK/run" --prompts "$PROMPTS" --out "$WORK/chat_sft.json" \
    --label "after SFT" --max-tokens "$MAXTOK" --sampled "$SAMPLING"
  python3 - "$WORK/chat_sft.json" <<'PY' | tee "$WORK/chat.txt"
import json, sys
d = json.load(open(sys.argv[1], encoding="utf-8"))
print(f"sampled = {d['decoding']['sampled']}; at most {d['max_tokens']} tokens per reply")
for r in d["replies"]:
    print(f"user: {r['prompt']}")
    for mode in ("greedy", "sampled"):
        flag = f"   [degenerate: {r[mode]['degenerate']}]" if r[mode]["degenerate"] else ""
        print(f"  assistant ({mode}): {r[mode]['reply']}{flag}")
PY
fi
