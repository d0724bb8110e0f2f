#!/usr/bin/env python3
"""Oracle for aji's optimiser (src/aji/train/optimizer.cpp): PyTorch's AdamW and
clip_grad_norm_ on a small set of parameters, 10 steps.

Writes tests/fixtures/train/adamw_reference.json. Run with Debian's torch:
    /usr/bin/python3 tests/reference/adamw_reference.py
The gradients are generated here (torch.manual_seed) and stored in the fixture, so the
C++ test replays exactly the same updates. Parameter groups follow aji's rule: weight
decay on matrices only (not on the bias-like / norm-like vector, not on "embeddings").
"""
import json, os, sys
import torch

torch.manual_seed(1234)
shapes = {"matrix": (6, 5), "norm": (5,), "embed": (7, 3), "matrix2": (4, 4)}
decay = {"matrix": True, "norm": False, "embed": False, "matrix2": True}
params = {k: torch.randn(*s, dtype=torch.float32) * 0.5 for k, s in shapes.items()}
init = {k: v.clone() for k, v in params.items()}
for p in params.values():
    p.requires_grad_(True)
lr, betas, eps, wd = 1e-3, (0.9, 0.95), 1e-8, 0.1
opt = torch.optim.AdamW(
    [{"params": [params[k] for k in shapes if decay[k]], "weight_decay": wd},
     {"params": [params[k] for k in shapes if not decay[k]], "weight_decay": 0.0}],
    lr=lr, betas=betas, eps=eps, foreach=False)
steps = []
max_norm = 1.0
for step in range(10):
    grads = {k: torch.randn(*s, dtype=torch.float32) * (0.3 + step * 0.2) for k, s in shapes.items()}
    for k in shapes:
        params[k].grad = grads[k].clone()
    norm = torch.nn.utils.clip_grad_norm_([params[k] for k in shapes], max_norm)
    opt.step()
    steps.append({
        "grads": {k: grads[k].flatten().tolist() for k in shapes},
        "grad_norm": float(norm),
        "params_after": {k: params[k].detach().flatten().tolist() for k in shapes},
    })
out = {
    "generator": "tests/reference/adamw_reference.py (torch %s)" % torch.__version__,
    "lr": lr, "beta1": betas[0], "beta2": betas[1], "eps": eps, "weight_decay": wd, "max_norm": max_norm,
    "order": list(shapes), "shapes": {k: list(s) for k, s in shapes.items()}, "decay": decay,
    "init": {k: init[k].flatten().tolist() for k in shapes},
    "steps": steps,
}
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
path = os.path.join(root, "tests", "fixtures", "train", "adamw_reference.json")
with open(path, "w") as f:
    json.dump(out, f)
print("wrote", path)
