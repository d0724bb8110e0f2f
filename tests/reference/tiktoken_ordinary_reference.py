#!/usr/bin/env python3
"""Oracle for `aji tokenizer encode --ordinary` (tests/tokenizer/tokenizer_cli_test.cpp):
encodes texts that contain special-token text with Python tiktoken's encode_ordinary and
encode(..., disallowed_special=()) (which must agree), and with encode(...,
allowed_special="all") for contrast, for cl100k_base and o200k_base from the rank files in
data/tokenizer/ (no network). Writes tests/fixtures/tokenizer/tiktoken_ordinary.json.

  pip install tiktoken   # tests/reference/requirements-tokenizer.txt
  python3 tests/reference/tiktoken_ordinary_reference.py
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiktoken  # noqa: E402
import tiktoken_local  # noqa: E402

TEXTS = [
    "Hello <|endoftext|> World",
    "<|endoftext|>",
    "a<|endoftext|>b<|fim_prefix|>c<|endofprompt|>",
    "<|im_start|>user\n안녕하세요<|im_end|>\n",
    "<|endoftext|><|endoftext|>  <|endoftext",
]


def main():
    out = {"tiktoken_version": tiktoken.__version__, "cases": []}
    for name in ["cl100k_base", "o200k_base"]:
        enc = tiktoken_local.encoding(name)
        for t in TEXTS:
            ordinary = enc.encode_ordinary(t)
            assert ordinary == enc.encode(t, disallowed_special=()), (name, t)
            out["cases"].append({"encoding": name, "text": t, "ordinary": ordinary,
                                 "allowed": enc.encode(t, allowed_special="all")})
    path = os.path.join(tiktoken_local.REPO, "tests", "fixtures", "tokenizer", "tiktoken_ordinary.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote", path, len(out["cases"]), "cases")


if __name__ == "__main__":
    main()
