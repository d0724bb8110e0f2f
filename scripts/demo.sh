#!/usr/bin/env bash
# `make demo`: the whole pipeline, tiny, on data that ships with the repo.
#   1. clean real web pages (WARC + HTML) into text       — aji data run
#   2. train a byte-level BPE tokenizer on English+Korean  — aji tokenizer train
#   3. tokenize the bundled corpus plus the documents step 1 cleaned, pretrain the demo model
#      (configs/demo-small.json), sample from it — aji data tokenize / pretrain / generate / score
#   4. supervised fine-tuning on short chat conversations, chat measured before and after — aji sft train / chat
#   5. a spam classifier fine-tuned from the base model          — aji classify train
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
  quick) : "${PRETRAIN_STEPS:=6}" "${SFT_STEPS:=4}" "${CLS_STEPS:=4}" "${CHAT_MAX_TOKENS:=6}" ;;
  default) : "${PRETRAIN_STEPS:=700}" "${SFT_STEPS:=200}" "${CLS_EPOCHS:=2}" ;;
  long) : "${PRETRAIN_STEPS:=5000}" "${SFT_STEPS:=800}" "${CLS_EPOCHS:=3}" ;;
  *) echo "DEMO_SCALE must be quick, default or long, not '$SCALE'" >&2; exit 2 ;;
esac
export PRETRAIN_STEPS SFT_STEPS
[ -n "${CHAT_MAX_TOKENS:-}" ] && export CHAT_MAX_TOKENS
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
AJI="$AJI" scripts/demo_pretrain.sh "$OUT/pretrain" "$OUT/clean" 2>&1 | tee "$OUT/pretrain.log"
stamp "tokenizer + pretraining + samples" "$t"

echo
echo "################ 5. supervised fine-tuning, chat measured before and after ################"
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
  sed -n 's/^corpus: /- corpus: /p; s/^from the data stage: /- from the data stage (step 1): /p' "$OUT/pretrain/corpus.txt" 2>/dev/null || true
  echo "- model: $(basename "${PRETRAIN_CONFIG:-configs/demo-small.json}"), $PRETRAIN_STEPS steps of 8 x 256 tokens"
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
  echo "## Chat"
  echo
  if [ -f "$OUT/sft/chat_base.json" ] && [ -f "$OUT/sft/chat_sft.json" ]; then
    python3 - "$OUT/sft/chat_base.json" "$OUT/sft/chat_sft.json" <<'PY' || true
import json, sys
runs = [json.load(open(p, encoding="utf-8")) for p in sys.argv[1:]]
d0 = runs[0]
print(f"{len(d0['replies'])} fixed prompts (data/sft/demo_chat_prompts.jsonl, English and Korean), each its own "
      f"conversation, at most {d0['max_tokens']} tokens per reply; greedy, and sampled with `{d0['decoding']['sampled']}`. "
      "A reply is degenerate when it is empty, its most frequent word is over half of it, a 1-4-word n-gram repeats "
      "3 times in a row, one 4-word phrase occurs 3 times anywhere, a 2-8 character unit repeats 4 times in a row, or one character is over half of it "
      "(scripts/demo_chat_eval.py); not degenerate does not mean sensible, read the replies. Ended its turn: the "
      "model closed its reply with <|im_end|> before the token limit. Identity: exact = the reply equals the answer in "
      "data/sft/identity.jsonl; names itself = it says aji / 아지 (trained questions, and held-out paraphrases).")
print()
print("| model | decoding | degenerate (en) | degenerate (ko) | ended its turn | identity exact | names itself (trained q.) | names itself (held-out q.) |")
print("|---|---|---|---|---|---|---|---|")
f = lambda v: f"{v[0]}/{v[1]}"
for d in runs:
    for mode, s in d["summary"].items():
        print(f"| {d['label']} | {mode} | {f(s['degenerate_en'])} | {f(s['degenerate_ko'])} | {f(s['ended'])} | {f(s['identity_exact'])} | "
              f"{f(s['identity_contains_trained'])} | {f(s['identity_contains_held-out'])} |")
print()
print("Replies before (base model with the chat template) and after SFT:")
print()
print("```")
one = lambda t: " ".join(t.split()) or "(empty)"
for r0, r1 in zip(runs[0]["replies"], runs[1]["replies"]):
    print(f"user: {r0['prompt']}")
    for label, r in (("base", r0), ("SFT ", r1)):
        for mode in ("greedy", "sampled"):
            flag = "  [degenerate]" if r[mode]["degenerate"] else ""
            print(f"  {label} {mode:7}: {one(r[mode]['reply'])}{flag}")
print("```")
PY
  elif [ -f "$OUT/sft/chat.txt" ]; then echo '```'; cat "$OUT/sft/chat.txt"; echo '```'; fi
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
echo
echo "Talk to the fine-tuned model:"
echo "  $AJI chat --model $OUT/sft/run                (in this terminal)"
echo "  $AJI serve --model $OUT/sft/run               then open http://127.0.0.1:8080/"
