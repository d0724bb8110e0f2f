#!/usr/bin/env bash
# Regenerates the demo's RL tasks (the GRPO stage of `make demo`, docs/demo.md) from aji's own
# arithmetic word-problem generator (`aji tasks make-arithmetic`: English and Korean, + and -),
# with operands 2..9 so that the ~8M-parameter demo model can get some of them right after SFT:
#
#   data/rl_tasks/demo_arith_sft.jsonl      the worked replies ("a + b = c\n#### c", all correct) of the
#                                           first SFT_N training problems; scripts/demo_make_sft_data.sh
#                                           mixes them into the demo's SFT set, so that the SFT model
#                                           knows the task's format (pass@G > 0 before RL)
#   data/rl_tasks/demo_arith_train.jsonl    the GRPO training tasks (the first TRAIN_N problems,
#                                           the SFT ones among them)
#   data/rl_tasks/demo_arith_heldout.jsonl  HELDOUT_N held-out tasks for pass@1 before and after RL:
#                                           problems in neither file above (the generator never repeats
#                                           a prompt), over the same operand pairs (the pairs the
#                                           generator holds out for its own test split are not used)
#
# Deterministic: the same generator and seed give the same files.
#   scripts/demo_make_rl_tasks.sh            (AJI=binary, default build/aji)
set -euo pipefail
cd "$(dirname "$0")/.."
AJI="${AJI:-build/aji}"
SEED=20261205
SFT_N=500
TRAIN_N=2000
HELDOUT_N=200
[ -x "$AJI" ] || { echo "error: $AJI not found; build first (make build) or set AJI=" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$AJI" tasks make-arithmetic --lang both --train $((TRAIN_N + HELDOUT_N)) --test 1 --seed "$SEED" \
  --max-operand 9 --sft-wrong-fraction 0 --out-dir "$tmp"
python3 - "$tmp" "$SFT_N" "$TRAIN_N" "$HELDOUT_N" <<'PY'
import json, sys
tmp, sft_n, train_n, held_n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
train = open(f"{tmp}/arith_train.jsonl", encoding="utf-8").read().splitlines()
sft = open(f"{tmp}/arith_sft.jsonl", encoding="utf-8").read().splitlines()
assert len(train) == len(sft) == train_n + held_n
prompt = lambda line: json.dumps(json.loads(line)["messages"], ensure_ascii=False)
seen = {prompt(l) for l in train[:train_n]}
held = [l for l in train[train_n:] if prompt(l) not in seen]
if len(held) != held_n:
    sys.exit(f"error: {held_n - len(held)} held-out prompts repeat a training prompt; change the seed or the sizes")
for name, lines in (("demo_arith_sft", sft[:sft_n]), ("demo_arith_train", train[:train_n]),
                    ("demo_arith_heldout", held)):
    with open(f"data/rl_tasks/{name}.jsonl", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote data/rl_tasks/{name}.jsonl ({len(lines)})")
PY
"$AJI" tasks check data/rl_tasks/demo_arith_train.jsonl --verifier number
"$AJI" tasks check data/rl_tasks/demo_arith_heldout.jsonl --verifier number
"$AJI" sft check --input data/rl_tasks/demo_arith_sft.jsonl
