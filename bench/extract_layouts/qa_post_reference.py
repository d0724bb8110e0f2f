#!/usr/bin/env python3
"""Second reference for the Q&A pages of the layout benchmark (family "stackexchange").

trafilatura (precision, default and recall modes alike) keeps ONE post of a Stack Exchange thread on most
pages: 4.5 k of the 36 k characters of question 1732348, and not the question. Token F1 against it measures
which post trafilatura picked, not whether the thread was extracted. For these pages the reference is the
thread itself, read from the page's own markup with lxml (independent of aji): the question title (<h1>)
and the body of every post (div.js-post-body: the question and each answer), in page order. Vote counts,
user cards, comments and the sidebar are not in it.

Writes data/extract_layouts/reference/<family>/<page>.posts.txt, which tests/data/extract_layouts_test.cpp
reads (it also checks that aji keeps what trafilatura keeps). Needs: lxml (a trafilatura dependency).
Usage (repository root): python3 bench/extract_layouts/qa_post_reference.py
"""
import gzip
import pathlib
import sys

import lxml.html

ROOT = pathlib.Path(__file__).resolve().parents[2]
BENCH = ROOT / "data/extract_layouts"
QA_FAMILIES = {"stackexchange"}


def thread_text(html: bytes) -> str:
    # Stack Exchange serves UTF-8; lxml would guess Latin-1 for bytes without an early <meta charset>.
    doc = lxml.html.fromstring(html.decode("utf-8"))
    parts = [h.text_content().strip() for h in doc.xpath("//h1")[:1]]
    posts = doc.xpath("//div[contains(concat(' ', normalize-space(@class), ' '), ' js-post-body ')]")
    if not posts:
        raise SystemExit("no div.js-post-body: not a Stack Exchange thread page")
    parts += [p.text_content().strip() for p in posts]
    return "\n".join(p for p in parts if p)


def main():
    rows = [r.split("\t") for r in (BENCH / "manifest.tsv").read_text().splitlines()[1:] if r.strip()]
    n = 0
    for fam, rel, _src in rows:
        if fam not in QA_FAMILIES:
            continue
        text = thread_text(gzip.decompress((BENCH / rel).read_bytes()))
        out = BENCH / "reference" / (rel.removesuffix(".html.gz") + ".posts.txt")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
        n += 1
    print(n, "thread references written")


if __name__ == "__main__":
    sys.exit(main())
