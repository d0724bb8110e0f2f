#!/usr/bin/env python3
"""Hugging Face as the oracle for tokenizer.json files whose special tokens sit INSIDE the
ordinary id range (what `tokenizers`' BpeTrainer(special_tokens=[...]) makes: <|endoftext|>
at id 0), and for scoring a model that uses one.

1. Trains a small GPT-2-style byte-level BPE with special_tokens=["<|endoftext|>",
   "<|pad|>"] (ids 0 and 1, before the 256 bytes) and adds "<|im_end|>" after training (the
   last id), on tests/fixtures/tokenizer/train_tiny.txt. Writes
   tests/fixtures/tokenizer/hf_specials_inside.json and, encoded by HF itself
   (tokenizer.encode(text, add_special_tokens=False): special text becomes its id), the ids
   and HF's decode of them to tests/fixtures/tokenizer/hf_specials_inside_ids.json.
2. Builds a tiny random GPT-2 (transformers, seed 0) over that vocabulary and saves it with
   the tokenizer as tests/fixtures/tokenizer/hf-specials-model/ (config.json,
   model.safetensors, tokenizer.json), with transformers' per-token log-probabilities of a
   text (ids from step 1, <|endoftext|> = id 0 in front) in logprobs.json: what `aji score`
   must reproduce.
3. With --aji BUILD/aji: aji writes tokenizer.json (`aji tokenizer train --format hf`);
   the installed `tokenizers` (Tokenizer.from_file) and `transformers`
   (PreTrainedTokenizerFast) must load it and encode text exactly as `aji tokenizer
   encode` does; the merges must be "A B" strings (the form every tokenizers release reads).

Run: python3 tests/reference/hf_specials_reference.py [--aji build/aji] [--no-fixtures]
Needs: pip install tokenizers transformers torch safetensors (tests/reference/requirements-tokenizer.txt).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
TRAIN = os.path.join(FIX, "train_tiny.txt")
TEXTS = [
    "", "Hello, world!", "<|endoftext|>", "<|endoftext|>Once upon a time<|pad|><|pad|>",
    "a<|endoftext|>b <|im_end|>\n", "  leading and trailing  ", "tabs\tand\r\nCRLF\r\n",
    "It's they're WE'LL don't 1234567890", "한국어 텍스트와 English가 섞인 문장입니다.",
    "emoji 🎉 and <|endoftext", "<|im_end|><|endoftext|><|pad|>",
]
SCORE_TEXT = "The quick brown fox jumps over the lazy dog. And then it ran away, far away."


def train():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([TRAIN], trainer)
    tok.add_special_tokens(["<|im_end|>"])
    return tok


def generate_fixtures():
    tok = train()
    assert tok.token_to_id("<|endoftext|>") == 0 and tok.token_to_id("<|pad|>") == 1
    path = os.path.join(FIX, "hf_specials_inside.json")
    tok.save(path)
    texts = TEXTS + [l for l in open(TRAIN, encoding="utf-8").read().split("\n")[:20]]
    ids = [tok.encode(t, add_special_tokens=False).ids for t in texts]
    decoded = [tok.decode(i, skip_special_tokens=False) for i in ids]
    for t, d in zip(texts, decoded):
        assert d == t, (t, d)
    out = {"tokenizers_version": tokenizers.__version__, "vocab_size": tok.get_vocab_size(),
           "texts": texts, "ids": ids, "decoded": decoded}
    with open(os.path.join(FIX, "hf_specials_inside_ids.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"vocab {tok.get_vocab_size()} -> {path}", file=sys.stderr)

    import torch
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                     bos_token_id=0, eos_token_id=0, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    model = GPT2LMHeadModel(cfg).eval()
    mdir = os.path.join(FIX, "hf-specials-model")
    os.makedirs(mdir, exist_ok=True)
    model.save_pretrained(mdir, safe_serialization=True)
    tok.save(os.path.join(mdir, "tokenizer.json"))
    ids = [0] + tok.encode(SCORE_TEXT, add_special_tokens=False).ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    lp = torch.log_softmax(logits, -1)
    logprobs = [lp[i - 1, ids[i]].item() for i in range(1, len(ids))]
    with open(os.path.join(mdir, "logprobs.json"), "w") as f:
        json.dump({"transformers_version": transformers.__version__, "text": SCORE_TEXT, "tokens": ids,
                   "logprobs": logprobs}, f)
        f.write("\n")
    print(f"model -> {mdir} ({len(ids)} tokens scored)", file=sys.stderr)


def check_aji_export(aji):
    from transformers import PreTrainedTokenizerFast
    texts = TEXTS + [l for l in open(TRAIN, encoding="utf-8").read().split("\n")]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for pattern in ["gpt2", "cl100k"]:
            hf_file = os.path.join(tmp, "tokenizer.json")
            subprocess.run([aji, "-q", "tokenizer", "train", "--input", TRAIN, "--vocab-size", "700",
                            "--pattern", pattern, "--format", "hf", "--out", hf_file], check=True)
            merges = json.load(open(hf_file, encoding="utf-8"))["model"]["merges"]
            if not all(isinstance(m, str) and len(m.split(" ")) == 2 for m in merges):
                print(f"  {pattern}: merges are not all \"A B\" strings", file=sys.stderr)
                failures += 1
            hf = Tokenizer.from_file(hf_file)
            fast = PreTrainedTokenizerFast(tokenizer_file=hf_file)
            inp = os.path.join(tmp, "in.jsonl")
            with open(inp, "w", encoding="utf-8") as f:
                for t in texts:
                    f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
            r = subprocess.run([aji, "tokenizer", "encode", "--tokenizer", hf_file, "--input", inp,
                                "--jsonl-field", "text", "--allow-special"], check=True, capture_output=True, text=True)
            aji_all = [json.loads(line) for line in r.stdout.splitlines()]
            same = 0
            for t, a in zip(texts, aji_all):
                if a == hf.encode(t, add_special_tokens=False).ids == fast(t, add_special_tokens=False)["input_ids"]:
                    same += 1
                else:
                    failures += 1
            print(f"aji --format hf ({pattern}, {len(merges)} merges): tokenizers {tokenizers.__version__} and "
                  f"transformers PreTrainedTokenizerFast encode {same}/{len(texts)} texts as aji", file=sys.stderr)
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--aji", help="the aji binary: also check aji's tokenizer.json export with tokenizers/transformers")
    ap.add_argument("--no-fixtures", action="store_true")
    args = ap.parse_args()
    if not args.no_fixtures:
        generate_fixtures()
    if args.aji:
        sys.exit(1 if check_aji_export(args.aji) else 0)


if __name__ == "__main__":
    main()
