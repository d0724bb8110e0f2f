#!/usr/bin/env bash
# The GRPO "real run" (issue #14): RL with a verifiable reward on a deliberately imperfect SFT model,
# measured on the bundled arithmetic word problems (data/rl_tasks,
# English + Korean, one- and two-digit + and -; arith_sft.jsonl has 30% wrong answers on purpose).
#
#   scripts/rl_arith_run.sh [WORK_DIR]        (default: out/rl-arith)
#
# 1. tokenizer (byte-level BPE, 512 tokens) on the SFT conversations' text
# 2. a small Llama (L2 d128, ~0.4M parameters) pretrained on that text (the same imperfect answers)
# 3. SFT on arith_sft.jsonl (the chat format; 30% wrong answers)
# 4. GRPO on arith_train.jsonl with the number verifier, pass@1 / pass@G on arith_test.jsonl
#
# Environment: AJI (binary; default build/aji), AJI_THREADS, PRE_STEPS, SFT_STEPS, GRPO_STEPS,
# GRPO_LR, GROUP (G), KL (k3 coefficient), EVAL_LIMIT (held-out tasks evaluated; 0 = all 300),
# VOCAB (512; 259 = bytes only), CTX (context, 128; bytes need 384). About 5 minutes on one core.
set -euo pipefail
cd "$(dirname "$0")/.."
AJI=${AJI:-build/aji}
WORK=${1:-out/rl-arith}
PRE_STEPS=${PRE_STEPS:-300}
SFT_STEPS=${SFT_STEPS:-200}
GRPO_STEPS=${GRPO_STEPS:-150}
GRPO_LR=${GRPO_LR:-1e-4}
GROUP=${GROUP:-8}
EVAL_LIMIT=${EVAL_LIMIT:-0}
KL=${KL:-0.04}
VOCAB=${VOCAB:-512}
CTX=${CTX:-128}
mkdir -p "$WORK"
if [ ! -x "$AJI" ]; then echo "aji binary not found at $AJI (build it first: make build)" >&2; exit 1; fi

echo "== 0. plain text of the SFT conversations (question, newline, answer; one document per line)"
python3 - "$WORK/arith_text.jsonl" <<'PY'
import json, sys
with open("data/rl_tasks/arith_sft.jsonl", encoding="utf-8") as f, open(sys.argv[1], "w", encoding="utf-8") as out:
    for line in f:
        m = json.loads(line)["messages"]
        out.write(json.dumps({"text": m[0]["content"] + "\n" + m[1]["content"]}, ensure_ascii=False) + "\n")
PY
cat > "$WORK/model.json" <<JSON
{
  "comment": "A small Llama for the arithmetic GRPO run: L2 d128 4 heads, context $CTX, vocab $VOCAB.",
  "arch": "llama", "vocab_size": $VOCAB, "n_layer": 2, "n_head": 4, "n_kv_head": 4, "d_model": 128,
  "d_ff": 384, "max_seq_len": $CTX, "norm_eps": 1e-5, "rope_theta": 10000, "tied_embeddings": false,
  "qk_norm": false
}
JSON

echo "== 1. tokenizer: $VOCAB tokens on the arithmetic text"
"$AJI" tokenizer train --input "$WORK/arith_text.jsonl" --jsonl-field text --vocab-size "$VOCAB" --out "$WORK/tokenizer.json"
"$AJI" data tokenize --tokenizer "$WORK/tokenizer.json" --input "$WORK/arith_text.jsonl" --jsonl-field text \
  --out "$WORK/shards" --val-fraction 0.05 --force

echo "== 2. pretraining L2 d128 for $PRE_STEPS steps"
"$AJI" pretrain --config "$WORK/model.json" --data "$WORK/shards" --out "$WORK/base" --force \
  --steps "$PRE_STEPS" --batch-size 16 --seq-len "$CTX" --lr 3e-3 --warmup 20 \
  --eval-every 100 --eval-batches 4 --sample-every 0 --save-every 0 --keep 1

echo "== 3. SFT on arith_sft.jsonl (30% wrong answers) for $SFT_STEPS steps"
"$AJI" sft train --model "$WORK/base" --data data/rl_tasks/arith_sft.jsonl --out "$WORK/sft" --force \
  --steps "$SFT_STEPS" --batch-size 16 --seq-len "$CTX" --batching pack --lr 1e-3 --warmup 10 --decay linear \
  --eval-every 100 --save-every 0 --keep 1

echo "== 4. GRPO: $GRPO_STEPS steps, 16 prompts x G=$GROUP, lr $GRPO_LR, kl $KL, number verifier"
# (a) pass@1 / pass@G on the held-out tasks (operand pairs never seen in training)
"$AJI" grpo --model "$WORK/sft" --tasks data/rl_tasks/arith_train.jsonl --verifier number \
  --eval-tasks data/rl_tasks/arith_test.jsonl --eval-limit "$EVAL_LIMIT" --out "$WORK/grpo" --force \
  --steps "$GRPO_STEPS" --group-size "$GROUP" --prompts-per-step 16 --max-new-tokens 24 --lr "$GRPO_LR" \
  --kl-coef "$KL" --temperature 1 --eval-every 50 --save-every 0 --keep 1
# (b) the same run (same seeds: the same updates), evaluated on the first 300 training prompts,
#     whose SFT answers were 30% wrong
"$AJI" grpo --model "$WORK/sft" --tasks data/rl_tasks/arith_train.jsonl --verifier number \
  --eval-tasks data/rl_tasks/arith_train.jsonl --eval-limit 300 --out "$WORK/grpo-train-eval" --force \
  --steps "$GRPO_STEPS" --group-size "$GROUP" --prompts-per-step 16 --max-new-tokens 24 --lr "$GRPO_LR" \
  --kl-coef "$KL" --temperature 1 --eval-every 50 --save-every 0 --keep 1
echo "run directories: $WORK/base $WORK/sft $WORK/grpo $WORK/grpo-train-eval (metrics.jsonl, loss.svg, summary.json)"
