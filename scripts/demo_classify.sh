#!/usr/bin/env bash
# The classification part of `make demo`: a spam classifier fine-tuned from the pretrained
# demo model on the SMS Spam Collection that ships in data/classify (license:
# data/classify/LICENSE-NOTE.txt). A class head reads the last token's hidden state; the last
# CLS_TRAINABLE blocks, the final norm and the head train (LLMs-from-scratch ch06 recipe).
# The split is stratified 70/10/20 on the natural distribution, so the test set is 86.6% ham:
# the number to beat is that majority baseline.
#
#   scripts/demo_classify.sh BASE_RUN_DIR [WORK_DIR]      (default WORK_DIR: out/demo-classify)
#
# Environment: AJI (binary; build/aji), CLS_EPOCHS (passes over the 3,902 training messages; 2),
# CLS_TRAINABLE (head, last:N or all; last:2), AJI_THREADS.
set -euo pipefail
cd "$(dirname "$0")/.."
AJI=${AJI:-build/aji}
BASE=${1:?usage: scripts/demo_classify.sh BASE_RUN_DIR [WORK_DIR]}
WORK=${2:-out/demo-classify}
mkdir -p "$WORK"

echo "== 1. fine-tune a spam classifier: $(( $(wc -l < data/classify/sms_spam.tsv) - 1 )) SMS messages, trainable ${CLS_TRAINABLE:-last:2}"
"$AJI" classify train --model "$BASE" --data data/classify/sms_spam.tsv \
  --out "$WORK/run" --force --trainable "${CLS_TRAINABLE:-last:2}" \
  $( [ -n "${CLS_STEPS:-}" ] && echo "--steps $CLS_STEPS" || echo "--epochs ${CLS_EPOCHS:-2}" ) --batch-size 8 --lr 5e-4 --max-len 128 --keep-best 2>&1 | tee "$WORK/train.log"

echo "== 2. label two new messages"
printf '%s\n' '{"text": "WINNER!! You have won a 1000 cash prize. Call 09061701461 now to claim"}' \
  '{"text": "Are we still meeting for lunch tomorrow?"}' > "$WORK/new.jsonl"
"$AJI" classify predict --model "$WORK/run" --input "$WORK/new.jsonl" | tee "$WORK/predictions.jsonl"

# The line the demo's report card picks up.
python3 - "$WORK/run/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
spam = r["per_class"]["spam"]
print(f"spam classifier: test accuracy {r['accuracy']:.4f} (majority baseline {r['majority_baseline']:.4f}), "
      f"spam precision {spam['precision']:.3f} recall {spam['recall']:.3f}, trained in {r['train_seconds']:.0f} s")
PY
