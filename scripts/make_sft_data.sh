#!/usr/bin/env bash
# Regenerates the bundled SFT chat set (data/sft/train.jsonl, data/sft/val.jsonl) and the
# SMS spam demo file (data/classify/sms_spam.tsv) from the shared data sets, using only
# `aji sft convert` / `aji sft mix`. Deterministic: the same inputs and seed give the same
# files byte for byte.
#
#   scripts/make_sft_data.sh [SHARED_DATA_DIR]   (default /work/shared/data)
#   AJI=path/to/aji scripts/make_sft_data.sh     (default build/aji)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-/work/shared/data}"
AJI="${AJI:-build/aji}"
SEED=20261123
[ -x "$AJI" ] || { echo "error: $AJI not found; build first (make build) or set AJI=" >&2; exit 1; }
for f in korean_chatbot/ChatbotData.csv oasst_sample/en_100_tree.jsonl self_instruct/seed_tasks.jsonl \
         self_instruct/user_oriented_instructions.jsonl gsm8k/train.jsonl sms_spam/SMSSpamCollection; do
  [ -f "$DATA/$f" ] || { echo "error: $DATA/$f is missing" >&2; exit 1; }
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$AJI" sft convert --from korean_chatbot --input "$DATA/korean_chatbot/ChatbotData.csv" --out "$tmp/chatbot.jsonl"
"$AJI" sft convert --from oasst --input "$DATA/oasst_sample/en_100_tree.jsonl" --out "$tmp/oasst.jsonl"
"$AJI" sft convert --from self_instruct --input "$DATA/self_instruct/seed_tasks.jsonl" --out "$tmp/si_seed.jsonl" \
  --source-tag self_instruct_seed
"$AJI" sft convert --from self_instruct --input "$DATA/self_instruct/user_oriented_instructions.jsonl" \
  --out "$tmp/si_user.jsonl" --source-tag self_instruct_user
"$AJI" sft convert --from gsm8k --input "$DATA/gsm8k/train.jsonl" --out "$tmp/gsm8k.jsonl" --source-tag gsm8k_train

# Korean Q/A ~half, English the other half: all of OASST's best branches and Self-Instruct,
# a sample of GSM8K, the hand-written identity conversations (data/sft/identity.jsonl).
"$AJI" sft mix --seed "$SEED" --val-fraction 0.05 \
  --in "$tmp/chatbot.jsonl:1500" --in "$tmp/oasst.jsonl" --in "$tmp/si_seed.jsonl" --in "$tmp/si_user.jsonl" \
  --in "$tmp/gsm8k.jsonl:800" --in data/sft/identity.jsonl \
  --train data/sft/train.jsonl --val data/sft/val.jsonl
"$AJI" sft check --input data/sft/train.jsonl
"$AJI" sft check --input data/sft/val.jsonl

# SMS spam for the classification demo: the original label<TAB>text lines under a header
# row, so `aji classify` finds the columns by name.
{ printf 'label\ttext\n'; tr -d '\r' < "$DATA/sms_spam/SMSSpamCollection"; } > "$tmp/sms_spam.tsv"
mv "$tmp/sms_spam.tsv" data/classify/sms_spam.tsv
echo "wrote data/sft/train.jsonl data/sft/val.jsonl data/classify/sms_spam.tsv"
