#!/usr/bin/env python3
"""Independent, deliberately naive byte-level BPE trainer: the oracle for aji's trainer.

Written separately from src/aji/tokenizer/trainer.cpp, with none of its data structures:
split the text with the `regex` module and the pattern's regex, count unique pieces, then
for every merge recount ALL pairs from scratch and take the best one. Rules (the ones aji
documents, as rustbpe and HF use them):
  * token ids 0..255 are the single bytes; every new byte string gets the next id;
  * the pair with the highest count wins, ties go to the smallest (left id, right id);
  * a merge whose bytes already exist reuses that id (no new token); training goes on until
    the vocabulary holds the requested number of distinct byte strings.

Regenerates tests/fixtures/tokenizer/bpe_reference_<pattern>.json from train_tiny.txt:
    python3 tests/reference/bpe_reference.py
"""
import collections
import json
import os
import sys

import regex

PATTERNS = {
    # gpt2: tiktoken's r50k_base / HF GPT-2 ByteLevel regex.
    "gpt2": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    # cl100k_base, the original (non-possessive) form.
    "cl100k": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
    "o200k": "|".join([
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]),
}


def count_pieces(text, pattern):
    counts = collections.Counter()
    for m in regex.finditer(PATTERNS[pattern], text):
        counts[m.group(0).encode("utf-8")] += 1
    return counts


def train(text, pattern, n_tokens):
    return train_pieces(count_pieces(text, pattern), n_tokens)


def train_pieces(pieces, n_tokens):
    words = [[list(p), c] for p, c in sorted(pieces.items()) if len(p) >= 2]
    token_bytes = [bytes([b]) for b in range(256)]
    id_of = {}
    merges = []
    while len(token_bytes) < n_tokens:
        pair_counts = collections.Counter()
        for syms, c in words:
            for i in range(len(syms) - 1):
                pair_counts[(syms[i], syms[i + 1])] += c
        if not pair_counts:
            break
        best = max(pair_counts.items(), key=lambda kv: (kv[1], -kv[0][0], -kv[0][1]))
        (a, b), count = best
        new_bytes = token_bytes[a] + token_bytes[b]
        if new_bytes in id_of:
            c_id = id_of[new_bytes]
        else:
            c_id = len(token_bytes)
            id_of[new_bytes] = c_id
            token_bytes.append(new_bytes)
        merges.append([a, b, c_id, count])
        for w in words:
            syms, out, i = w[0], [], 0
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == a and syms[i + 1] == b:
                    out.append(c_id)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            w[0] = out
    return token_bytes, merges, pieces


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    fixtures = os.path.join(root, "tests", "fixtures", "tokenizer")
    text = open(os.path.join(fixtures, "train_tiny.txt"), encoding="utf-8").read()
    n_tokens = 256 + 400
    for pattern in ["gpt2", "cl100k", "o200k"]:
        token_bytes, merges, pieces = train(text, pattern, n_tokens)
        out = {
            "source": "tests/reference/bpe_reference.py (naive recount-everything BPE; regex module "
                      + regex.__version__ + ")",
            "input": "tests/fixtures/tokenizer/train_tiny.txt",
            "pattern": pattern,
            "n_tokens": n_tokens,
            "unique_pieces": len(pieces),
            "total_pieces": sum(pieces.values()),
            "merges": merges,  # [left, right, result, count]
            "new_tokens_hex": [t.hex() for t in token_bytes[256:]],
        }
        path = os.path.join(fixtures, f"bpe_reference_{pattern}.json")
        with open(path, "w") as f:
            json.dump(out, f, separators=(",", ":"))
            f.write("\n")
        print(f"{pattern}: {len(merges)} merges, {len(token_bytes) - 256} new tokens, "
              f"{len(merges) - (len(token_bytes) - 256)} merges reused an id, {len(pieces)} unique pieces -> {path}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
