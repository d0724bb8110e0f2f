#!/usr/bin/env python3
"""Independent reference for aji's SFT converters and CSV reader (tests/align/*_test.cpp).

Regenerates tests/fixtures/sft/ from /work/shared/data (read-only, not needed by tests):
  * small samples of each source shape (korean_chatbot CSV, OASST trees, self_instruct,
    gsm8k) and the conversations a straightforward Python implementation makes of them;
  * a hand-made tricky CSV (quotes, embedded newlines, CRLF, BOM) and Python's csv-module
    parse of it, which aji's RFC 4180 reader must match.
Usage: python3 tests/reference/sft_converters.py [/work/shared/data]
"""
import csv
import io
import json
import os
import re
import sys

DATA = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/data"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "sft")


def dump_conversations(path, convs):
    with open(path, "w", encoding="utf-8") as f:
        for c in convs:
            f.write(json.dumps(c, ensure_ascii=False) + "\n")


def msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


# --- korean_chatbot: rows with commas/quotes plus ordinary ones ----------------------------
with open(os.path.join(DATA, "korean_chatbot", "ChatbotData.csv"), newline="", encoding="utf-8") as f:
    lines = f.read().splitlines(keepends=True)
header, body = lines[0], lines[1:]
quoted = [l for l in body if '"' in l][:6]
plain = body[:10]
sample = [header] + plain + quoted
with open(os.path.join(OUT, "chatbot_sample.csv"), "w", encoding="utf-8", newline="") as f:
    f.writelines(sample)
rows = list(csv.reader(io.StringIO("".join(sample))))[1:]
dump_conversations(os.path.join(OUT, "chatbot_expected.jsonl"),
                   [{"messages": msgs(("user", q), ("assistant", a))} for q, a, *_ in rows])

# --- OASST: trees with multi-turn branches and unranked replies -----------------------------
def best(node):
    reps = [r for r in node.get("replies", []) if not r.get("deleted")]
    ranked = [r for r in reps if isinstance(r.get("rank"), int)]
    if ranked:
        return min(ranked, key=lambda r: r["rank"])  # min keeps the first of equal ranks
    return reps[0] if reps else None


def best_branch(tree):
    out, node = [], tree["prompt"]
    while node is not None:
        out.append({"role": {"prompter": "user", "assistant": "assistant"}[node["role"]], "content": node["text"]})
        node = best(node)
    while out and out[-1]["role"] != "assistant":
        out.pop()
    return out


trees = [json.loads(l) for l in open(os.path.join(DATA, "oasst_sample", "en_100_tree.jsonl"), encoding="utf-8")]
picked = []
for t in sorted(trees, key=lambda t: len(json.dumps(t))):  # the smallest trees, some multi-turn
    n = len(best_branch(t))
    if (n >= 4 and sum(1 for p in picked if len(best_branch(p)) >= 4) < 3) or (n == 2 and sum(1 for p in picked if len(best_branch(p)) == 2) < 3):
        picked.append(t)
    if len(picked) == 6:
        break
with open(os.path.join(OUT, "oasst_trees.jsonl"), "w", encoding="utf-8") as f:
    for t in picked:
        f.write(json.dumps(t, ensure_ascii=False) + "\n")
dump_conversations(os.path.join(OUT, "oasst_expected.jsonl"), [{"messages": best_branch(t)} for t in picked])

# --- self_instruct: records with several instances and with inputs ---------------------------
seeds = [json.loads(l) for l in open(os.path.join(DATA, "self_instruct", "seed_tasks.jsonl"), encoding="utf-8")]
user_or = [json.loads(l) for l in open(os.path.join(DATA, "self_instruct", "user_oriented_instructions.jsonl"), encoding="utf-8")]
si = [r for r in seeds if len(r["instances"]) > 1][:2] + [r for r in seeds if r["instances"][0]["input"].strip()][:2] + user_or[:2]
with open(os.path.join(OUT, "self_instruct_sample.jsonl"), "w", encoding="utf-8") as f:
    for r in si:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
conv = []
for r in si:
    for inst in r["instances"]:
        user = r["instruction"] + ("\n\n" + inst["input"] if inst["input"].strip() else "")
        conv.append({"messages": msgs(("user", user), ("assistant", inst["output"]))})
dump_conversations(os.path.join(OUT, "self_instruct_expected.jsonl"), conv)

# --- gsm8k: calculator annotations removed ---------------------------------------------------
gs = [json.loads(l) for l in open(os.path.join(DATA, "gsm8k", "train.jsonl"), encoding="utf-8")][:8]
with open(os.path.join(OUT, "gsm8k_sample.jsonl"), "w", encoding="utf-8") as f:
    for r in gs:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
dump_conversations(os.path.join(OUT, "gsm8k_expected.jsonl"),
                   [{"messages": msgs(("user", r["question"]), ("assistant", re.sub(r"<<.*?>>", "", r["answer"])))} for r in gs])

# --- tricky CSV and Python's parse of it -----------------------------------------------------
tricky = ('\ufeffQ,A,label\r\n'
          'plain,row,0\r\n'
          '"quoted, with comma","say ""hi""",1\r\n'
          '"multi\r\nline field",x,2\r\n'
          '\r\n'
          'empty,,0\r\n'
          '"",only-quoted-empty,1\r\n'
          'mid"quote,kept "as" data,0\r\n'
          '한국어,"안녕, 세상",2\n'
          'last,"unix\nnewline",1')
with open(os.path.join(OUT, "tricky.csv"), "w", encoding="utf-8", newline="") as f:
    f.write(tricky)
rows = [r for r in csv.reader(io.StringIO(tricky.lstrip("\ufeff"), newline="")) if r]
with open(os.path.join(OUT, "tricky_expected.json"), "w", encoding="utf-8") as f:
    json.dump(rows, f, ensure_ascii=False, indent=0)
print("wrote fixtures to", os.path.normpath(OUT))
