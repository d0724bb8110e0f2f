#!/usr/bin/env bash
# The evaluation part of `make demo`: the demo's models side by side on a few bundled tasks
# (data/eval, docs/eval.md), each at 0 and k shots, scored as lm-evaluation-harness does (the
# summed log-probability of each choice; no chat template, so that every model sees the same
# prompts), then `aji eval compare` (compare.md, compare.svg).
#
#   scripts/demo_eval.sh WORK_DIR RUN_DIR:LABEL...     e.g. out/demo/eval out/demo/pretrain/run:base
#
# Environment: AJI (binary; build/aji), EVAL_TASKS (default "arc_easy piqa ko_analogy klue_nli:1":
# two English multiple-choice tasks, the Korean "A -> B" analogies and Korean NLI; NAME:K runs that
# task at 0 and K shots instead of 0 and EVAL_K, because 3 KLUE-NLI examples do not fit the demo
# model's 256-token context), EVAL_K (default 3), EVAL_LIMIT (items per task, default 50), AJI_THREADS.
# One `aji eval run` per shot count; each model's results.json holds all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
AJI=${AJI:-build/aji}
WORK=${1:?usage: scripts/demo_eval.sh WORK_DIR RUN_DIR:LABEL...}
shift
[ $# -gt 0 ] || { echo "usage: scripts/demo_eval.sh WORK_DIR RUN_DIR:LABEL..." >&2; exit 2; }
read -r -a SPECS <<< "${EVAL_TASKS:-arc_easy piqa ko_analogy klue_nli:1}"
K=${EVAL_K:-3}
LIMIT=${EVAL_LIMIT:-50}
declare -A BY_K=()  # shot count -> its tasks, in the order given
KS=()
for t in "${SPECS[@]}"; do
  k=$K
  [[ "$t" == *:* ]] && k=${t##*:} t=${t%%:*}
  [ -n "${BY_K[$k]:-}" ] || KS+=("$k")
  BY_K[$k]="${BY_K[$k]:-} $t"
done
mkdir -p "$WORK"
runs=()
for spec in "$@"; do
  model=${spec%:*} label=${spec##*:}
  rm -rf "${WORK:?}/$label"
  parts=()
  for k in "${KS[@]}"; do
    read -r -a tasks <<< "${BY_K[$k]}"
    echo "== $label ($model): ${tasks[*]}, 0 and $k shots, first $LIMIT items each"
    "$AJI" eval run --model "$model" --tasks "${tasks[@]}" --shots 0 "$k" --limit "$LIMIT" --out "$WORK/$label/k$k"
    parts+=("$WORK/$label/k$k/results.json")
  done
  python3 - "$WORK/$label/results.json" "${parts[@]}" <<'PY'
import json, os, sys
runs = [json.load(open(p, encoding="utf-8")) for p in sys.argv[2:]]
merged = {"model": runs[0]["model"], "results": [r for run in runs for r in run["results"]]}
with open(sys.argv[1] + ".tmp", "w", encoding="utf-8") as f:
    json.dump(merged, f, ensure_ascii=False, indent=1)
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
PY
  runs+=("$WORK/$label")
done
echo "== side by side"
"$AJI" eval compare "${runs[@]}" --out "$WORK/compare"
