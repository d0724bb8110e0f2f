#!/usr/bin/env bash
# The RL part of `make demo`: GRPO (RL with a verifiable reward, as in DeepSeek-R1) from the
# demo's SFT model on arithmetic word problems in English and Korean (data/rl_tasks/demo_arith_*,
# made by scripts/demo_make_rl_tasks.sh; the SFT set carries 500 worked examples of the format).
# The reward is 1 when the last number of the reply (or the one after "####") is the answer
# (the `number` verifier). pass@1 and pass@G on held-out problems (never in SFT or RL training)
# are measured before the first step and after the last, at the rollout temperature; then the
# RL model's chat is measured on the demo's 16 chat prompts, as the SFT model's was.
#
#   scripts/demo_rl.sh SFT_RUN_DIR [WORK_DIR]      (default WORK_DIR: out/demo-rl)
#
# Environment: AJI (binary; build/aji), RL_STEPS (GRPO steps; default 30), RL_PROMPTS (prompts per
# step; 8), RL_GROUP (completions per prompt, G; 8), RL_LR (5e-5), RL_KL (k3 coefficient; 0.04),
# RL_EVAL_LIMIT (held-out tasks evaluated; 100), RL_EVAL_SAMPLES (samples per held-out task; 8),
# CHAT_MAX_TOKENS, CHAT_SAMPLING (as scripts/demo_sft.sh), AJI_THREADS.
# Continue an interrupted run with: $AJI grpo --out WORK_DIR/run --resume
set -euo pipefail
cd "$(dirname "$0")/.."
AJI=${AJI:-build/aji}
SFT=${1:?usage: scripts/demo_rl.sh SFT_RUN_DIR [WORK_DIR]}
WORK=${2:-out/demo-rl}
STEPS=${RL_STEPS:-30}
PROMPTS=${RL_PROMPTS:-8}
GROUP=${RL_GROUP:-8}
EVAL_LIMIT=${RL_EVAL_LIMIT:-100}
EVAL_SAMPLES=${RL_EVAL_SAMPLES:-8}
SAMPLING=${CHAT_SAMPLING:---temperature 0.7 --top-k 0 --top-p 0.9 --repetition-penalty 1.1 --seed 1}
MAXTOK=${CHAT_MAX_TOKENS:-48}
mkdir -p "$WORK"

echo "== 1. GRPO: $STEPS steps x $PROMPTS prompts x G=$GROUP on data/rl_tasks/demo_arith_train.jsonl, number verifier;" \
     "pass@1 on $EVAL_LIMIT held-out problems x $EVAL_SAMPLES samples before and after"
"$AJI" grpo --model "$SFT" --tasks data/rl_tasks/demo_arith_train.jsonl --verifier number \
  --eval-tasks data/rl_tasks/demo_arith_heldout.jsonl --eval-limit "$EVAL_LIMIT" --eval-samples "$EVAL_SAMPLES" \
  --out "$WORK/run" --force --steps "$STEPS" --prompts-per-step "$PROMPTS" --group-size "$GROUP" \
  --max-new-tokens 24 --temperature 1 --lr "${RL_LR:-5e-5}" --kl-coef "${RL_KL:-0.04}" \
  --eval-every 0 --save-every 0 --keep 1

echo "== 2. the reward curve"
python3 scripts/demo_rl_curve.py "$WORK/run/metrics.jsonl" "$WORK/reward.svg"

if "$AJI" chat --help > /dev/null 2>&1; then
  echo "== 3. the RL model's chat, the SFT model's prompts"
  python3 scripts/demo_chat_eval.py --aji "$AJI" --model "$WORK/run" --prompts data/sft/demo_chat_prompts.jsonl \
    --out "$WORK/chat_rl.json" --label "after RL" --max-tokens "$MAXTOK" --sampled "$SAMPLING"
fi
