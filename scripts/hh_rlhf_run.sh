#!/usr/bin/env bash
# RM -> PPO and DPO on real preference data (issue #14): Anthropic HH-RLHF helpful-base (test split,
# ../shared/data/hh_rlhf, MIT), from a small SFT model trained here on the same data.
#
#   scripts/hh_rlhf_run.sh [WORK_DIR]          (default: out/hh-rlhf)
#
# 0. aji prefs convert --format hh-rlhf (2,333 of 2,354 pairs; the rest are counted skips); a seeded
#    90/10 record split: train.jsonl (RM, DPO, SFT, PPO prompts), heldout.jsonl (evaluation only)
# 1. tokenizer (BPE, VOCAB tokens) and a small Llama (L2 d128, context 256, ~0.7M parameters) pretrained on the training
#    transcripts (prompt + chosen reply)
# 2. SFT on the training pairs' prompt + chosen reply (InstructGPT's demonstrations stand-in)
# 3. aji rm train on train.jsonl (+ its own 5% validation split); held-out pairwise accuracy of the RM
#    on heldout.jsonl, scored with aji rm score (pairs longer than the context are left out and counted)
# 4. aji ppo against the RM on the training prompts (KL to the SFT model, RM score per step)
# 5. aji dpo on train.jsonl with --val heldout.jsonl
# 6. greedy replies of SFT, PPO and DPO to a few held-out prompts (aji chat), scored by the RM
#
# Environment: AJI (default build/aji), VOCAB, PRE_STEPS, SFT_STEPS, RM_STEPS, RM_LR, PPO_STEPS, PPO_KL,
# PPO_LR, DPO_STEPS, DPO_LR, DPO_BETA, SFT_MODEL (an existing SFT run or model directory, e.g. the demo's
# out/demo/sft/run: steps 1-2 are skipped and 3-6 start from it). Summary in WORK_DIR/report.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
AJI=${AJI:-build/aji}
WORK=${1:-out/hh-rlhf}
VOCAB=${VOCAB:-2048}
PRE_STEPS=${PRE_STEPS:-150}
SFT_STEPS=${SFT_STEPS:-60}
RM_STEPS=${RM_STEPS:-80}
RM_LR=${RM_LR:-1e-4}
PPO_STEPS=${PPO_STEPS:-15}
PPO_KL=${PPO_KL:-0.05}
PPO_LR=${PPO_LR:-3e-5}
DPO_STEPS=${DPO_STEPS:-40}
DPO_LR=${DPO_LR:-5e-6}
DPO_BETA=${DPO_BETA:-0.1}
SRC=${HH_FILE:-../shared/data/hh_rlhf/helpful-base-test.jsonl.gz}
mkdir -p "$WORK"
if [ ! -x "$AJI" ]; then echo "aji binary not found at $AJI (build it first: make build)" >&2; exit 1; fi

echo "== 0. convert and split"
"$AJI" prefs convert --format hh-rlhf "$SRC" --skip-invalid --out "$WORK/all.jsonl"
python3 - "$WORK" <<'PY'
import json, random, sys
w = sys.argv[1]
rows = [json.loads(l) for l in open(w + "/all.jsonl", encoding="utf-8")]
random.Random(1).shuffle(rows)
n_held = len(rows) // 10
held, train = rows[:n_held], rows[n_held:]
def dump(name, rs):
    with open(w + "/" + name, "w", encoding="utf-8") as f:
        for r in rs:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
dump("train.jsonl", train)
dump("heldout.jsonl", held)
# SFT conversations: prompt + chosen reply; pretraining text: the same, flattened
dump("sft.jsonl", [{"messages": r["prompt"] + r["chosen"], "source": r.get("source", "")} for r in train])
dump("text.jsonl", [{"text": "\n\n".join(("Human: " if m["role"] == "user" else "Assistant: ") + m["content"]
                                          for m in r["prompt"] + r["chosen"])} for r in train])
# PPO prompts: the training prompts (conversations ending with the user's turn)
dump("prompts.jsonl", [{"messages": r["prompt"]} for r in train])
# held-out pairs as two conversations each, for aji rm score
with open(w + "/heldout_chosen.jsonl", "w", encoding="utf-8") as c, open(w + "/heldout_rejected.jsonl", "w", encoding="utf-8") as rj:
    for r in held:
        c.write(json.dumps({"messages": r["prompt"] + r["chosen"]}, ensure_ascii=False) + "\n")
        rj.write(json.dumps({"messages": r["prompt"] + r["rejected"]}, ensure_ascii=False) + "\n")
# sample prompts: the first 4 held-out one-turn prompts
one = [r["prompt"][0]["content"] for r in held if len(r["prompt"]) == 1][:4]
json.dump(one, open(w + "/sample_prompts.json", "w"), ensure_ascii=False)
print("pairs: %d train, %d held out" % (len(train), len(held)))
PY
cat > "$WORK/model.json" <<JSON
{
  "comment": "A small Llama for the HH-RLHF run: L2 d128 4 heads, context 256, vocab $VOCAB.",
  "arch": "llama", "vocab_size": $VOCAB, "n_layer": 2, "n_head": 4, "n_kv_head": 4, "d_model": 128,
  "d_ff": 384, "max_seq_len": 256, "norm_eps": 1e-5, "rope_theta": 10000, "tied_embeddings": true,
  "qk_norm": false
}
JSON

SFT=${SFT_MODEL:-$WORK/sft}
if [ -n "${SFT_MODEL:-}" ]; then
  echo "== 1-2. skipped: starting from the SFT model $SFT_MODEL"
else
echo "== 1. tokenizer + pretraining ($PRE_STEPS steps)"
"$AJI" tokenizer train --input "$WORK/text.jsonl" --jsonl-field text --vocab-size "$VOCAB" --out "$WORK/tokenizer.json"
"$AJI" data tokenize --tokenizer "$WORK/tokenizer.json" --input "$WORK/text.jsonl" --jsonl-field text \
  --out "$WORK/shards" --val-fraction 0.05 --force
"$AJI" pretrain --config "$WORK/model.json" --data "$WORK/shards" --out "$WORK/base" --force \
  --steps "$PRE_STEPS" --batch-size 8 --seq-len 256 --lr 2e-3 --warmup 20 \
  --eval-every 100 --eval-batches 4 --sample-every 0 --save-every 0 --keep 1

echo "== 2. SFT ($SFT_STEPS steps)"
"$AJI" sft train --model "$WORK/base" --data "$WORK/sft.jsonl" --out "$WORK/sft" --force \
  --steps "$SFT_STEPS" --batch-size 8 --seq-len 256 --batching pack --lr 1e-3 --warmup 10 --decay linear \
  --eval-every 100 --save-every 0 --keep 1 --skip-invalid
fi

echo "== 3. reward model"
"$AJI" rm train --model "$SFT" --data "$WORK/train.jsonl" --out "$WORK/rm" --force \
  --steps "$RM_STEPS" --lr "$RM_LR" --batch-size 8 --val-fraction 0.05 --save-every 0 --keep 1 --skip-invalid
"$AJI" rm score --model "$WORK/rm" --input "$WORK/heldout_chosen.jsonl" --skip-invalid > "$WORK/heldout_chosen.scores" || true
"$AJI" rm score --model "$WORK/rm" --input "$WORK/heldout_rejected.jsonl" --skip-invalid > "$WORK/heldout_rejected.scores" || true

echo "== 4. PPO against the RM ($PPO_STEPS steps)"
"$AJI" ppo --model "$SFT" --reward "$WORK/rm" --prompts "$WORK/prompts.jsonl" --out "$WORK/ppo" --force \
  --steps "$PPO_STEPS" --kl-coef "$PPO_KL" --rollouts-per-step 16 --group-size 2 --max-new-tokens 48 \
  --lr "$PPO_LR" --save-every 0 --keep 1 --skip-invalid

echo "== 5. DPO"
"$AJI" dpo --model "$SFT" --data "$WORK/train.jsonl" --val "$WORK/heldout.jsonl" --out "$WORK/dpo" --force \
  --steps "$DPO_STEPS" --lr "$DPO_LR" --beta "$DPO_BETA" --batch-size 8 --eval-every 20 --kl-prompts 8 \
  --max-new-tokens 48 --save-every 0 --keep 1 --skip-invalid

echo "== 6. samples (greedy, 48 tokens) and report"
python3 - "$WORK" "$AJI" "$SFT" <<'PY'
import json, os, subprocess, sys, tempfile
w, aji, sft = sys.argv[1:4]
def scores(path):
    out = {}
    for l in open(path):
        l = l.strip()
        if l.startswith("{"):
            d = json.loads(l)
            if "score" in d:
                out[d["line"]] = d["score"]
    return out
c, r = scores(w + "/heldout_chosen.scores"), scores(w + "/heldout_rejected.scores")
both = sorted(set(c) & set(r))
acc = sum(1.0 if c[i] > r[i] else 0.5 if c[i] == r[i] else 0.0 for i in both) / max(len(both), 1)
rep = ["RM held-out pairwise accuracy (heldout.jsonl, pairs that fit the context): %.3f on %d pairs" % (acc, len(both))]
for name in ("rm", "ppo", "dpo"):
    p = w + "/" + name + "/summary.json"
    if os.path.exists(p):
        rep.append("%s summary: %s" % (name, open(p).read().strip()[:1500]))
prompts = json.load(open(w + "/sample_prompts.json"))
for model in ("sft", "ppo", "dpo"):
    replies = []
    for p in prompts:
        res = subprocess.run([aji, "chat", "--model", sft if model == "sft" else w + "/" + model, "--prompt", p, "--max-tokens", "48",
                              "--temperature", "0"], capture_output=True, text=True)
        replies.append(res.stdout.strip())
    conv = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8")
    for p, a in zip(prompts, replies):
        conv.write(json.dumps({"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a or "."}]}, ensure_ascii=False) + "\n")
    conv.close()
    sc = subprocess.run([aji, "rm", "score", "--model", w + "/rm", "--input", conv.name], capture_output=True, text=True).stdout
    s = [json.loads(l)["score"] for l in sc.splitlines() if l.startswith("{")]
    for k, (p, a) in enumerate(zip(prompts, replies)):
        rep.append("[%s] RM %s | %s -> %s" % (model, "%.3f" % s[k] if k < len(s) else "?", p[:80].replace("\n", " "), a.replace("\n", " ")[:200]))
open(w + "/report.txt", "w").write("\n".join(rep) + "\n")
print("\n".join(rep))
PY
