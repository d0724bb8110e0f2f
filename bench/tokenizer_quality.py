#!/usr/bin/env python3
"""Tokenizer quality: aji's BPE trainer vs Hugging Face tokenizers' BpeTrainer on the same
English + Korean corpus, pattern (cl100k) and vocabulary size.

Reports, for each trained tokenizer and for OpenAI's cl100k_base / o200k_base:
  * bytes per token on HELD-OUT English and Korean text (data/corpus/heldout, never trained on),
and between aji and HF:
  * vocabulary overlap (shared token byte strings), merge overlap (shared (left,right)
    byte-string pairs) and the length of the identical prefix of the merge sequence.

Corpora:
  --corpus small  data/corpus/train (2.6 MB bundled mix: 1.8 MB English, 0.8 MB Korean)
  --corpus large  the bundled mix + more Korean and English from ../shared/data (built in
                  /tmp/aji_quality_mix once: NSMC reviews, Korean hate-speech comments (text
                  only), KorNLI/KorSTS sentences, KJV, GNU standards; 20.2 MB in all)
Run from the repository root after `make build`:
    python3 bench/tokenizer_quality.py --corpus small --vocab 8192
    python3 bench/tokenizer_quality.py --corpus large --vocab 32768
"""
import argparse
import base64
import glob
import json
import os
import subprocess
import sys
import tempfile

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
if not os.path.isdir(SHARED):
    SHARED = "/work/shared/data"
CL100K = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
HELDOUT = {"English": os.path.join(ROOT, "data/corpus/heldout/en_news_dev.txt"),
           "Korean": os.path.join(ROOT, "data/corpus/heldout/ko_news_dev.txt")}


def byte_decoder():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


BYTE_DECODER = byte_decoder()


def hf_token_bytes(s):
    return bytes(BYTE_DECODER[ch] for ch in s)


def make_large_mix():
    out_dir = "/tmp/aji_quality_mix"
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        return sorted(glob.glob(out_dir + "/*.txt"))
    os.makedirs(out_dir, exist_ok=True)

    def write(name, lines):
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            for line in lines:
                line = line.strip()
                if line:
                    f.write(line + "\n")

    def tsv_column(path, cols, skip_header):
        with open(path, encoding="utf-8") as f:
            rows = f.read().split("\n")[1 if skip_header else 0:]
        for r in rows:
            parts = r.split("\t")
            for c in cols:
                if c < len(parts):
                    yield parts[c]

    write("ko_nsmc.txt", tsv_column(os.path.join(SHARED, "nsmc_sample/nsmc_raw_sample.tsv"), [4], True))
    write("ko_comments.txt", open(os.path.join(SHARED, "korean_hate_speech/unlabeled_unlabeled_comments_5.txt"), encoding="utf-8"))
    write("ko_nli.txt", tsv_column(os.path.join(SHARED, "kor_nlu/KorNLI_xnli.test.ko.tsv"), [0, 1], True))
    write("ko_sts.txt", tsv_column(os.path.join(SHARED, "kor_nlu/KorSTS_sts-train.tsv"), [5, 6], True))
    write("en_kjv.txt", open(os.path.join(SHARED, "kjv_bible/kjv.txt"), encoding="utf-8"))
    write("en_gnu.txt", open(os.path.join(SHARED, "gnu_standards/standards.txt"), encoding="utf-8"))
    files = sorted(glob.glob(out_dir + "/*.txt"))
    return files


def aji_stats(aji, tok_file, path):
    r = subprocess.run([aji, "tokenizer", "stats", "--json", "--threads", "1", "--tokenizer", tok_file, "--input", path],
                       check=True, capture_output=True, text=True)
    return json.loads(r.stdout)["total"]["bytes_per_token"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="small", choices=["small", "large"])
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--aji", default=os.path.join(ROOT, "build", "aji"))
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(ROOT, "data/corpus/train/*.txt")))
    if args.corpus == "large":
        files += make_large_mix()
    total = sum(os.path.getsize(f) for f in files)
    print(f"corpus: {args.corpus}, {len(files)} files, {total / 1e6:.1f} MB; vocab {args.vocab}; pattern cl100k", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        aji_file, aji_hf = os.path.join(tmp, "aji.json"), os.path.join(tmp, "aji_hf.json")
        subprocess.run([args.aji, "-q", "tokenizer", "train", "--input", *files, "--vocab-size", str(args.vocab),
                        "--pattern", "cl100k", "--out", aji_file, "--hf-out", aji_hf], check=True)
        hf = Tokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(CL100K), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        trainer = trainers.BpeTrainer(vocab_size=args.vocab - len(SPECIALS), special_tokens=[], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        hf.train(files, trainer)
        hf.add_special_tokens(SPECIALS)
        hf_file = os.path.join(tmp, "hf.json")
        hf.save(hf_file)

        # Vocabulary and merges as byte strings.
        aji_tokens = [base64.b64decode(t) for t in json.load(open(aji_file))["tokens"]]
        hf_model = json.load(open(hf_file))["model"]
        hf_tokens = [hf_token_bytes(t) for t in hf_model["vocab"]]

        def merges_of(model):
            out = []
            for m in model["merges"]:
                a, b = m.split(" ") if isinstance(m, str) else m
                out.append((hf_token_bytes(a), hf_token_bytes(b)))
            return out

        aji_merges = merges_of(json.load(open(aji_hf))["model"])
        hf_merges = merges_of(hf_model)
        shared_vocab = len(set(aji_tokens) & set(hf_tokens))
        shared_merges = len(set(aji_merges) & set(hf_merges))
        prefix = 0
        while prefix < min(len(aji_merges), len(hf_merges)) and aji_merges[prefix] == hf_merges[prefix]:
            prefix += 1
        print(f"vocabulary: aji {len(aji_tokens)} ordinary tokens, HF {len(hf_tokens)}; shared {shared_vocab} "
              f"({100 * shared_vocab / len(aji_tokens):.2f}% of aji's)")
        print(f"merges: aji {len(aji_merges)}, HF {len(hf_merges)}; shared {shared_merges} "
              f"({100 * shared_merges / len(aji_merges):.2f}%); identical first {prefix} merges in order")

        print()
        print("| tokenizer | vocab | English B/token | Korean B/token |")
        print("|---|---|---|---|")
        rows = [("aji (trained here)", args.vocab, aji_file), ("HF BpeTrainer (trained here)", args.vocab, hf_file),
                ("cl100k_base (GPT-4)", 100277, os.path.join(ROOT, "data/tokenizer/cl100k_base.tiktoken")),
                ("o200k_base (GPT-4o)", 200019, os.path.join(ROOT, "data/tokenizer/o200k_base.tiktoken"))]
        for name, vocab, path in rows:
            if path == hf_file:
                vals = []
                for lang, p in HELDOUT.items():
                    text = open(p, encoding="utf-8").read()
                    vals.append(len(text.encode("utf-8")) / len(hf.encode(text, add_special_tokens=False).ids))
            else:
                vals = [aji_stats(args.aji, path, p) for p in HELDOUT.values()]
            print(f"| {name} | {vocab} | {vals[0]:.3f} | {vals[1]:.3f} |")


if __name__ == "__main__":
    main()
