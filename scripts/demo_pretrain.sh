#!/usr/bin/env bash
# The pretraining part of `make demo`: assembles the corpus (the English + Korean text that
# ships in data/corpus/train, plus the documents the data stage cleaned from web pages, when
# given), trains a tokenizer and the demo model (configs/demo-small.json: Llama-style, L4 d256,
# ~7.6M parameters) on it for a fixed number of steps (work, not wall time: a busy machine takes
# longer but trains the same model), then prints samples from the trained model.
#
#   scripts/demo_pretrain.sh [WORK_DIR] [CLEAN_DIR]   (default WORK_DIR: out/demo-pretrain;
#                                                      CLEAN_DIR: an `aji data run` --out folder)
#
# Environment: AJI (the binary; default build/aji), PRETRAIN_CONFIG (default
# configs/demo-small.json), PRETRAIN_STEPS (optimizer steps of 2,048 tokens; default 700, about
# 7 minutes on a quiet 2-core machine), PRETRAIN_LR (default 3e-3), DEMO_MINUTES (a time budget
# instead of PRETRAIN_STEPS: the step count then depends on the machine's speed), AJI_THREADS
# (threads; default all cores). Re-running starts the training over (--force); continue an
# interrupted run with: $AJI pretrain --out WORK_DIR/run --resume
set -euo pipefail
cd "$(dirname "$0")/.."
AJI=${AJI:-build/aji}
WORK=${1:-out/demo-pretrain}
CLEAN=${2:-}
CONFIG=${PRETRAIN_CONFIG:-configs/demo-small.json}
STEPS=${PRETRAIN_STEPS:-700}
LR=${PRETRAIN_LR:-3e-3}
if [ -n "${DEMO_MINUTES:-}" ]; then BUDGET=(--time-budget "$DEMO_MINUTES"); WHAT="about $DEMO_MINUTES minutes"
else BUDGET=(--steps "$STEPS"); WHAT="$STEPS steps ($((STEPS * 2048)) tokens)"; fi
mkdir -p "$WORK"

if [ ! -x "$AJI" ]; then
  echo "aji binary not found at $AJI (build it first: make build)" >&2
  exit 1
fi

echo "== 1. corpus: data/corpus/train${CLEAN:+ + the web documents that the data stage cleaned ($CLEAN)}"
rm -rf "$WORK/corpus"
mkdir -p "$WORK/corpus"
cp data/corpus/train/*.txt "$WORK/corpus/"
if [ -n "$CLEAN" ]; then
  # One document per line (what `aji data tokenize` reads from text files): the kept
  # documents of every language, their line breaks turned into spaces.
  find "$CLEAN" -path "$CLEAN/dropped_samples" -prune -o -name '*.jsonl.zst' -print | LC_ALL=C sort |
    xargs -r zstd -dcq | python3 -c '
import json, sys
for line in sys.stdin:
    if line.strip():
        t = " ".join(json.loads(line)["text"].split())
        if t: print(t)' > "$WORK/corpus/web_clean.txt"
fi
python3 - "$WORK/corpus" <<'PY' | tee "$WORK/corpus.txt"
import os, sys
d = sys.argv[1]
docs = lambda p: sum(1 for l in open(p, encoding="utf-8", errors="replace") if l.strip())
files = sorted(os.listdir(d))
tb = sum(os.path.getsize(os.path.join(d, f)) for f in files)
td = sum(docs(os.path.join(d, f)) for f in files)
print(f"corpus: {len(files)} files, {tb} bytes, {td} documents (lines)")
if "web_clean.txt" in files:
    p = os.path.join(d, "web_clean.txt")
    b, n = os.path.getsize(p), docs(p)
    print(f"from the data stage: {n} documents, {b} bytes = {100 * b / tb:.1f}% of the corpus bytes, {100 * n / td:.2f}% of its documents (lines)")
PY

echo "== 2. tokenizer: byte-level BPE, 8192 tokens, on the corpus"
"$AJI" tokenizer train --input "$WORK/corpus" --vocab-size 8192 --out "$WORK/tokenizer.json"

echo "== 3. token shards (5% of the documents held out for validation)"
"$AJI" data tokenize --tokenizer "$WORK/tokenizer.json" --input "$WORK/corpus" --out "$WORK/shards" \
  --val-fraction 0.05 --force

echo "== 4. pretraining $(basename "$CONFIG" .json) for $WHAT"
"$AJI" pretrain --config "$CONFIG" --data "$WORK/shards" --out "$WORK/run" --force \
  "${BUDGET[@]}" --batch-size 8 --seq-len 256 --lr "$LR" --warmup 20 \
  --eval-every 100 --eval-batches 8 --sample-every 100 --sample-tokens 48 --save-every 100 --keep 2

echo "== 5. samples from the trained model"
for prompt in "ROMEO:" "And God said" "The government said" "이 영화는" "정부는"; do
  echo "--- prompt: $prompt"
  "$AJI" generate --model "$WORK/run" --prompt "$prompt" --max-tokens 60 --temperature 0.8 --top-k 40 --seed 1
done

echo "== 6. held-out news (never trained on; first 100 lines): loss and bits per byte"
for lang in en ko; do
  head -n 100 "data/corpus/heldout/${lang}_news_dev.txt" > "$WORK/heldout_$lang.txt"
  echo -n "$lang: "
  "$AJI" score --model "$WORK/run" --input "$WORK/heldout_$lang.txt"
done
echo "run directory: $WORK/run (metrics.jsonl, loss.svg, checkpoints)"
