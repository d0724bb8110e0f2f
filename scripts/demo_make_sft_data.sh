#!/usr/bin/env bash
# Regenerates the demo's SFT chat set (data/sft/demo_train.jsonl, data/sft/demo_val.jsonl):
# short, simple conversations that a ~8M-parameter model can learn in a few minutes, unlike
# data/sft/train.jsonl, whose GSM8K and long Self-Instruct/OASST answers taught the demo
# model to loop on "#### = = =" (docs/demo.md). Deterministic: same inputs and seed, same files.
#   - Korean everyday Q/A: 2,000 of songys/Chatbot_data (MIT)
#   - English everyday Q/A: the first exchange of Anthropic HH-RLHF helpful-base (test split)
#     "chosen" transcripts whose question is <= 120 and answer 10..220 characters (MIT)
#   - English instructions: Self-Instruct instances whose prompt <= 200 and output <= 160
#     characters (Apache-2.0)
#   - identity (data/sft/identity.jsonl, who the model is), 12 copies in train, none in val
#   - arithmetic word problems with worked replies (data/rl_tasks/demo_arith_sft.jsonl, made by
#     scripts/demo_make_rl_tasks.sh; aji's own generator): the format of the demo's RL stage
# No GSM8K, no OASST (long, multi-paragraph answers).
#
#   scripts/demo_make_sft_data.sh [SHARED_DATA_DIR]   (default /work/shared/data; AJI=binary)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-/work/shared/data}"
AJI="${AJI:-build/aji}"
SEED=20261205
[ -x "$AJI" ] || { echo "error: $AJI not found; build first (make build) or set AJI=" >&2; exit 1; }
[ -f data/rl_tasks/demo_arith_sft.jsonl ] || { echo "error: run scripts/demo_make_rl_tasks.sh first" >&2; exit 1; }
for f in korean_chatbot/ChatbotData.csv hh_rlhf/helpful-base-test.jsonl.gz self_instruct/seed_tasks.jsonl \
         self_instruct/user_oriented_instructions.jsonl; do
  [ -f "$DATA/$f" ] || { echo "error: $DATA/$f is missing" >&2; exit 1; }
done
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$AJI" sft convert --from korean_chatbot --input "$DATA/korean_chatbot/ChatbotData.csv" --out "$tmp/chatbot.jsonl"
"$AJI" sft convert --from self_instruct --input "$DATA/self_instruct/seed_tasks.jsonl" --out "$tmp/si_seed.jsonl" \
  --source-tag self_instruct_seed
"$AJI" sft convert --from self_instruct --input "$DATA/self_instruct/user_oriented_instructions.jsonl" \
  --out "$tmp/si_user.jsonl" --source-tag self_instruct_user
python3 - "$DATA/hh_rlhf/helpful-base-test.jsonl.gz" "$tmp" <<'PY'
import gzip, json, re, sys
src, tmp = sys.argv[1], sys.argv[2]
with gzip.open(src, "rt", encoding="utf-8") as f, open(f"{tmp}/hh.jsonl", "w", encoding="utf-8") as out:
    for row, line in enumerate(f):
        parts = re.split(r"\n\n(Human|Assistant): ", json.loads(line)["chosen"])
        if len(parts) < 5 or parts[1] != "Human" or parts[3] != "Assistant":
            continue
        q, a = parts[2].strip(), parts[4].strip()
        if len(q) <= 120 and 10 <= len(a) <= 220:
            conv = {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                    "source": f"hh_rlhf_helpful_test:{row}"}
            out.write(json.dumps(conv, ensure_ascii=False) + "\n")
with open(f"{tmp}/si_short.jsonl", "w", encoding="utf-8") as out:
    for name in ("si_seed", "si_user"):
        for line in open(f"{tmp}/{name}.jsonl", encoding="utf-8"):
            m = json.loads(line)["messages"]
            if len(m) == 2 and len(m[0]["content"]) <= 200 and 0 < len(m[1]["content"]) <= 160:
                out.write(line if line.endswith("\n") else line + "\n")
PY
"$AJI" sft mix --seed "$SEED" --val-fraction 0.05 \
  --in "$tmp/chatbot.jsonl:2000" --in "$tmp/hh.jsonl" --in "$tmp/si_short.jsonl" \
  --in data/rl_tasks/demo_arith_sft.jsonl \
  --train "$tmp/train.jsonl" --val data/sft/demo_val.jsonl
ids=()
for _ in $(seq 12); do ids+=(--in data/sft/identity.jsonl); done
"$AJI" sft mix --seed "$SEED" --in "$tmp/train.jsonl" "${ids[@]}" --train data/sft/demo_train.jsonl
"$AJI" sft check --input data/sft/demo_train.jsonl
"$AJI" sft check --input data/sft/demo_val.jsonl
echo "wrote data/sft/demo_train.jsonl ($(wc -l < data/sft/demo_train.jsonl)) data/sft/demo_val.jsonl ($(wc -l < data/sft/demo_val.jsonl))"
