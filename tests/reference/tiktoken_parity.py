#!/usr/bin/env python3
"""Oracle for tests/tokenizer/tiktoken_parity_test.cpp: encodes real English and Korean
text with Python tiktoken (same rank files as aji: data/tokenizer/) and writes, per
document, the token count and a 64-bit FNV-1a hash of the ids, for cl100k_base and
o200k_base.

  python3 tests/reference/tiktoken_parity.py            # rebuild samples + fixture
  python3 tests/reference/tiktoken_parity.py --fixture  # fixture only (samples present)

Samples (gzip, copied from the project's shared data; licenses in LICENSE-NOTE.txt) go to
tests/fixtures/tokenizer/parity/. A document is 64 consecutive lines, newlines included.
"""
import gzip
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiktoken_local  # noqa: E402

REPO = tiktoken_local.REPO
OUT = os.path.join(REPO, "tests", "fixtures", "tokenizer", "parity")
SHARED = "/work/shared/data"
# (sample name, source file, bytes to keep (None = all, cut at a line end))
SAMPLES = [
    ("tinyshakespeare.txt.gz", "tinyshakespeare/input.txt", None),
    ("korean_english_park_test_en.txt.gz", "korean_english_news/korean-english-park.test.en", None),
    ("korean_english_park_test_ko.txt.gz", "korean_english_news/korean-english-park.test.ko", None),
    ("korean_chatbot.csv.gz", "korean_chatbot/ChatbotData.csv", None),
    ("nsmc_raw_head.tsv.gz", "nsmc_sample/nsmc_raw_sample.tsv", 600_000),
]
LINES_PER_DOC = 64


def split_docs(data: bytes):
    # Split on b"\n" only (what the C++ test does), keeping the newlines.
    lines = data.split(b"\n")
    parts = [l + b"\n" for l in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    return [b"".join(parts[i:i + LINES_PER_DOC]) for i in range(0, len(parts), LINES_PER_DOC)]


def fnv1a64(ids):
    h = 0xCBF29CE484222325
    for i in ids:
        for b in i.to_bytes(4, "little"):
            h ^= b
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    os.makedirs(OUT, exist_ok=True)
    if "--fixture" not in sys.argv:
        for name, src, keep in SAMPLES:
            data = open(os.path.join(SHARED, src), "rb").read()
            if keep is not None and len(data) > keep:
                data = data[: data.rindex(b"\n", 0, keep) + 1]
            with gzip.GzipFile(os.path.join(OUT, name), "wb", mtime=0) as f:
                f.write(data)
    encs = {n: tiktoken_local.encoding(n) for n in ("cl100k_base", "o200k_base")}
    rows = ["# encoding\tsample\tdoc\tbytes\ttokens\tfnv1a64(ids as uint32 LE)"]
    for name, _, _ in SAMPLES:
        data = gzip.open(os.path.join(OUT, name), "rb").read()
        for d, doc in enumerate(split_docs(data)):
            text = doc.decode("utf-8")
            for en, enc in encs.items():
                ids = enc.encode_ordinary(text)
                rows.append(f"{en}\t{name}\t{d}\t{len(doc)}\t{len(ids)}\t{fnv1a64(ids):016x}")
    with open(os.path.join(REPO, "tests", "fixtures", "tokenizer", "tiktoken_parity.tsv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    print(f"{len(rows) - 1} rows, tiktoken {tiktoken_local.tiktoken.__version__}")


if __name__ == "__main__":
    main()
