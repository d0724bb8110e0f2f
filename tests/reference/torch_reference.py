#!/usr/bin/python3
"""Independent PyTorch reference for aji's transformer engine.

Builds small GPT-2 and Llama models in plain PyTorch (the Hugging Face formulas:
GPT2LMHeadModel with Conv1D weights and gelu_new; LlamaForCausalLM with rotate_half RoPE,
RMSNorm, SwiGLU, grouped-query attention; Qwen3-style QK-norm), from random weights this
script draws, runs one batch in float64 and saves:
  the weights (HF names), tokens, targets, loss weights, the expected logits, the loss,
  the gradient of every parameter, and the losses of 10 AdamW steps on the same batch
  (lr 1e-3, betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on matrices only).
into tests/fixtures/model/<name>.bin, read by tests/model/model_reference_test.cpp.

Run with Debian's PyTorch:   /usr/bin/python3 tests/reference/torch_reference.py
Format of a fixture: b"AJIFIX01", u64 little-endian header length, a JSON header
{"config": aji model config, "meta": {...}, "arrays": [{"name","dtype":"f32"|"i32","shape","offset"}]},
then the raw little-endian arrays (offsets relative to the end of the header).
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch

torch.set_num_threads(1)
DT = torch.float64
HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "..", "fixtures", "model")


def rope_tables(max_pos, hd, theta):
    # transformers LlamaRotaryEmbedding: inv_freq and the angle in float32, cos/sin taken of that
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    t = torch.arange(max_pos, dtype=torch.int64).float()
    angle = torch.outer(t, inv_freq)  # (max_pos, hd/2) float32
    emb = torch.cat([angle, angle], dim=-1).to(DT)
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rms_norm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def causal_attention(q, k, v):
    # q (B,H,T,hd), k/v (B,H,T,hd) already expanded for GQA
    T = q.shape[2]
    att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    att = att.masked_fill(~mask, float("-inf"))
    att = torch.softmax(att, dim=-1)
    return att @ v


def forward(cfg, P, tokens):
    B, T = tokens.shape
    C, H, KV = cfg["d_model"], cfg["n_head"], cfg.get("n_kv_head", cfg["n_head"])
    hd = C // H
    L = cfg["n_layer"]
    eps = cfg["norm_eps"]
    if cfg["arch"] == "gpt2":
        x = P["transformer.wte.weight"][tokens] + P["transformer.wpe.weight"][torch.arange(T)]
        for l in range(L):
            p = "transformer.h.%d." % l
            h = torch.nn.functional.layer_norm(x, (C,), P[p + "ln_1.weight"], P[p + "ln_1.bias"], eps)
            qkv = h @ P[p + "attn.c_attn.weight"] + P[p + "attn.c_attn.bias"]
            q, k, v = qkv.split(C, dim=2)
            q = q.view(B, T, H, hd).transpose(1, 2)
            k = k.view(B, T, H, hd).transpose(1, 2)
            v = v.view(B, T, H, hd).transpose(1, 2)
            y = causal_attention(q, k, v).transpose(1, 2).reshape(B, T, C)
            x = x + y @ P[p + "attn.c_proj.weight"] + P[p + "attn.c_proj.bias"]
            h = torch.nn.functional.layer_norm(x, (C,), P[p + "ln_2.weight"], P[p + "ln_2.bias"], eps)
            h = gelu_new(h @ P[p + "mlp.c_fc.weight"] + P[p + "mlp.c_fc.bias"])
            x = x + h @ P[p + "mlp.c_proj.weight"] + P[p + "mlp.c_proj.bias"]
        x = torch.nn.functional.layer_norm(x, (C,), P["transformer.ln_f.weight"], P["transformer.ln_f.bias"], eps)
        return x @ P["transformer.wte.weight"].t()
    cos, sin = rope_tables(cfg["max_seq_len"], hd, cfg["rope_theta"])
    cos, sin = cos[:T], sin[:T]
    x = P["model.embed_tokens.weight"][tokens]
    rep = H // KV
    for l in range(L):
        p = "model.layers.%d." % l
        h = rms_norm(x, P[p + "input_layernorm.weight"], eps)
        q = (h @ P[p + "self_attn.q_proj.weight"].t()).view(B, T, H, hd)
        k = (h @ P[p + "self_attn.k_proj.weight"].t()).view(B, T, KV, hd)
        v = (h @ P[p + "self_attn.v_proj.weight"].t()).view(B, T, KV, hd)
        if cfg.get("qk_norm"):
            q = rms_norm(q, P[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, P[p + "self_attn.k_norm.weight"], eps)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(rep, dim=1)  # HF repeat_kv: q head h uses kv head h // rep
        v = v.repeat_interleave(rep, dim=1)
        y = causal_attention(q, k, v).transpose(1, 2).reshape(B, T, H * hd)
        x = x + y @ P[p + "self_attn.o_proj.weight"].t()
        h = rms_norm(x, P[p + "post_attention_layernorm.weight"], eps)
        g = h @ P[p + "mlp.gate_proj.weight"].t()
        u = h @ P[p + "mlp.up_proj.weight"].t()
        x = x + (torch.nn.functional.silu(g) * u) @ P[p + "mlp.down_proj.weight"].t()
    x = rms_norm(x, P["model.norm.weight"], eps)
    head = P["model.embed_tokens.weight"] if cfg.get("tied_embeddings") else P["lm_head.weight"]
    return x @ head.t()


def param_shapes(cfg):
    C, H, KV, V, L = cfg["d_model"], cfg["n_head"], cfg.get("n_kv_head", cfg["n_head"]), cfg["vocab_size"], cfg["n_layer"]
    hd = C // H
    out = []  # (name, shape, decay) in aji's table order
    if cfg["arch"] == "gpt2":
        F = cfg.get("d_ff", 4 * C)
        out += [("transformer.wte.weight", (V, C), False), ("transformer.wpe.weight", (cfg["max_seq_len"], C), False)]
        for l in range(L):
            p = "transformer.h.%d." % l
            out += [(p + "ln_1.weight", (C,), False), (p + "ln_1.bias", (C,), False),
                    (p + "attn.c_attn.weight", (C, 3 * C), True), (p + "attn.c_attn.bias", (3 * C,), False),
                    (p + "attn.c_proj.weight", (C, C), True), (p + "attn.c_proj.bias", (C,), False),
                    (p + "ln_2.weight", (C,), False), (p + "ln_2.bias", (C,), False),
                    (p + "mlp.c_fc.weight", (C, F), True), (p + "mlp.c_fc.bias", (F,), False),
                    (p + "mlp.c_proj.weight", (F, C), True), (p + "mlp.c_proj.bias", (C,), False)]
        out += [("transformer.ln_f.weight", (C,), False), ("transformer.ln_f.bias", (C,), False)]
    else:
        F = cfg["d_ff"]
        out += [("model.embed_tokens.weight", (V, C), False)]
        for l in range(L):
            p = "model.layers.%d." % l
            out += [(p + "input_layernorm.weight", (C,), False),
                    (p + "self_attn.q_proj.weight", (H * hd, C), True),
                    (p + "self_attn.k_proj.weight", (KV * hd, C), True),
                    (p + "self_attn.v_proj.weight", (KV * hd, C), True)]
            if cfg.get("qk_norm"):
                out += [(p + "self_attn.q_norm.weight", (hd,), False), (p + "self_attn.k_norm.weight", (hd,), False)]
            out += [(p + "self_attn.o_proj.weight", (C, H * hd), True),
                    (p + "post_attention_layernorm.weight", (C,), False),
                    (p + "mlp.gate_proj.weight", (F, C), True), (p + "mlp.up_proj.weight", (F, C), True),
                    (p + "mlp.down_proj.weight", (C, F), True)]
        out += [("model.norm.weight", (C,), False)]
        if not cfg.get("tied_embeddings"):
            out += [("lm_head.weight", (V, C), True)]
    return out


def make_case(name, cfg, B, T, seed, target_mode):
    g = torch.Generator().manual_seed(seed)
    P = {}
    decay = {}
    for pname, shape, dec in param_shapes(cfg):
        if len(shape) == 1:  # norm gains around 1, biases around 0
            base = 1.0 if ("weight" in pname) else 0.0
            t = base + 0.1 * torch.randn(shape, generator=g, dtype=DT)
        else:
            t = 0.15 * torch.randn(shape, generator=g, dtype=DT)
        # round to fp32 so aji (fp32) and the reference start from identical weights
        P[pname] = t.float().to(DT).requires_grad_(True)
        decay[pname] = dec
    V = cfg["vocab_size"]
    tokens = torch.randint(0, V, (B, T), generator=g)
    targets = torch.randint(0, V, (B, T), generator=g)
    weights = torch.ones(B, T, dtype=DT)
    if target_mode == "ignore":  # some positions ignored (target -1), as SFT prompt tokens are
        targets[0, :3] = -1
        targets[1, 5] = -1
    elif target_mode == "weights":  # per-token loss weights
        weights = torch.randint(0, 3, (B, T), generator=g).to(DT) * 0.5
        weights[0, 0] = 1.0

    def loss_fn():
        logits = forward(cfg, P, tokens)
        lp = torch.log_softmax(logits, dim=-1)
        valid = targets >= 0
        tgt = targets.clamp(min=0)
        nll = -lp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
        w = weights * valid.to(DT)
        return (nll * w).sum() / w.sum(), logits

    init = {k: v.detach().float().numpy().copy() for k, v in P.items()}  # saved before the AdamW steps
    loss, logits = loss_fn()
    loss.backward()
    grads = {k: v.grad.detach().clone() for k, v in P.items()}

    # 10 AdamW steps on the same batch, from the same start (grads zeroed each step)
    for v in P.values():
        v.grad = None
    groups = [{"params": [P[k] for k in P if decay[k]], "weight_decay": 0.1},
              {"params": [P[k] for k in P if not decay[k]], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    adam_losses = []
    for _ in range(10):
        opt.zero_grad(set_to_none=True)
        l, _ = loss_fn()
        adam_losses.append(l.item())
        l.backward()
        opt.step()

    return init, grads, tokens, targets, weights, logits.detach(), loss.item(), adam_losses


def write_fixture(path, cfg, meta, arrays):
    header_arrays = []
    blobs = []
    off = 0
    for name, arr in arrays:
        if arr.dtype == np.int32:
            dtype = "i32"
        else:
            arr = arr.astype(np.float32)
            dtype = "f32"
        b = np.ascontiguousarray(arr).astype("<" + arr.dtype.str[1:]).tobytes()
        header_arrays.append({"name": name, "dtype": dtype, "shape": list(arr.shape), "offset": off})
        blobs.append(b)
        off += len(b)
    header = json.dumps({"config": cfg, "meta": meta, "arrays": header_arrays}).encode()
    with open(path, "wb") as f:
        f.write(b"AJIFIX01")
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for b in blobs:
            f.write(b)


CASES = [
    # name, config, B, T, seed, target mode
    ("gpt2_small", {"arch": "gpt2", "vocab_size": 101, "n_layer": 2, "n_head": 4, "d_model": 40, "max_seq_len": 24,
                    "norm_eps": 1e-5}, 2, 16, 1, "all"),
    ("llama_gqa", {"arch": "llama", "vocab_size": 101, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "d_model": 40,
                   "d_ff": 72, "max_seq_len": 24, "norm_eps": 1e-5, "rope_theta": 10000.0, "tied_embeddings": False,
                   "qk_norm": False}, 2, 16, 2, "ignore"),
    ("llama_qknorm_tied", {"arch": "llama", "vocab_size": 101, "n_layer": 2, "n_head": 4, "n_kv_head": 1,
                           "d_model": 40, "d_ff": 72, "max_seq_len": 24, "norm_eps": 1e-6, "rope_theta": 500.0,
                           "tied_embeddings": True, "qk_norm": True}, 2, 16, 3, "weights"),
]


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    for name, cfg, B, T, seed, mode in CASES:
        init, grads, tokens, targets, weights, logits, loss, adam_losses = make_case(name, cfg, B, T, seed, mode)
        arrays = [("param." + k, v) for k, v in init.items()]
        arrays += [("tokens", tokens.numpy().astype(np.int32)), ("targets", targets.numpy().astype(np.int32)),
                   ("loss_weights", weights.numpy().astype(np.float32)),
                   ("logits", logits.numpy().astype(np.float32)),
                   ("loss", np.array([loss], dtype=np.float32)),
                   ("adamw_losses", np.array(adam_losses, dtype=np.float32))]
        arrays += [("grad." + k, v.numpy().astype(np.float32)) for k, v in grads.items()]
        meta = {"B": B, "T": T, "loss": loss, "adamw_losses": adam_losses, "target_mode": mode,
                "adamw": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1,
                          "decay": "matrices only (2-D weights other than embeddings)"},
                "reference": "PyTorch %s, float64" % torch.__version__}
        path = os.path.join(OUT_DIR, name + ".bin")
        write_fixture(path, cfg, meta, arrays)
        print("%s: loss %.6f, adamw losses %s -> %s (%d bytes)" % (name, loss, adam_losses[0], adam_losses[-1],
                                                                  os.path.getsize(path)))


if __name__ == "__main__":
    sys.exit(main())
