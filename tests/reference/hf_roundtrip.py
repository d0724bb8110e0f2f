#!/usr/bin/env python3
"""Hugging Face `transformers` loads a checkpoint that aji wrote and gives the same
log-probabilities as `aji score --json`.

    python3 -m venv --system-site-packages /tmp/aji-hf-venv      # Debian's torch 1.13
    /tmp/aji-hf-venv/bin/pip install transformers==4.40.2 safetensors==0.8.0
    /tmp/aji-hf-venv/bin/python tests/reference/hf_roundtrip.py --aji build/aji \
        --model RUN_DIR_OR_CKPT --text some.txt

Checks, and exits non-zero if one fails:
  1. AutoModelForCausalLM.from_pretrained(ckpt) loads model.safetensors + config.json with
     no missing or unexpected weights;
  2. its log-probabilities of aji's token ids equal aji's (max abs difference < 1e-3);
  3. the checkpoint's tokenizer.json, loaded by PreTrainedTokenizerFast, encodes the text
     to the same ids as aji (after aji's leading <|endoftext|>).
"""
import argparse, json, os, subprocess, sys
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

ap = argparse.ArgumentParser()
ap.add_argument("--aji", required=True)
ap.add_argument("--model", required=True)
ap.add_argument("--text", required=True)
args = ap.parse_args()

ckpt = args.model
if os.path.exists(os.path.join(ckpt, "latest")):
    ckpt = os.path.join(ckpt, open(os.path.join(ckpt, "latest")).read().strip())
out = subprocess.run([args.aji, "--threads", "1", "score", "--model", ckpt, "--input", args.text, "--json"],
                     check=True, capture_output=True, text=True).stdout
aji = json.loads(out)
tokens, aji_lp = aji["tokens"], aji["logprobs"]

model, info = AutoModelForCausalLM.from_pretrained(ckpt, output_loading_info=True)
model.eval()
# GPT-2's causal-mask buffers are not weights; anything else missing is a failure.
missing = [k for k in info["missing_keys"] if not k.endswith(".attn.bias") and not k.endswith("masked_bias")]
ok = True
if missing or info["unexpected_keys"] or info["mismatched_keys"]:
    print("FAIL loading:", {"missing": missing, "unexpected": info["unexpected_keys"],
                            "mismatched": info["mismatched_keys"]})
    ok = False
ctx = model.config.max_position_embeddings if hasattr(model.config, "max_position_embeddings") else model.config.n_positions
if len(tokens) > ctx:
    print("the text is longer than the context (%d tokens > %d); use a shorter text" % (len(tokens), ctx))
    sys.exit(2)
with torch.no_grad():
    logits = model(torch.tensor([tokens])).logits[0].double()
lp = torch.log_softmax(logits, dim=-1)
hf_lp = [float(lp[i, tokens[i + 1]]) for i in range(len(tokens) - 1)]
diff = max(abs(a - b) for a, b in zip(aji_lp, hf_lp))
print("%s: %s, %d tokens, max |logprob(aji) - logprob(transformers)| = %.3g, loss aji %.5f hf %.5f" % (
    ckpt, model.config.model_type, len(tokens), diff, -sum(aji_lp) / len(aji_lp), -sum(hf_lp) / len(hf_lp)))
if diff > 1e-3:
    print("FAIL: log-probabilities differ")
    ok = False
tj = os.path.join(ckpt, "tokenizer.json")
if os.path.exists(tj):
    text = open(args.text, encoding="utf-8").read()
    try:
        hf_ids = PreTrainedTokenizerFast(tokenizer_file=tj).encode(text, add_special_tokens=False)
        via = "transformers"
    except Exception as e:  # tokenizers < 0.20 (pinned by this transformers) cannot read merges written as pairs
        code = "import sys,json,tokenizers; t=tokenizers.Tokenizer.from_file(sys.argv[1]); " \
               "print(json.dumps(t.encode(open(sys.argv[2],encoding='utf-8').read(), add_special_tokens=False).ids))"
        r = subprocess.run(["python3", "-c", code, tj, args.text], capture_output=True, text=True)
        if r.returncode != 0:
            print("SKIP tokenizer check: no tokenizers library here reads %s (%s)" % (tj, str(e)[:100]))
            print("OK" if ok else "FAILED")
            sys.exit(0 if ok else 1)
        hf_ids = json.loads(r.stdout)
        via = "tokenizers (python3)"
    aji_ids = tokens[1:] if aji.get("bos") else tokens
    same = hf_ids == aji_ids
    print("tokenizer.json via %s: %s (%d ids)" % (via, "same ids as aji" if same else "DIFFERENT ids", len(hf_ids)))
    ok = ok and same
print("OK" if ok else "FAILED")
sys.exit(0 if ok else 1)
