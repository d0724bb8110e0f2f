"""tiktoken Encodings built from the rank files shipped in data/tokenizer/ (no network).

The patterns and specials are those of tiktoken_ext/openai_public.py, read from
data/tokenizer/encodings_meta.json (cl100k uses the upstream possessive pattern, as the
installed tiktoken does)."""
import json
import os

import tiktoken
from tiktoken.load import load_tiktoken_bpe

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(REPO, "data", "tokenizer")


def encoding(name):
    meta = json.load(open(os.path.join(DATA, "encodings_meta.json")))[name]
    ranks = load_tiktoken_bpe(os.path.join(DATA, meta["file"]), expected_hash=meta["sha256"])
    pat = meta.get("pat_str_upstream_current") or meta["pat_str"]
    return tiktoken.Encoding(name=name, pat_str=pat, mergeable_ranks=ranks, special_tokens=meta["special_tokens"])
