#!/usr/bin/env bash
# The memorization experiment (docs/eval-memorization.md): do documents that occur more often
# in the training data get memorized more, and does `aji data dedup` remove the effect?
#
#   scripts/memorization_run.sh [WORK_DIR]        (default: out/memorization)
#
# 1. Builds a JSONL corpus from the bundled English news (data/corpus/train/en_news.txt):
#    documents of 2+ consecutive lines (>= 240 bytes, about 75 tokens); BACKGROUND of them. PER_LEVEL chosen documents are repeated
#    1, 2, 4, 8, 16 and 32 times; the other documents occur once; the lines are shuffled
#    (seeded) so the copies are spread through the corpus.
# 2. Trains a byte-level BPE tokenizer (2048 tokens) on the same news text, and a very small
#    Llama-style model (L2 d96, tied embeddings, context 80, ~0.42M parameters: sized for a
#    shared 2-core machine) for STEPS steps of 8 x 80 tokens on the raw corpus.
# 3. Runs `aji eval memorize` (32-token prefix, 32-token greedy suffix) on the raw corpus.
# 4. Deduplicates the corpus with `aji data dedup run`, trains the same model for the same
#    steps on what is left, and probes it against the RAW corpus again (so the buckets still
#    say how often each document occurred before dedup).
#
# Environment: AJI (binary; default build/aji), STEPS (default 400), PER_LEVEL (default 12),
# BACKGROUND (default 300), SEED (default 1), AJI_THREADS. Re-running starts over (--force everywhere).
set -euo pipefail
cd "$(dirname "$0")/.."
AJI=${AJI:-build/aji}
WORK=${1:-out/memorization}
STEPS=${STEPS:-400}
PER_LEVEL=${PER_LEVEL:-12}
BACKGROUND=${BACKGROUND:-300}
SEED=${SEED:-1}
mkdir -p "$WORK"
[ -x "$AJI" ] || { echo "aji binary not found at $AJI (build it first)" >&2; exit 1; }

echo "== 1. corpus: $PER_LEVEL documents each repeated 1, 2, 4, 8, 16, 32 times, the rest once"
python3 - "$WORK" "$PER_LEVEL" "$SEED" "$BACKGROUND" <<'EOF'
import json, random, sys
work, per_level, seed, background = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lines = [l.strip() for l in open("data/corpus/train/en_news.txt", encoding="utf-8") if l.strip()]
docs, cur = [], []
for l in lines:
    cur.append(l)
    if sum(len(x) + 1 for x in cur) >= 240:
        docs.append(" ".join(cur)); cur = []
rng = random.Random(seed)
order = list(range(len(docs)))
rng.shuffle(order)
levels = [1, 2, 4, 8, 16, 32]
copies = {}
k = 0
for lv in levels:
    for _ in range(per_level):
        copies[order[k]] = lv; k += 1
keep = set(order[:k + background])  # the chosen documents, then BACKGROUND that occur once
out = []
for i, d in enumerate(docs):
    if i in keep:
        out += [d] * copies.get(i, 1)
rng.shuffle(out)
with open(f"{work}/corpus.jsonl", "w", encoding="utf-8") as f:
    for d in out:
        f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
with open(f"{work}/corpus_design.json", "w") as f:
    json.dump({"documents": len(keep), "lines": len(out), "per_level": per_level, "levels": levels,
               "chosen": {str(i): c for i, c in copies.items()}}, f, indent=1)
print(f"{len(keep)} distinct documents, {len(out)} lines in the corpus")
EOF

cat > "$WORK/model.json" <<'EOF'
{
  "comment": "memorization experiment: Llama-style L2 d96, tied embeddings, context 80, vocab 2048 (~0.42M parameters)",
  "arch": "llama", "vocab_size": 2048, "n_layer": 2, "n_head": 3, "n_kv_head": 3, "d_model": 96,
  "d_ff": 256, "max_seq_len": 80, "norm_eps": 1e-5, "rope_theta": 10000, "tied_embeddings": true,
  "qk_norm": false
}
EOF

echo "== 2. tokenizer (2048 tokens, on the news text)"
"$AJI" tokenizer train --input data/corpus/train/en_news.txt --vocab-size 2048 --out "$WORK/tokenizer.json"

train() {  # train NAME JSONL
  local name=$1 input=$2
  "$AJI" data tokenize --tokenizer "$WORK/tokenizer.json" --input "$input" --jsonl-field text \
    --out "$WORK/$name/shards" --val-fraction 0.02 --seed "$SEED" --force
  "$AJI" pretrain --config "$WORK/model.json" --data "$WORK/$name/shards" --out "$WORK/$name/run" --force \
    --steps "$STEPS" --batch-size 8 --seq-len 80 --lr 3e-3 --warmup 20 --seed "$SEED" \
    --eval-every 100 --eval-batches 4 --save-every "$STEPS" --keep 1
}
probe() {  # probe NAME TITLE
  "$AJI" eval memorize --model "$WORK/$1/run" --data "$WORK/corpus.jsonl" --prefix-tokens 32 --suffix-tokens 32 \
    --max-per-bucket 64 --seed "$SEED" --out "$WORK/$1/probe" --title "$2" --force
}

echo "== 3. pretraining on the raw corpus ($STEPS steps of 8 x 80 tokens) and the probe"
train raw "$WORK/corpus.jsonl"
probe raw "raw corpus: extraction rate by copies"

echo "== 4. the same after aji data dedup"
rm -rf "$WORK/dedup"
"$AJI" data dedup run --input "$WORK/corpus.jsonl" --out "$WORK/dedup"
train dedup "$WORK/dedup/out"
probe dedup "after dedup: extraction rate by copies (before dedup)"

echo "results: $WORK/raw/probe/{results.json,memorization.svg} $WORK/dedup/probe/{results.json,memorization.svg}"
