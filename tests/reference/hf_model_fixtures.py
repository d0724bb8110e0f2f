#!/usr/bin/env python3
"""Oracle for loading Hugging Face model directories and for `aji score`.

Builds two tiny random models with Hugging Face `transformers` (GPT2LMHeadModel and a
grouped-query LlamaForCausalLM), saves them with save_pretrained (config.json +
model.safetensors) under tests/fixtures/infer/, plus a copy of the GPT-2 weights in the
layout of the original hub files (no "transformer." prefix, with the attn.bias buffers),
and writes the log-probabilities transformers computes for fixed token sequences, one
within the context and one longer than it (scored in half-overlapping windows, the
rule aji's score_tokens documents), to tests/fixtures/infer/hf_logprobs.json.

    python3 -m venv --system-site-packages /tmp/aji-hf-venv
    /tmp/aji-hf-venv/bin/pip install transformers==4.40.2 safetensors==0.8.0
    /tmp/aji-hf-venv/bin/python tests/reference/hf_model_fixtures.py
"""
import json, os, shutil
import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

torch.manual_seed(0)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "infer")
CTX = 64


def logprobs(model, ids):
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    lp = torch.log_softmax(logits, dim=-1)
    return [float(lp[i, ids[i + 1]]) for i in range(len(ids) - 1)]


def windowed(model, ids):
    n, stride, out, covered, start = len(ids), CTX // 2, [0.0] * (len(ids) - 1), 0, 0
    while covered < n - 1:
        length = min(CTX, n - start)
        lp = logprobs(model, ids[start:start + length])
        for j in range(length - 1):
            if start + j >= covered:
                out[start + j] = lp[j]
        covered = start + length - 1
        start += stride
    return out


def randomize(model):
    # Non-trivial norms and biases too, so a misplaced tensor shows up.
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.dim() > 1 else 0.2) + (1.0 if "ln" in name or "norm" in name else 0.0))


gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=96, n_positions=CTX, n_embd=32, n_layer=2, n_head=4,
                                  activation_function="gelu_new", resid_pdrop=0, embd_pdrop=0, attn_pdrop=0))
llama = LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CTX,
                                     rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False))
result = {}
g = torch.Generator().manual_seed(1)
short = torch.randint(0, 96, (40,), generator=g).tolist()
long = torch.randint(0, 96, (100,), generator=g).tolist()
for name, model in [("gpt2", gpt2), ("llama", llama)]:
    randomize(model)
    model.eval()
    d = os.path.join(OUT, "hf-" + name)
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d, safe_serialization=True)
    for extra in ["generation_config.json"]:
        if os.path.exists(os.path.join(d, extra)):
            os.remove(os.path.join(d, extra))
    result[name] = {"short": short, "short_logprobs": logprobs(model, short),
                    "long": long, "long_logprobs": windowed(model, long)}

# The original GPT-2 hub layout: names without "transformer.", plus causal-mask buffers.
d = os.path.join(OUT, "hf-gpt2-hub-layout")
shutil.rmtree(d, ignore_errors=True)
os.makedirs(d)
shutil.copy(os.path.join(OUT, "hf-gpt2", "config.json"), d)
t = load_file(os.path.join(OUT, "hf-gpt2", "model.safetensors"))
hub = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in t.items()}
for i in range(2):
    hub["h.%d.attn.bias" % i] = torch.tril(torch.ones(1, 1, CTX, CTX))
save_file(hub, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
with open(os.path.join(OUT, "hf_logprobs.json"), "w") as f:
    json.dump(result, f)
print("wrote", OUT)
