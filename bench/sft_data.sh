#!/usr/bin/env bash
# Converting public chat data to conversation JSONL: `aji sft convert` vs the same
# conversion in plain Python (json / csv modules — what a Python SFT pipeline does before
# tokenising). Same inputs, same run, best of 3 wall-clock times; outputs are checked equal
# (parsed) so both sides do the same work.
#   bench/sft_data.sh [SHARED_DATA_DIR]   (default /work/shared/data; AJI=build/aji)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-/work/shared/data}"
AJI="${AJI:-build/aji}"
PY="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

cat > "$tmp/peer.py" <<'PYEOF'
import csv, json, re, sys
fmt, src, dst = sys.argv[1:4]
out = open(dst, "w", encoding="utf-8")
def emit(msgs, source):
    out.write(json.dumps({"messages": [{"role": r, "content": c} for r, c in msgs], "source": source},
                         ensure_ascii=False, separators=(",", ":")) + "\n")
if fmt == "gsm8k":
    for i, line in enumerate(open(src, encoding="utf-8")):
        j = json.loads(line)
        emit([("user", j["question"]), ("assistant", re.sub(r"<<.*?>>", "", j["answer"]))], f"gsm8k:{i}")
elif fmt == "korean_chatbot":
    rows = csv.reader(open(src, newline="", encoding="utf-8"))
    next(rows)
    for i, r in enumerate(rows):
        emit([("user", r[0]), ("assistant", r[1])], f"korean_chatbot:{i}")
elif fmt == "oasst":
    def best(n):
        reps = [r for r in n.get("replies", []) if not r.get("deleted")]
        ranked = [r for r in reps if isinstance(r.get("rank"), int)]
        return min(ranked, key=lambda r: r["rank"]) if ranked else (reps[0] if reps else None)
    for line in open(src, encoding="utf-8"):
        t = json.loads(line); n = t["prompt"]; msgs = []
        while n is not None:
            msgs.append(({"prompter": "user"}.get(n["role"], n["role"]), n["text"])); n = best(n)
        while msgs and msgs[-1][0] != "assistant": msgs.pop()
        emit(msgs, "oasst:" + t["message_tree_id"])
PYEOF

best_of_3() {  # prints the best wall time in seconds of the command
  local best=""
  for _ in 1 2 3; do
    local s e
    s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
    best=$(echo "$s $e $best" | awk '{t=$2-$1; if ($3=="" || t<$3) print t; else print $3}')
  done
  echo "$best"
}

printf "%-16s %10s %10s %10s %8s\n" format input_MB aji_s python_s speedup
for spec in "gsm8k gsm8k/train.jsonl" "korean_chatbot korean_chatbot/ChatbotData.csv" "oasst oasst_sample/en_100_tree.jsonl"; do
  set -- $spec
  in="$DATA/$2"
  a=$(best_of_3 "$AJI" sft convert --from "$1" --input "$in" --out "$tmp/aji.jsonl")
  p=$(best_of_3 "$PY" "$tmp/peer.py" "$1" "$in" "$tmp/py.jsonl")
  "$PY" - "$tmp/aji.jsonl" "$tmp/py.jsonl" <<'CMP'
import json, sys
a = [json.loads(l)["messages"] for l in open(sys.argv[1], encoding="utf-8")]
b = [json.loads(l)["messages"] for l in open(sys.argv[2], encoding="utf-8")]
assert a == b, "aji and Python outputs differ"
CMP
  mb=$(awk -v b="$(stat -c %s "$in")" 'BEGIN{printf "%.2f", b/1e6}')
  printf "%-16s %10s %10.3f %10.3f %7.1fx\n" "$1" "$mb" "$a" "$p" "$(awk -v a="$a" -v p="$p" 'BEGIN{print p/a}')"
done
