#!/usr/bin/env python3
"""Builds data/eval/: the bundled evaluation tasks of `aji eval` (docs/eval.md).

Deterministic: every task is a fixed-seed sample (random.Random(SEED)) of the source
files under ../shared/data (or --shared DIR). Each task gets two files:
  <task>.jsonl          the evaluated items
  <task>.fewshot.jsonl  the few-shot split (disjoint from the evaluated items)
One JSON object per line, in one of the task kinds aji's task loader reads
(src/aji/eval/tasks.h):
  mc      {"context", "choices": [...], "gold"}          (multiple choice)
  schema  {"contexts": [...], "continuation", "gold"}    (Winogrande partial scoring)
  lm      {"context", "target"}                          (LAMBADA: greedy reproduces target)
  gen     {"context", "target", "answer"}                (GSM8K: generated "#### N" == answer)
The Korean "A -> B" set (ko_analogy) is written here, for this project.

    python3 scripts/make_eval_data.py [--shared ../shared/data]
"""
import argparse, json, os, random, shutil

SEED = 1234
N_EVAL = 300
N_FEWSHOT = 50
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "data", "eval")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def write(name, items, fewshot):
    for suffix, rows in (("", items), (".fewshot", fewshot)):
        with open(os.path.join(OUT, name + suffix + ".jsonl"), "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")


def split(rows, n_eval=N_EVAL, n_few=N_FEWSHOT, max_chars=None):
    if max_chars:
        rows = [r for r in rows if len(json.dumps(r, ensure_ascii=False)) <= max_chars]
    idx = list(range(len(rows)))
    random.Random(SEED).shuffle(idx)
    few = [rows[i] for i in idx[:n_few]]
    ev = [rows[i] for i in idx[n_few:n_few + n_eval]]
    # Some sources repeat a question (PIQA, OpenBookQA): a few-shot example must never be an
    # evaluated item, so an example whose context is an evaluated item's leaves the split.
    def key(r):
        return r["contexts"][r["gold"]] if "contexts" in r else r["context"]
    seen = {key(r) for r in ev}
    few = [r for r in few if key(r) not in seen]
    return ev, few


def mc(rows, ctx=lambda r: r["query"]):
    return [{"context": ctx(r), "choices": r["choices"], "gold": r["gold"]} for r in rows]


def hellaswag(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    out = []
    for i in range(0, len(lines) - 5, 6):
        out.append({"context": lines[i], "choices": lines[i + 2:i + 6], "gold": int(lines[i + 1])})
    return out


NLI_LABELS = ["entailment", "neutral", "contradiction"]
NLI_CHOICES = ["참", "중립", "거짓"]  # true / neither / false


def nli(premise, hypothesis, label):
    return {"context": f"전제: {premise}\n가설: {hypothesis}\n질문: 가설은 참, 거짓, 중립 중 무엇입니까?\n답:",
            "choices": NLI_CHOICES, "gold": NLI_LABELS.index(label)}


# Korean "A -> B" pairs, written for this project (public facts; no license restrictions).
KO_PAIRS = [
    # 나라 -> 수도
    ("미국", "워싱턴"), ("일본", "도쿄"), ("한국", "서울"), ("중국", "베이징"), ("프랑스", "파리"), ("영국", "런던"),
    ("독일", "베를린"), ("이탈리아", "로마"), ("스페인", "마드리드"), ("러시아", "모스크바"), ("캐나다", "오타와"),
    ("호주", "캔버라"), ("이집트", "카이로"), ("태국", "방콕"), ("베트남", "하노이"), ("그리스", "아테네"),
    ("터키", "앙카라"), ("인도", "뉴델리"), ("멕시코", "멕시코시티"), ("포르투갈", "리스본"),
    ("오스트리아", "빈"), ("노르웨이", "오슬로"), ("스웨덴", "스톡홀름"), ("필리핀", "마닐라"),
    # 반대말
    ("크다", "작다"), ("높다", "낮다"), ("길다", "짧다"), ("덥다", "춥다"), ("빠르다", "느리다"), ("많다", "적다"),
    ("밝다", "어둡다"), ("무겁다", "가볍다"), ("넓다", "좁다"), ("쉽다", "어렵다"), ("깊다", "얕다"),
    ("두껍다", "얇다"), ("오다", "가다"), ("열다", "닫다"), ("사다", "팔다"), ("이기다", "지다"),
    ("시작", "끝"), ("위", "아래"), ("안", "밖"), ("왼쪽", "오른쪽"), ("남자", "여자"), ("낮", "밤"),
    # 동물 -> 새끼
    ("개", "강아지"), ("고양이", "새끼 고양이"), ("소", "송아지"), ("말", "망아지"), ("닭", "병아리"),
    ("개구리", "올챙이"),
    # 숫자 -> 한자어 수
    ("1", "일"), ("2", "이"), ("3", "삼"), ("4", "사"), ("5", "오"), ("10", "십"), ("100", "백"), ("1000", "천"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared", "data"))
    a = ap.parse_args()
    en = os.path.join(a.shared, "eval_en")
    os.makedirs(OUT, exist_ok=True)
    for name, src in (("arc_easy", "arc_easy"), ("arc_challenge", "arc_challenge"), ("piqa", "piqa"),
                      ("copa", "copa"), ("openbookqa", "openbook_qa")):
        ev, few = split(mc(read_jsonl(os.path.join(en, src + ".jsonl"))), n_eval=N_EVAL if src != "copa" else 70,
                        n_few=N_FEWSHOT if src != "copa" else 30)
        write(name, ev, few)
    ev, few = split(mc(read_jsonl(os.path.join(en, "boolq.jsonl"))), n_eval=200, n_few=20, max_chars=1200)
    write("boolq", ev, few)
    ev, few = split(hellaswag(os.path.join(en, "hellaswag_val_full.txt")))
    write("hellaswag", ev, few)
    wg = [{"contexts": r["context_options"], "continuation": r["continuation"], "gold": r["gold"]}
          for r in read_jsonl(os.path.join(en, "winogrande.jsonl"))]
    write("winogrande", *split(wg))
    lb = [{"context": r["context"], "target": r["continuation"]} for r in read_jsonl(os.path.join(en, "lambada_openai.jsonl"))]
    write("lambada", *split(lb, n_eval=200, n_few=20, max_chars=900))
    # Korean NLI
    klue = json.load(open(os.path.join(a.shared, "klue_dev", "klue-nli-v1.1_dev.json"), encoding="utf-8"))
    klue = [nli(r["premise"], r["hypothesis"], r["gold_label"]) for r in klue if r["gold_label"] in NLI_LABELS]
    write("klue_nli", *split(klue))
    kor = []
    with open(os.path.join(a.shared, "kor_nlu", "KorNLI_xnli.dev.ko.tsv"), encoding="utf-8") as f:
        next(f)
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) == 3 and p[2] in NLI_LABELS:
                kor.append(nli(p[0], p[1], p[2]))
    write("kornli", *split(kor))
    # Korean A -> B (lm kind: the greedy continuation must reproduce B)
    ko = [{"context": f"{x} ->", "target": y} for x, y in KO_PAIRS]
    write("ko_analogy", *split(ko, n_eval=len(ko) - 16, n_few=16))
    # GSM8K: evaluated items from test, few-shot examples from train
    def gsm(r):
        return {"context": f"Question: {r['question']}\nAnswer:", "target": r["answer"],
                "answer": r["answer"].split("####")[-1].strip().replace(",", "")}
    test = [gsm(r) for r in read_jsonl(os.path.join(a.shared, "gsm8k", "test.jsonl"))]
    train = [gsm(r) for r in read_jsonl(os.path.join(a.shared, "gsm8k", "train.jsonl"))]
    ev, _ = split(test, n_eval=200, n_few=0)
    _, few = split(train, n_eval=0, n_few=30)
    write("gsm8k", ev, few)
    # license notes
    lic = os.path.join(OUT, "LICENSES")
    os.makedirs(lic, exist_ok=True)
    for src, files in (("eval_en", ["LICENSE-NOTE.txt", "LICENSE.hellaswag", "LICENSE.hellaswag_text_data",
                                    "LICENSE.llm-foundry"]),
                       ("gsm8k", ["LICENSE", "LICENSE-NOTE.txt"]), ("klue_dev", ["License.md", "LICENSE-NOTE.txt"]),
                       ("kor_nlu", ["LICENSE", "LICENSE-NOTE.txt"])):
        for f in files:
            shutil.copyfile(os.path.join(a.shared, src, f), os.path.join(lic, f"{src}.{f}"))


if __name__ == "__main__":
    main()
