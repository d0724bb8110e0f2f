#!/usr/bin/env python3
"""Builds the data-filter fixtures from real documents and datatrove's own filters.

  python3 tests/reference/filters_vs_datatrove.py [--shared /work/shared/data]

Writes tests/fixtures/data_filters/
  docs.jsonl       — the sample: {"id", "lang", "source", "text"} (real text from shared/data)
  decisions.jsonl  — {"id", "preset", "filter", "keep", "reason", "text"?} from datatrove
                     0.10 (GopherRepetitionFilter, GopherQualityFilter, C4QualityFilter
                     (filter_no_terminal_punct=False), FineWebQualityFilter), each filter run
                     on the original document; "text" = C4's rewritten text when kept.
                     preset "en" = FineWeb's settings with datatrove's English word
                     tokenizer (spaCy); preset "ko" = FineWeb-2 kor_Hang settings with
                     datatrove's Korean tokenizer (Kiwi), Korean docs only.
Needs: pip install datatrove spacy kiwipiepy trafilatura (reference only; aji never needs them).
"""
import argparse, csv, glob, gzip, io, json, os, random, sys

import trafilatura
from datatrove.utils.word_tokenizers import KiwiTokenizer
import yaml
from datatrove.data import Document
from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                        GopherRepetitionFilter)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "data_filters")
MAX_CHARS = 6000


def cap(text):
    # Keep fixtures small: cut long documents at a line boundary.
    if len(text) <= MAX_CHARS:
        return text
    cut = text.rfind("\n", 0, MAX_CHARS)
    return text[: cut if cut > MAX_CHARS // 2 else MAX_CHARS]


def chunks_of_lines(lines, n):
    for i in range(0, len(lines), n):
        yield "\n".join(lines[i : i + n])


def collect(shared):
    rng = random.Random(4)
    docs = []

    def add(lang, source, text):
        text = cap(text)
        if text.strip():
            docs.append({"id": f"{source}#{len(docs)}", "lang": lang, "source": source, "text": text})

    # English web text (Dolma CC, WET).
    for f in sorted(glob.glob(f"{shared}/cc_web_samples/dolma-cc_en_head-*.jsonl.gz")):
        for line in gzip.open(f, "rt"):
            add("en", "dolma", json.loads(line)["text"])
    # Real HTML pages, extracted as FineWeb does.
    htmls = sorted(glob.glob(f"{shared}/html_en/**/*.html", recursive=True))
    for f in rng.sample(htmls, min(90, len(htmls))):
        t = trafilatura.extract(open(f, encoding="utf-8", errors="replace").read(), favor_precision=True,
                                include_comments=False, deduplicate=True)
        if t:
            add("en", "html_en", t)
    # Books / manuals in paragraph-sized chunks.
    for name, path, n in [("gnu_standards", "gnu_standards/standards.txt", 60),
                          ("kjv", "kjv_bible/*.txt", 40), ("shakespeare", "tinyshakespeare/*.txt", 50)]:
        files = sorted(glob.glob(f"{shared}/{path}"))
        if not files:
            continue
        lines = open(files[0], encoding="utf-8", errors="replace").read().split("\n")
        parts = list(chunks_of_lines(lines, n))
        for t in rng.sample(parts, min(35, len(parts))):
            add("en", name, t)
    # Chat / instruction text (short documents: many drops).
    for line in list(open(f"{shared}/oasst_sample/en_100_tree.jsonl"))[:40]:
        node = json.loads(line)["prompt"]
        convo = []
        while node:  # the first path of the tree as one dialogue
            convo.append(node["text"])
            node = (node.get("replies") or [None])[0]
        add("en", "oasst", "\n\n".join(convo))
    hh = [json.loads(l)["chosen"] for l in gzip.open(f"{shared}/hh_rlhf/helpful-base-test.jsonl.gz", "rt")]
    for t in rng.sample(hh, 40):
        add("en", "hh_rlhf", t.strip())
    # Korean: news in 15-line blocks (the spec's measurement set), HTML pages, reviews.
    ko_lines = open(f"{shared}/korean_english_news/korean-english-park.dev.ko", encoding="utf-8").read().split("\n")
    parts = list(chunks_of_lines(ko_lines, 15))
    for t in rng.sample(parts, min(40, len(parts))):
        add("ko", "ko_news", t)
    htmls = sorted(glob.glob(f"{shared}/html_ko/**/*.html", recursive=True))
    for f in rng.sample(htmls, min(45, len(htmls))):
        t = trafilatura.extract(open(f, encoding="utf-8", errors="replace").read(), favor_precision=True,
                                include_comments=False, deduplicate=True)
        if t:
            add("ko", "html_ko", t)
    rows = list(csv.reader(open(f"{shared}/nsmc_sample/nsmc_raw_sample.tsv", encoding="utf-8"), delimiter="\t"))[1:]
    reviews = [r[4] for r in rows if len(r) > 4]
    for t in list(chunks_of_lines(reviews, 20))[:15]:
        add("ko", "nsmc", t)
    return docs


def run(filt, doc):
    d = Document(text=doc["text"], id=doc["id"], metadata={})
    res = filt.filter(d)
    if isinstance(res, tuple):
        return False, res[1], None
    return bool(res), "", d.text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default="/work/shared/data")
    args = ap.parse_args()
    docs = collect(args.shared)
    ko_cfg = yaml.safe_load(open(f"{args.shared}/filter_assets/fineweb2_kor_Hang.yml"))
    en = {
        "gopher_repetition": GopherRepetitionFilter(),
        "gopher_quality": GopherQualityFilter(),
        "c4_quality": C4QualityFilter(filter_no_terminal_punct=False),
        "fineweb_quality": FineWebQualityFilter(),
    }
    # datatrove's Korean tokenizer is Kiwi with model "sbg"; kiwipiepy >= 0.22 ships "cong" instead.
    kiwi = KiwiTokenizer(model_type="cong")
    ko = {  # huggingface/fineweb-2 fineweb-2-pipeline.py with configs/kor_Hang.yml
        "gopher_repetition": GopherRepetitionFilter(
            language=kiwi, dup_para_frac=0, dup_line_char_frac=0, dup_para_char_frac=0,
            dup_line_frac=ko_cfg["dup_line_frac"], top_n_grams=[tuple(x) for x in ko_cfg["top_n_grams"]],
            dup_n_grams=[tuple(x) for x in ko_cfg["dup_n_grams"]]),
        "fineweb_quality": FineWebQualityFilter(
            language=kiwi, short_line_thr=999, char_duplicates_ratio=0.1,
            line_punct_thr=ko_cfg["line_punct_thr"], new_line_ratio=ko_cfg["new_line_ratio"]),
        "gopher_quality": GopherQualityFilter(
            language=kiwi, max_avg_word_length=ko_cfg["max_avg_word_length"],
            min_avg_word_length=ko_cfg["min_avg_word_length"], stop_words=ko_cfg["stopwords"],
            max_non_alpha_words_ratio=ko_cfg["max_non_alpha_words_ratio"]),
    }
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "docs.jsonl"), "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    n = 0
    with open(os.path.join(OUT, "decisions.jsonl"), "w", encoding="utf-8") as f:
        for d in docs:
            presets = [("en", en)] + ([("ko", ko)] if d["lang"] == "ko" else [])
            for preset, filters in presets:
                for name, filt in filters.items():
                    keep, reason, text = run(filt, d)
                    rec = {"id": d["id"], "preset": preset, "filter": name, "keep": keep, "reason": reason}
                    if name == "c4_quality" and keep:
                        rec["text"] = text
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    n += 1
    print(f"{len(docs)} docs, {n} decisions -> {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
