#!/usr/bin/env python3
"""The demo's chat measurement: every prompt of a fixed English + Korean set
(data/sft/demo_chat_prompts.jsonl) is sent to `aji chat` as its own one-turn conversation,
once greedy and once sampled, and each reply is scored:

  degenerate  the reply is empty, or (on whitespace tokens, at least 4 of them) its most
              frequent token is more than half of it, or an n-gram (n = 1..4) repeats 3 times in
              a row, or one 4-word phrase occurs 3 times anywhere, or a 2-8 character unit repeats 4 times in a row ("’m’m’m’m"), or one
              punctuation mark 6 times, or (at least 8 characters) one non-space character is more
              than half of them
              ("# = = = =", "I am I am I am", "!!!!!!!!")
  ended       the model closed its turn (<|im_end|>) before the token limit: it learned the format
  identity    for the identity questions: exact (the reply equals the answer in
              data/sft/identity.jsonl) and contains (it names the model, "aji" or "아지")

  demo_chat_eval.py --aji build/aji --model RUN_DIR --prompts FILE --out OUT.json [--label NAME]
                    [--max-tokens 48] [--sampled "--temperature 0.7 --top-p 0.9 ..."]
Writes OUT.json (every reply and the summary) and prints a one-line summary.
"""
import argparse
import collections
import json
import re
import shlex
import subprocess
import sys

# A unit of 2-8 characters 4 times in a row ("’m’m’m’m", "= = = = "), or one mark
# of punctuation 6 times ("!!!!!!", ",,,,,,"). Word-level loops are caught on whitespace tokens below.
LOOP = re.compile(r"(.{2,8}?)\1{3,}|([^\w\s])\2{5,}", re.S)

SAMPLED_DEFAULT = "--temperature 0.7 --top-k 0 --top-p 0.9 --repetition-penalty 1.1 --seed 1"


def degenerate(reply):
    """Why the reply counts as degenerate, or '' when it does not."""
    text = reply.strip()
    if not text:
        return "empty"
    toks = text.split()
    if len(toks) >= 4:
        top, n = collections.Counter(toks).most_common(1)[0]
        if n * 2 > len(toks):
            return f"token {top!r} is {n}/{len(toks)} of the reply"
        for k in range(1, 5):
            for i in range(0, len(toks) - 3 * k + 1):
                g = toks[i:i + k]
                if toks[i + k:i + 2 * k] == g and toks[i + 2 * k:i + 3 * k] == g:
                    return f"{k}-gram {' '.join(g)!r} repeats 3 times in a row"
        # A phrase loop with variation between the repeats ("… of the king, And I have been a man of
        # the king, And I have a king of the king, …"): one 4-word phrase 3 times anywhere.
        grams = collections.Counter(tuple(toks[i:i + 4]) for i in range(len(toks) - 3))
        if grams:
            g, n = grams.most_common(1)[0]
            if n >= 3:
                return f"the phrase {' '.join(g)!r} occurs {n} times"
    m = LOOP.search(text)
    if m:
        unit = m.group(1) or m.group(2)
        return f"{unit!r} repeats {len(m.group(0)) // len(unit)} times in a row"
    chars = [c for c in text if not c.isspace()]
    if len(chars) >= 8:
        c, n = collections.Counter(chars).most_common(1)[0]
        if n * 2 > len(chars):
            return f"character {c!r} is {n}/{len(chars)} of the reply"
    return ""


def names_model(reply):
    low = reply.lower()
    return "aji" in low or "아지" in reply


def chat(aji, model, prompt, max_tokens, decode):
    cmd = [aji, "chat", "--model", model, "--max-tokens", str(max_tokens), "--prompt", prompt] + decode
    r = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace")
    if r.returncode != 0:
        raise SystemExit(f"demo_chat_eval: {' '.join(map(shlex.quote, cmd))} failed:\n{r.stderr}")
    # Did the model end its turn (<|im_end|>) before --max-tokens? aji chat says when it did not.
    return r.stdout.rstrip("\n"), "reached --max-tokens" not in r.stderr and "context limit" not in r.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--aji", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--label", default="")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--sampled", default=SAMPLED_DEFAULT)
    a = ap.parse_args()
    prompts = [json.loads(l) for l in open(a.prompts, encoding="utf-8") if l.strip()]
    modes = {"greedy": ["--temperature", "0"], "sampled": shlex.split(a.sampled)}
    rows = []
    for p in prompts:
        row = dict(p)
        for mode, decode in modes.items():
            reply, ended = chat(a.aji, a.model, p["prompt"], a.max_tokens, decode)
            row[mode] = {"reply": reply, "degenerate": degenerate(reply), "ended": ended}
            if p.get("identity"):
                row[mode]["exact"] = bool(p.get("answer")) and reply.strip() == p["answer"]
                row[mode]["contains"] = names_model(reply)
        rows.append(row)
    summary = {}
    for mode in modes:
        s = {}
        for lang in ("en", "ko", "all"):
            sel = [r for r in rows if lang == "all" or r["lang"] == lang]
            s[f"degenerate_{lang}"] = [sum(bool(r[mode]["degenerate"]) for r in sel), len(sel)]
        s["ended"] = [sum(r[mode]["ended"] for r in rows), len(rows)]
        for kind in ("trained", "held-out"):
            sel = [r for r in rows if r.get("identity") == kind]
            if kind == "trained":
                s["identity_exact"] = [sum(r[mode]["exact"] for r in sel), len(sel)]
            s[f"identity_contains_{kind}"] = [sum(r[mode]["contains"] for r in sel), len(sel)]
        summary[mode] = s
    out = {"label": a.label, "model": a.model, "max_tokens": a.max_tokens, "decoding": {k: " ".join(v) for k, v in modes.items()},
           "summary": summary, "replies": rows}
    with open(a.out + ".tmp", "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
    import os
    os.replace(a.out + ".tmp", a.out)
    for mode, s in summary.items():
        d = s["degenerate_all"]
        print(f"{a.label or a.model} {mode}: degenerate {d[0]}/{d[1]}, ended its turn {s['ended'][0]}/{s['ended'][1]}, identity exact {s['identity_exact'][0]}/{s['identity_exact'][1]}, "
              f"names itself {s['identity_contains_trained'][0]}/{s['identity_contains_trained'][1]} (trained questions), "
              f"{s['identity_contains_held-out'][0]}/{s['identity_contains_held-out'][1]} (held-out)")


if __name__ == "__main__":
    sys.exit(main())
