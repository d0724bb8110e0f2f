#!/usr/bin/env bash
# `make demo`: the whole pipeline, tiny, on data that ships with the repo.
#   1. clean real web pages (WARC + HTML) into text       — aji data run
#   2. train a byte-level BPE tokenizer on English+Korean  — aji tokenizer train
#   3. tokenize the bundled corpus plus the documents step 1 cleaned, pretrain the demo model
#      (configs/demo-small.json), sample from it — aji data tokenize / pretrain / generate / score
#   4. supervised fine-tuning on short chat conversations, chat measured before and after — aji sft train / chat
#   5. a spam classifier fine-tuned from the base model          — aji classify train
#   6. RL with a verifiable reward (GRPO) from the SFT model on arithmetic word problems,
#      held-out pass@1 before and after, chat measured again   — aji grpo
#   7. evaluation: base, SFT and RL models side by side on bundled tasks at 0 and 3 shots
#                                                                — aji eval run / compare
#   8. the final chat model exported to GGUF for llama.cpp       — aji export gguf
# It ends with a report card, printed and written to out/demo/REPORT.md and REPORT.html
# (loss and reward curves inline: open it in a browser).
#
# Sizes (DEMO_SCALE): the work of each stage is fixed (steps, not minutes), so a busy machine
# takes longer but trains the same models.
#   quick    a smoke run of every stage in a minute or two (what the CI test runs)
#   default  about 15 minutes on a quiet 2-core machine, build included
#   long     about an hour: a noticeably better base and chat model
# Environment: AJI (binary, default build/aji), DEMO_OUT (default out/demo), DEMO_SCALE, and
# per-stage overrides PRETRAIN_STEPS, SFT_STEPS, CLS_EPOCHS / CLS_STEPS, RL_STEPS (and the other
# RL_* of scripts/demo_rl.sh), EVAL_LIMIT / EVAL_TASKS / EVAL_SHOTS (scripts/demo_eval.sh),
# GGUF_TYPE (default q8_0), or DEMO_MINUTES (a pretraining time budget instead of steps),
# AJI_THREADS (threads, default all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
AJI=${AJI:-build/aji}
OUT=${DEMO_OUT:-out/demo}
SCALE=${DEMO_SCALE:-default}
case "$SCALE" in
  quick) : "${PRETRAIN_STEPS:=6}" "${SFT_STEPS:=4}" "${CLS_STEPS:=4}" "${CHAT_MAX_TOKENS:=6}" \
           "${RL_STEPS:=2}" "${RL_PROMPTS:=4}" "${RL_GROUP:=4}" "${RL_EVAL_LIMIT:=8}" "${RL_EVAL_SAMPLES:=4}" \
           "${EVAL_LIMIT:=8}" ;;
  default) : "${PRETRAIN_STEPS:=700}" "${SFT_STEPS:=200}" "${CLS_EPOCHS:=2}" "${RL_STEPS:=30}" "${EVAL_LIMIT:=100}" ;;
  long) : "${PRETRAIN_STEPS:=5000}" "${SFT_STEPS:=800}" "${CLS_EPOCHS:=3}" "${RL_STEPS:=150}" "${RL_EVAL_LIMIT:=200}" \
          "${EVAL_LIMIT:=300}" ;;
  *) echo "DEMO_SCALE must be quick, default or long, not '$SCALE'" >&2; exit 2 ;;
esac
export PRETRAIN_STEPS SFT_STEPS RL_STEPS EVAL_LIMIT
for v in RL_PROMPTS RL_GROUP RL_EVAL_LIMIT RL_EVAL_SAMPLES; do [ -n "${!v:-}" ] && export "${v?}"; done
GGUF_TYPE=${GGUF_TYPE:-q8_0}
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

echo
echo "################ 7. RL with a verifiable reward (GRPO) ################"
t=$(date +%s)
AJI="$AJI" scripts/demo_rl.sh "$OUT/sft/run" "$OUT/rl" 2>&1 | tee "$OUT/rl.log"
stamp "RL (GRPO) + chat" "$t"

echo
echo "################ 8. evaluation: base, SFT and RL side by side ################"
t=$(date +%s)
AJI="$AJI" scripts/demo_eval.sh "$OUT/eval" "$OUT/pretrain/run:base" "$OUT/sft/run:sft" "$OUT/rl/run:rl" 2>&1 |
  tee "$OUT/eval.log"
stamp "evaluation" "$t"

echo
echo "################ 9. the final chat model as GGUF (llama.cpp) ################"
t=$(date +%s)
rm -f "$OUT/aji-chat.gguf"
"$AJI" export gguf --model "$OUT/rl/run" --out "$OUT/aji-chat.gguf" --type "$GGUF_TYPE" --name aji-demo-chat 2>&1 |
  tee "$OUT/export.log"
stamp "GGUF export" "$t"

# ---- report card ----
REPORT="$OUT/REPORT.md"
{
  echo "# aji demo report card"
  echo
  echo "Run on $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, threads ${AJI_THREADS:-all}, scale $SCALE" \
       "(pretraining $PRETRAIN_STEPS steps, SFT $SFT_STEPS steps, classifier ${CLS_STEPS:+$CLS_STEPS steps}${CLS_EPOCHS:+$CLS_EPOCHS epochs}," \
       "RL $RL_STEPS GRPO steps)."
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
  echo "## Reinforcement learning (GRPO)"
  echo
  if [ -f "$OUT/rl/run/summary.json" ]; then
    python3 - "$OUT/rl/run/summary.json" "$OUT/rl/run/run.json" "$OUT/rl/run/metrics.jsonl" <<'PY' || echo "(see $OUT/rl.log)"
import json, sys
s = json.load(open(sys.argv[1]))
o = json.load(open(sys.argv[2])).get("options", {})
steps = [m for m in map(json.loads, open(sys.argv[3])) if "reward" in m and "eval_pass@1" not in m]
b, a = s["eval_before"], s["eval_after"]
g = b["samples"]
print(f"GRPO from the SFT model on arithmetic word problems in English and Korean (+ and -, operands 2..9; "
      f"data/rl_tasks/demo_arith_train.jsonl, made by scripts/demo_make_rl_tasks.sh), reward 1 when the reply's "
      f"answer is right (verifier `{s['verifier']}`): {s['steps']} steps x {o.get('prompts_per_step', '?')} prompts x "
      f"G={o.get('group_size', '?')} sampled replies at temperature {o.get('temperature', '?')}, lr {o.get('lr', 0):g}, "
      f"KL coefficient {o.get('kl_coef', '?')}. Held-out: {b['tasks']} problems from data/rl_tasks/demo_arith_heldout.jsonl "
      f"(in neither the SFT nor the RL training set), {g} samples each at the same temperature.")
print()
print(f"| held-out ({b['tasks']} problems x {g} samples) | pass@1 | pass@{g} | stopped | reply tokens | KL to SFT |")
print("|---|---|---|---|---|---|")
for name, e in (("SFT model (before RL)", b), ("after RL", a)):
    print(f"| {name} | {e['pass@1']:.3f} | {e[f'pass@{g}']:.3f} | {e['stop_rate']:.2f} | {e['reply_len']:.1f} | {e['kl']:.3f} |")
print()
d = a["pass@1"] - b["pass@1"]
# Standard error of the difference, treating the tasks x samples replies as independent draws
# (samples of one problem are correlated, so the true error is larger: a lower bound).
n = max(1, b["tasks"] * g)
se = ((b["pass@1"] * (1 - b["pass@1"]) + a["pass@1"] * (1 - a["pass@1"])) / n) ** 0.5
if abs(d) <= 2 * se:
    verdict = f"no clear change: within 2 standard errors (±{2 * se:.3f}) of no change"
else:
    verdict = ("RL lifted" if d > 0 else "RL lowered") + f" held-out pass@1 by more than 2 standard errors (±{2 * se:.3f})"
print(f"- held-out pass@1: {b['pass@1']:.3f} -> {a['pass@1']:.3f} ({d:+.3f}): {verdict} "
      "(one seed, reported as it came out).")
k = min(5, len(steps))
first = sum(m["reward"] for m in steps[:k]) / k
last = sum(m["reward"] for m in steps[-k:]) / k
print(f"- rollout reward (training problems), mean of the first {k} steps {first:.3f}, of the last {k} {last:.3f}; "
      f"KL to the SFT model at the last step {steps[-1]['kl']:.3f}; "
      f"steps where most groups had equal rewards (no signal): {s['steps_mostly_zero_std']}")
print(f"- verifier: {s['verifier_summary']}")
PY
  else
    echo "- (not run; see $OUT/rl.log)"
  fi
  echo "- run directory: $OUT/rl/run (metrics.jsonl, summary.json, loss.svg)"
  echo
  echo "![GRPO reward per step and held-out pass@1](rl/reward.svg)"
  echo
  echo "## Chat"
  echo
  if [ -f "$OUT/sft/chat_base.json" ] && [ -f "$OUT/sft/chat_sft.json" ]; then
    chat_runs=("$OUT/sft/chat_base.json" "$OUT/sft/chat_sft.json")
    [ -f "$OUT/rl/chat_rl.json" ] && chat_runs+=("$OUT/rl/chat_rl.json")
    python3 - "${chat_runs[@]}" <<'PY' || true
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
print("Replies before (base model with the chat template), after SFT" + (" and after RL:" if len(runs) > 2 else ":"))
print()
print("```")
one = lambda t: " ".join(t.split()) or "(empty)"
names = ("base", "SFT ", "RL  ")
for rs in zip(*(d["replies"] for d in runs)):
    print(f"user: {rs[0]['prompt']}")
    for label, r in zip(names, rs):
        for mode in ("greedy", "sampled"):
            flag = "  [degenerate]" if r[mode]["degenerate"] else ""
            print(f"  {label} {mode:7}: {one(r[mode]['reply'])}{flag}")
print("```")
PY
  elif [ -f "$OUT/sft/chat.txt" ]; then echo '```'; cat "$OUT/sft/chat.txt"; echo '```'; fi
  echo
  echo "## Evaluation"
  echo
  if [ -f "$OUT/eval/compare/compare.md" ]; then
    echo "The pretrained (base), SFT and RL models on bundled tasks (data/eval; docs/eval.md), the first" \
         "${EVAL_LIMIT} items of each, 0-shot and 3-shot (KLUE-NLI: 1-shot; 3 examples do not fit the 256-token context)," \
         "scored as lm-evaluation-harness does (no chat template: every model sees the same prompts; items longer than" \
         "the context are left out, n in eval/*/results.json). Chance: 0.25 on arc_easy, 0.5 on piqa, 0.33 on klue_nli," \
         "0 on ko_analogy (exact answer). Value ± standard error; CORE's centered accuracy is in compare.md."
    echo
    grep -v -e '^## ' -e '^!\[' -e '| core_centered |' "$OUT/eval/compare/compare.md"
    echo
    echo "![scores per task and model](eval/compare/compare.svg)"
  else
    echo "- (not run; see $OUT/eval.log)"
  fi
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
  echo
  echo "## The final chat model in llama.cpp (GGUF)"
  echo
  if [ -f "$OUT/aji-chat.gguf" ]; then
    echo "- file: $OUT/aji-chat.gguf ($GGUF_TYPE, $(( $(stat -c %s "$OUT/aji-chat.gguf") / 1024 )) KiB; weights, tokenizer and chat" \
         "template in one file; exported from the RL model $OUT/rl/run by \`aji export gguf\`, docs/export.md)"
    sed -n 's/^wrote [^:]*: /- contents: /p' "$OUT/export.log"
    echo "- run it with llama.cpp (chat mode, the template inside the file): \`llama-cli -m $OUT/aji-chat.gguf -cnv\`"
  else
    echo "- (not written; see $OUT/export.log)"
  fi
  echo
  echo "## Where everything is"
  echo
  echo "- report card: $OUT/REPORT.md, $OUT/REPORT.html; logs: $OUT/*.log"
  echo "- cleaned web text: $OUT/clean; corpus, tokenizer and shards: $OUT/pretrain"
  echo "- models (run directories with checkpoints, metrics.jsonl, loss.svg): base $OUT/pretrain/run," \
       "SFT $OUT/sft/run, RL $OUT/rl/run, spam classifier $OUT/classify/run"
  echo "- chat measurements: $OUT/sft/chat_base.json, $OUT/sft/chat_sft.json, $OUT/rl/chat_rl.json;" \
       "evaluation: $OUT/eval (results.json per model, compare/compare.md and compare.svg); GGUF: $OUT/aji-chat.gguf"
} > "$REPORT"
python3 scripts/demo_report_html.py "$REPORT" "$OUT/REPORT.html" || echo "(REPORT.html not written)"
echo
cat "$REPORT"
echo
echo "report card: $REPORT and $OUT/REPORT.html (open it in a browser)"
echo
echo "Talk to the final chat model (SFT, then RL):"
echo "  $AJI chat --model $OUT/rl/run                 (in this terminal)"
echo "  $AJI serve --model $OUT/rl/run                then open http://127.0.0.1:8080/"
[ -f "$OUT/aji-chat.gguf" ] && echo "  llama-cli -m $OUT/aji-chat.gguf -cnv    (llama.cpp, the GGUF export)"
echo "The model before RL: $AJI chat --model $OUT/sft/run"
