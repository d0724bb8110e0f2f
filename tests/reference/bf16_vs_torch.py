#!/usr/bin/python3
"""PyTorch reference for aji's bf16 mixed-precision training step (--precision bf16).

Builds a small GPT-2 (the formulas of tests/reference/torch_reference.py), runs one batch
  - in float64 (the exact answer),
  - under torch.autocast("cpu", dtype=torch.bfloat16) with float32 parameters (PyTorch's
    mixed precision: the matrix products take bf16 inputs; the loss is taken in float32),
  - in float32,
and writes tests/fixtures/model/bf16_gpt2.bin (the AJIFIX01 format of torch_reference.py):
the weights, the batch, and for each of the three the logits, the loss and every parameter
gradient. tests/train/bf16_reference_test.cpp runs aji's bf16 step on the same weights and
batch and compares (tolerances and their reasons are stated there).

The weights: by default drawn here (N(0, 0.15) matrices, norms around 1, as torch_reference);
with --checkpoint DIR they are read from an aji checkpoint's model.safetensors and config.json
(a GPT-2 model: `aji pretrain --config configs/tiny-gpt2.json ... --out DIR`).

Also prints the relative errors against float64, so the size of bf16's error is seen next
to fp32's. Exits 77 (skipped) when torch is not installed.

  /usr/bin/python3 tests/reference/bf16_vs_torch.py [--checkpoint DIR] [--out FILE]
"""
import argparse
import json
import os
import struct
import sys

try:
    import numpy as np
    import torch
except ImportError as e:  # pragma: no cover
    print("skipped: %s (pip install torch numpy)" % e)
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import torch_reference as ref  # noqa: E402

CFG = {"arch": "gpt2", "vocab_size": 128, "n_layer": 2, "n_head": 4, "d_model": 32, "max_seq_len": 32,
       "norm_eps": 1e-5}
B, T = 2, 32


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        dt = {"F32": np.float32, "BF16": None, "F16": np.float16}[info["dtype"]]
        if dt is None:
            raw = np.frombuffer(data[a:b], dtype=np.uint16).astype(np.uint32) << 16
            arr = raw.view(np.float32)
        else:
            arr = np.frombuffer(data[a:b], dtype=dt).astype(np.float32)
        out[name] = arr.reshape(info["shape"])
    return out


def run(cfg, P32, tokens, targets, mode):
    """mode: 'f64', 'f32' or 'bf16' (autocast). Returns logits (f32 numpy), loss, grads."""
    dt = torch.float64 if mode == "f64" else torch.float32
    P = {k: torch.tensor(v, dtype=dt, requires_grad=True) for k, v in P32.items()}
    ref.DT = dt
    if mode == "bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = ref.forward(cfg, P, tokens)
    else:
        logits = ref.forward(cfg, P, tokens)
    logits = logits.to(dt)  # the loss in full precision (as aji: softmax and loss stay fp32)
    lp = torch.log_softmax(logits, dim=-1)
    loss = -lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).mean()
    loss.backward()
    grads = {k: v.grad.detach().to(torch.float64).numpy() for k, v in P.items()}
    return logits.detach().to(torch.float64).numpy(), loss.item(), grads


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="an aji checkpoint dir (model.safetensors + config.json) of a GPT-2 model")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "fixtures", "model", "bf16_gpt2.bin"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(11)
    if args.checkpoint:
        with open(os.path.join(args.checkpoint, "config.json")) as f:
            cfg = json.load(f)
        if cfg.get("arch", cfg.get("model_type")) not in ("gpt2",):
            print("--checkpoint: a GPT-2 model is expected")
            return 2
        cfg = {k: cfg[k] for k in ("arch", "vocab_size", "n_layer", "n_head", "d_model", "max_seq_len", "norm_eps")
               if k in cfg}
        st = read_safetensors(os.path.join(args.checkpoint, "model.safetensors"))
        P32 = {name: st[name].astype(np.float32) for name, _, _ in ref.param_shapes(cfg)}
    else:
        cfg = dict(CFG)
        P32 = {}
        for name, shape, _ in ref.param_shapes(cfg):
            if len(shape) == 1:
                base = 1.0 if "weight" in name else 0.0
                t = base + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
            else:
                t = 0.15 * torch.randn(shape, generator=g, dtype=torch.float64)
            P32[name] = t.float().numpy()
    V = cfg["vocab_size"]
    tokens = torch.randint(0, V, (B, T), generator=g)
    targets = torch.randint(0, V, (B, T), generator=g)

    res = {m: run(cfg, P32, tokens, targets, m) for m in ("f64", "bf16", "f32")}
    l64, loss64, g64 = res["f64"]
    for m in ("f32", "bf16"):
        lm, lossm, gm = res[m]
        worst = max(rel(gm[k], g64[k]) for k in g64)
        print("%-4s vs float64: logits rel %.2e | loss %.7f vs %.7f (rel %.2e) | worst gradient tensor rel %.2e" %
              (m, rel(lm, l64), lossm, loss64, abs(lossm - loss64) / abs(loss64), worst))

    arrays = [("param." + k, v) for k, v in P32.items()]
    arrays += [("tokens", tokens.numpy().astype(np.int32)), ("targets", targets.numpy().astype(np.int32))]
    for m in ("f64", "bf16", "f32"):
        lm, lossm, gm = res[m]
        arrays += [(m + ".logits", lm.astype(np.float32)), (m + ".loss", np.array([lossm], dtype=np.float32))]
        if m != "f32":  # fp32's gradients are only printed (the fixture stays small)
            arrays += [(m + ".grad." + k, v.astype(np.float32)) for k, v in gm.items()]
    meta = {"B": B, "T": T, "reference": "PyTorch %s: float64; torch.autocast('cpu', dtype=torch.bfloat16) with "
                                        "float32 parameters, loss in float64" % torch.__version__,
            "losses": {m: res[m][1] for m in res}}
    ref.write_fixture(args.out, cfg, meta, arrays)
    print("wrote %s (%d bytes)" % (args.out, os.path.getsize(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
