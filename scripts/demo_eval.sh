#!/usr/bin/env bash
# The evaluation part of `make demo`: the demo's models side by side on a few bundled tasks
# (data/eval, docs/eval.md), each at 0 and k shots, scored as lm-evaluation-harness does (the
# summed log-probability of each choice; no chat template, so that every model sees the same
# prompts), then `aji eval compare` (compare.md, compare.svg).
#
#   scripts/demo_eval.sh WORK_DIR RUN_DIR:LABEL...     e.g. out/demo/eval out/demo/pretrain/run:base
#
# Environment: AJI (binary; build/aji), EVAL_TASKS (default "arc_easy piqa klue_nli ko_analogy":
# two English multiple-choice tasks, Korean NLI and the Korean "A -> B" analogies), EVAL_SHOTS
# (default "0 3"), EVAL_LIMIT (items per task, default 100), AJI_THREADS.
set -euo pipefail
cd "$(dirname "$0")/.."
AJI=${AJI:-build/aji}
WORK=${1:?usage: scripts/demo_eval.sh WORK_DIR RUN_DIR:LABEL...}
shift
[ $# -gt 0 ] || { echo "usage: scripts/demo_eval.sh WORK_DIR RUN_DIR:LABEL..." >&2; exit 2; }
read -r -a TASKS <<< "${EVAL_TASKS:-arc_easy piqa klue_nli ko_analogy}"
read -r -a SHOTS <<< "${EVAL_SHOTS:-0 3}"
LIMIT=${EVAL_LIMIT:-100}
mkdir -p "$WORK"
runs=()
for spec in "$@"; do
  model=${spec%:*} label=${spec##*:}
  echo "== $label ($model): ${TASKS[*]}, shots ${SHOTS[*]}, first $LIMIT items each"
  rm -rf "${WORK:?}/$label"
  "$AJI" eval run --model "$model" --tasks "${TASKS[@]}" --shots "${SHOTS[@]}" --limit "$LIMIT" --out "$WORK/$label"
  runs+=("$WORK/$label")
done
echo "== side by side"
"$AJI" eval compare "${runs[@]}" --out "$WORK/compare"
