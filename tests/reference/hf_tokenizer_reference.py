#!/usr/bin/env python3
"""Hugging Face `tokenizers` as the oracle for aji's tokenizer.json support.

1. Trains two small byte-level BPE tokenizers with HF's BpeTrainer on data/corpus/train
   (GPT-2 style: ByteLevel pre-tokenizer with its regex; Llama-3 style: Split(cl100k
   regex) + ByteLevel(use_regex=False)), adds the ChatML specials after training (so they
   sit after the ordinary ids, as in GPT-2, Llama-3 and Qwen2), and writes them to
   tests/fixtures/tokenizer/hf_trained_{gpt2,cl100k}.json.
2. Encodes held-out English and Korean text plus tricky strings with HF's own encoder and
   writes the ids to tests/fixtures/tokenizer/hf_trained_ids.json. The C++ test loads the
   json files in aji and must produce exactly these ids.
3. With --aji BUILD/aji: the other direction. aji trains a tokenizer and writes it with
   --hf-out; HF loads that tokenizer.json and its ids are compared with `aji tokenizer
   encode` on the same text (prints the agreement; exits 1 on any difference).

Run: python3 tests/reference/hf_tokenizer_reference.py [--aji build/aji]
Needs: pip install tokenizers (0.20+).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import tokenizers
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
CL100K = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TRAIN_FILES = [os.path.join(ROOT, "data", "corpus", "train", f)
               for f in ["en_shakespeare.txt", "en_kjv.txt", "en_news.txt", "ko_news.txt", "ko_nsmc.txt"]]
HELDOUT = [os.path.join(ROOT, "data", "corpus", "heldout", f) for f in ["en_news_dev.txt", "ko_news_dev.txt"]]

TRICKY = [
    "", " ", "\n\n\n", "Hello, world!", "  leading and trailing  ", "tabs\tand\r\nCRLF\r\n",
    "It's they're WE'LL don't", "1234567890 12.5% 3,000", "camelCaseXMLHttpRequest",
    "한국어 텍스트와 English가 섞인 문장입니다.", "ㅋㅋㅋㅋㅋ ㅠㅠ", "emoji 🎉🎉 and 中文字符",
    "\u00a0non-breaking\u3000space", "<|endoftext|> is the special token here<|im_end|>", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
]


def make_tokenizer(style):
    tok = Tokenizer(models.BPE())
    if style == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(CL100K), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    tok.decoder = decoders.ByteLevel()
    return tok


def train_hf(style, vocab_size, files):
    tok = make_tokenizer(style)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(SPECIALS), special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train(files, trainer)
    tok.add_special_tokens(SPECIALS)
    return tok


def heldout_texts(max_lines=150, single_lines=40):
    texts = []
    for path in HELDOUT:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")[:max_lines]
        texts.append("\n".join(lines) + "\n")   # one multi-line document
        texts.extend(lines[:single_lines])     # and single lines
    return texts + TRICKY


def generate_fixtures():
    texts = heldout_texts()
    out = {"tokenizers_version": tokenizers.__version__, "texts": texts}
    for style in ["gpt2", "cl100k"]:
        tok = train_hf(style, 1200, TRAIN_FILES)
        path = os.path.join(FIX, f"hf_trained_{style}.json")
        tok.save(path)
        out[style] = [tok.encode(t, add_special_tokens=False).ids for t in texts]
        # HF's decode must give the text back (sanity of the oracle itself).
        for t, ids in zip(texts, out[style]):
            assert tok.decode(ids, skip_special_tokens=False) == t, (style, t)
        print(f"{style}: vocab {tok.get_vocab_size()} -> {path}", file=sys.stderr)
    with open(os.path.join(FIX, "hf_trained_ids.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


def check_aji_export(aji):
    """aji trains + writes tokenizer.json; HF must encode exactly as aji does."""
    texts = heldout_texts(1000, 1000)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for pattern, vocab in [("cl100k", 4096), ("gpt2", 4096), ("o200k", 4096), ("cl100k", 32768)]:
            aji_file = os.path.join(tmp, "tok.json")
            hf_file = os.path.join(tmp, "tokenizer.json")
            subprocess.run([aji, "-q", "tokenizer", "train", "--input", *TRAIN_FILES, "--vocab-size", str(vocab),
                            "--pattern", pattern, "--out", aji_file, "--hf-out", hf_file], check=True)
            hf = Tokenizer.from_file(hf_file)
            inp = os.path.join(tmp, "in.jsonl")
            with open(inp, "w", encoding="utf-8") as f:
                for t in texts:
                    f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
            r = subprocess.run([aji, "tokenizer", "encode", "--tokenizer", aji_file, "--input", inp,
                                "--jsonl-field", "text", "--allow-special"], check=True, capture_output=True, text=True)
            aji_all = [json.loads(line) for line in r.stdout.splitlines()]
            assert len(aji_all) == len(texts)
            n_same = 0
            for t, aji_ids in zip(texts, aji_all):
                hf_ids = hf.encode(t, add_special_tokens=False).ids
                if aji_ids == hf_ids:
                    n_same += 1
                else:
                    failures += 1
                    if failures <= 5:
                        print(f"  DIFF {pattern}/{vocab}: {t[:60]!r}\n    aji {aji_ids[:20]}\n    hf  {hf_ids[:20]}",
                              file=sys.stderr)
            print(f"aji --hf-out {pattern} vocab {vocab}: HF encodes {n_same}/{len(texts)} texts identically",
                  file=sys.stderr)
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--aji", help="path of the aji binary: also check aji's tokenizer.json export with HF")
    ap.add_argument("--no-fixtures", action="store_true", help="do not regenerate the fixtures")
    args = ap.parse_args()
    if not args.no_fixtures:
        generate_fixtures()
    if args.aji:
        sys.exit(1 if check_aji_export(args.aji) else 0)


if __name__ == "__main__":
    main()
