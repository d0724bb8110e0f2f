#!/usr/bin/env bash
# `make demo`: the whole pipeline, tiny, on data that ships with the repo.
#   1. clean real web pages (WARC + HTML) into text       — aji data run
#   2. train a byte-level BPE tokenizer on English+Korean  — aji tokenizer train
#   3. tokenize, pretrain the `tiny` model, sample from it — aji data tokenize / pretrain / generate / score
#   4. supervised fine-tuning on the bundled chat set, then chat — aji sft train / chat
#   5. a spam classifier fine-tuned from the base model          — aji classify train
# It ends with a report card, printed and written to out/demo/REPORT.md.
#
# It ends with a report card, printed and written to out/demo/REPORT.md and REPORT.html
# (loss curves inline: open it in a browser).
#
# Sizes (DEMO_SCALE): the work of each stage is fixed (steps, not minutes), so a busy machine
# takes longer but trains the same models.
#   quick    a smoke run of every stage in a minute or two (what the CI test runs)
#   default  about 15 minutes on a quiet 2-core machine, build included
#   long     about an hour: a noticeably better base and chat model
# Environment: AJI (binary, default build/aji), DEMO_OUT (default out/demo), DEMO_SCALE, and
# per-stage overrides PRETRAIN_STEPS, SFT_STEPS, CLS_EPOCHS / CLS_STEPS, or DEMO_MINUTES (a
# pretraining time budget instead of steps), AJI_THREADS (threads, default all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
AJI=${AJI:-build/aji}
OUT=${DEMO_OUT:-out/demo}
SCALE=${DEMO_SCALE:-default}
case "$SCALE" in
  quick) : "${PRETRAIN_STEPS:=6}" "${SFT_STEPS:=4}" "${CLS_STEPS:=4}" ;;
  default) : "${PRETRAIN_STEPS:=400}" "${SFT_STEPS:=150}" "${CLS_EPOCHS:=2}" ;;
  long) : "${PRETRAIN_STEPS:=3000}" "${SFT_STEPS:=600}" "${CLS_EPOCHS:=3}" ;;
  *) echo "DEMO_SCALE must be quick, default or long, not '$SCALE'" >&2; exit 2 ;;
esac
export PRETRAIN_STEPS SFT_STEPS
export CLS_EPOCHS=${CLS_EPOCHS:-} CLS_STEPS=${CLS_STEPS:-}
if [ ! -x "$AJI" ]; then
  echo "aji binary not found at $AJI (build it first: make build, or run make demo)" >&2
  exit 1
fi
mkdir -p "$OUT"
START=$(date +%s)
stage_times=()
stamp() { stage_times+=("$1|$(( $(date +%s) - ${2} ))"); }

echo "################ 1. data: web pages → clean text ################"
t=$(date +%s)
rm -rf "$OUT/clean"
"$AJI" data run --input tests/fixtures/data/warc/*.warc.gz tests/fixtures/data/extract/*.html \
  --out "$OUT/clean" --no-progress
stamp "data cleaning" "$t"

echo
echo "################ 2-4. tokenizer, pretraining, samples ################"
t=$(date +%s)
AJI="$AJI" scripts/demo_pretrain.sh "$OUT/pretrain" 2>&1 | tee "$OUT/pretrain.log"
stamp "tokenizer + pretraining + samples" "$t"

echo
echo "################ 5. supervised fine-tuning and chat ################"
t=$(date +%s)
AJI="$AJI" scripts/demo_sft.sh "$OUT/pretrain/run" "$OUT/sft" 2>&1 | tee "$OUT/sft.log"
stamp "SFT + chat" "$t"

echo
echo "################ 6. spam classifier ################"
t=$(date +%s)
if [ -x scripts/demo_classify.sh ]; then
  AJI="$AJI" scripts/demo_classify.sh "$OUT/pretrain/run" "$OUT/classify" 2>&1 | tee "$OUT/classify.log"
fi
stamp "spam classifier" "$t"

# ---- report card ----
REPORT="$OUT/REPORT.md"
{
  echo "# aji demo report card"
  echo
  echo "Run on $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, threads ${AJI_THREADS:-all}, scale $SCALE" \
       "(pretraining $PRETRAIN_STEPS steps, SFT $SFT_STEPS steps, classifier ${CLS_STEPS:+$CLS_STEPS steps}${CLS_EPOCHS:+$CLS_EPOCHS epochs})."
  echo
  echo "| stage | seconds |"
  echo "|---|---|"
  for s in "${stage_times[@]}"; do echo "| ${s%%|*} | ${s##*|} |"; done
  echo "| total | $(( $(date +%s) - START )) |"
  echo
  echo "## Data cleaning"
  echo
  if [ -f "$OUT/clean/report.json" ]; then
    python3 - "$OUT/clean/report.json" <<'PY' || echo "(see $OUT/clean/report.txt)"
import json, sys
t = json.load(open(sys.argv[1]))["total"]
print(f"- input: {t['input_bytes']} bytes of WARC/HTML")
for lang, n in sorted(t["kept_docs"].items()):
    print(f"- kept {lang}: {n} documents, {t['kept_bytes'][lang]} bytes")
for why, n in sorted(t["drops"].items(), key=lambda kv: -kv[1]):
    print(f"- dropped ({why}): {n}")
print(f"- errors: {t['errors_total']}")
PY
  fi
  echo
  echo "## Pretraining"
  echo
  grep -E "^(en|ko): " "$OUT/pretrain.log" | sed 's/^/- held-out /' || true
  last_val=$(grep -o '"val_loss":[^,}]*' "$OUT/pretrain/run/metrics.jsonl" 2>/dev/null | tail -1 | cut -d: -f2)
  [ -n "$last_val" ] && echo "- final validation loss: $last_val"
  echo "- run directory: $OUT/pretrain/run (metrics.jsonl, loss.svg, checkpoints)"
  echo
  echo "![pretraining loss (train and validation)](pretrain/run/loss.svg)"
  echo
  echo "## Supervised fine-tuning"
  echo
  grep -E "^done: " "$OUT/sft.log" | sed 's/^done: /- /' || true
  echo "- run directory: $OUT/sft/run"
  echo
  echo "![SFT loss (train and validation)](sft/run/loss.svg)"
  echo
  echo "## Chat (greedy)"
  echo
  if [ -f "$OUT/sft/chat.txt" ]; then echo '```'; cat "$OUT/sft/chat.txt"; echo '```'; fi
  echo
  echo "## Spam classifier (SMS Spam Collection)"
  echo
  grep -E "^spam classifier:" "$OUT/classify.log" 2>/dev/null | sed 's/^/- /' || echo "- (not run)"
  if [ -f "$OUT/classify/run/report.json" ]; then
    echo
    echo "Confusion matrix on the test split (rows: true label, columns: predicted):"
    echo
    python3 - "$OUT/classify/run/report.json" <<'PY' || true
import json, sys
r = json.load(open(sys.argv[1]))
labels, m = r["labels"], r["confusion_matrix"]
print("| true \\ predicted | " + " | ".join(labels) + " |")
print("|---|" + "---|" * len(labels))
for name, row in zip(labels, m):
    print(f"| {name} | " + " | ".join(str(x) for x in row) + " |")
PY
  fi
} > "$REPORT"
python3 scripts/demo_report_html.py "$REPORT" "$OUT/REPORT.html" || echo "(REPORT.html not written)"
echo
cat "$REPORT"
echo
echo "report card: $REPORT and $OUT/REPORT.html (open it in a browser)"
