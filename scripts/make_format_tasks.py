#!/usr/bin/env python3
"""Generate the "answer format" task family for the GRPO held-out run (issue #14).

  python3 scripts/make_format_tasks.py [--out-dir data/rl_tasks] [--seed 7] [--test 300] [--sft 2000]
                                       [--format-fraction 0.2]

Why this family: GRPO can only sharpen what the SFT model can already sample (spec §5; the arithmetic
run with unseen operand pairs showed that nothing transfers when the model cannot compute the held-out
answers). Here the *procedure* is what is weak, not the knowledge: single-digit addition and subtraction
word problems (English and Korean), where the SFT model knows the sums but was shown the required answer
format -- a working line and "#### N" -- on only a minority (--format-fraction) of its SFT replies; the
rest answer "The answer is N." / "답은 N입니다.". The verifier accepts only the required format with the
right number (regex:(?s).*#### {answer}), so the SFT model's pass@1 is low but nonzero and pass@G high:
room for RL to sharpen, on held-out prompts too.

Splits: every prompt is a (language, operation, template, name, item, a, b) combination; the held-out
prompts are combinations never used for training (disjoint prompt texts, checked). The operand facts
(e.g. 7 + 5) are shared on purpose: the held-out split measures whether the learned *procedure*
transfers to unseen prompts, not whether the model can learn new sums (the failed arith run measured
that). Deterministic from --seed.

Outputs (in --out-dir):
  format_train.jsonl  RL tasks {"messages":[user], "answer":"N"} (prompts never in format_test)
  format_test.jsonl   held-out RL tasks
  format_sft.jsonl    SFT conversations over training prompts; --format-fraction of them in the required
                      format (source ends with ":format"), the rest with the short answer (":short")
"""
import argparse
import json
import os
import random

EN_NAMES = ["Tom", "Mia", "Sam", "Ana", "Leo", "Eva", "Ben", "Zoe"]
EN_ITEMS = ["apples", "pens", "books", "cards", "stones", "cups"]
KO_NAMES = ["민수", "지우", "철수", "서아", "하루", "유나", "도하", "시우"]  # no final consonant: 는/가
# (item, counter, item + object particle, item + topic particle, counter + object / subject particle)
KO_ITEMS = [("사과", "개", "사과를", "사과는", "개를", "개가"), ("연필", "자루", "연필을", "연필은", "자루를", "자루가"),
            ("책", "권", "책을", "책은", "권을", "권이"), ("카드", "장", "카드를", "카드는", "장을", "장이"),
            ("돌", "개", "돌을", "돌은", "개를", "개가"), ("컵", "개", "컵을", "컵은", "개를", "개가")]

EN_ADD = [
    "{n} has {a} {i} and gets {b} more. How many {i} does {n} have now?",
    "There are {a} {i} on the table. {n} puts {b} more there. How many {i} are on the table?",
    "{n} bought {a} {i} on Monday and {b} {i} on Tuesday. How many {i} did {n} buy?",
]
EN_SUB = [
    "{n} has {a} {i} and gives away {b}. How many {i} does {n} have left?",
    "There are {a} {i} in a box. {n} takes out {b}. How many {i} are left in the box?",
    "{n} had {a} {i} and lost {b} of them. How many {i} does {n} have now?",
]
KO_ADD = [
    "{n}는 {i} {a}{co} 가지고 있고 {b}{co} 더 받았습니다. {n}는 {io} 몇 {c} 가지고 있나요?",
    "탁자 위에 {i} {a}{cs} 있습니다. {n}가 {b}{co} 더 놓았습니다. 탁자 위의 {it} 몇 {c}입니까?",
    "{n}는 월요일에 {i} {a}{c}, 화요일에 {b}{co} 샀습니다. {n}가 산 {it} 모두 몇 {c}입니까?",
]
KO_SUB = [
    "{n}는 {i} {a}{co} 가지고 있었는데 {b}{co} 주었습니다. 남은 {it} 몇 {c}입니까?",
    "상자에 {i} {a}{cs} 있습니다. {n}가 {b}{co} 꺼냈습니다. 상자에 남은 {it} 몇 {c}입니까?",
    "{n}는 {i} {a}{co} 가지고 있었는데 {b}{co} 잃어버렸습니다. {n}에게 남은 {it} 몇 {c}입니까?",
]


def all_prompts():
    """Every (key, text, answer, equation) of the family, in a fixed order."""
    out = []
    for lang in ("en", "ko"):
        for op in ("add", "sub"):
            temps = {("en", "add"): EN_ADD, ("en", "sub"): EN_SUB, ("ko", "add"): KO_ADD, ("ko", "sub"): KO_SUB}[(lang, op)]
            names = EN_NAMES if lang == "en" else KO_NAMES
            items = EN_ITEMS if lang == "en" else KO_ITEMS
            for ti, t in enumerate(temps):
                for ni, n in enumerate(names):
                    for ii, it in enumerate(items):
                        for a in range(1, 10):
                            for b in range(1, 10):
                                if op == "add":
                                    c, eq = a + b, "%d + %d = %d" % (a, b, a + b)
                                    A, B = a, b
                                else:  # a+b - b = a: the minuend is a two-or-one-digit sum, the answer one digit
                                    A, B, c = a + b, b, a
                                    eq = "%d - %d = %d" % (A, B, c)
                                if lang == "en":
                                    text = t.format(n=n, a=A, b=B, i=it)
                                else:
                                    text = t.format(n=n, a=A, b=B, i=it[0], c=it[1], io=it[2], it=it[3], co=it[4], cs=it[5])
                                key = "%s:%s:t%d:n%d:i%d:%d,%d" % (lang, op, ti, ni, ii, A, B)
                                out.append((key, text, c, eq, lang))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default="data/rl_tasks")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--train", type=int, default=2000, help="RL training tasks written")
    ap.add_argument("--test", type=int, default=300, help="held-out tasks")
    ap.add_argument("--sft", type=int, default=2000, help="SFT conversations (over training prompts)")
    ap.add_argument("--format-fraction", type=float, default=0.2,
                    help="share of SFT replies in the required '#### N' format")
    args = ap.parse_args()
    if not 0.0 < args.format_fraction <= 1.0:
        ap.error("--format-fraction must be in (0, 1]")
    rng = random.Random(args.seed)
    pool = all_prompts()
    rng.shuffle(pool)
    need = args.test + max(args.train, args.sft)
    if need > len(pool):
        ap.error("asked for %d prompts, the family has %d" % (need, len(pool)))
    test = pool[:args.test]
    rest = pool[args.test:]
    train = rest[:args.train]
    sft = rest[:args.sft]
    test_texts = {p[1] for p in test}
    assert not test_texts & {p[1] for p in rest[:max(args.train, args.sft)]}, "held-out prompt text in training"

    n_format = round(args.format_fraction * len(sft))
    fmt_idx = set(rng.sample(range(len(sft)), n_format))
    os.makedirs(args.out_dir, exist_ok=True)

    def task(p):
        return {"messages": [{"role": "user", "content": p[1]}], "answer": str(p[2]), "source": "format:" + p[0]}

    def write(name, rows):
        with open(os.path.join(args.out_dir, name), "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")

    write("format_train.jsonl", [task(p) for p in train])
    write("format_test.jsonl", [task(p) for p in test])
    conv = []
    for k, p in enumerate(sft):
        if k in fmt_idx:
            reply, tag = "%s\n#### %d" % (p[3], p[2]), "format"
        else:
            reply = ("The answer is %d." % p[2]) if p[4] == "en" else ("답은 %d입니다." % p[2])
            tag = "short"
        conv.append({"messages": [{"role": "user", "content": p[1]}, {"role": "assistant", "content": reply}],
                     "source": "format:%s:%s" % (p[0], tag)})
    write("format_sft.jsonl", conv)
    print("family %d prompts; wrote %d train, %d held-out tasks, %d SFT conversations (%d in the '####' format)"
          % (len(pool), len(train), len(test), len(sft), n_format))


if __name__ == "__main__":
    main()
