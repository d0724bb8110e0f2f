#!/usr/bin/env python3
"""Oracle for aji's safetensors reader/writer (src/aji/train/safetensors.cpp).

Writes tests/fixtures/train/mixed.safetensors with the official `safetensors` package
(F32, F16 and BF16 tensors, metadata) and mixed.json with the float32 values torch gives
for each tensor. Needs torch + safetensors, e.g.:
    python3 -m venv --system-site-packages /tmp/aji-hf-venv
    /tmp/aji-hf-venv/bin/pip install safetensors==0.8.0 transformers==4.40.2
    /tmp/aji-hf-venv/bin/python tests/reference/safetensors_reference.py
With --check FILE it instead loads FILE (written by aji) with safetensors and prints
its tensors' names, shapes and sums as JSON.
"""
import json, os, sys
import torch
from safetensors.torch import save_file, load_file

if len(sys.argv) == 3 and sys.argv[1] == "--check":
    t = load_file(sys.argv[2])
    print(json.dumps({k: {"shape": list(v.shape), "dtype": str(v.dtype), "sum": float(v.double().sum())}
                      for k, v in sorted(t.items())}))
    sys.exit(0)

torch.manual_seed(7)
tensors = {
    "a.f32": torch.randn(3, 4),
    "b.f16": (torch.randn(5) * 100).half(),
    "c.bf16": (torch.randn(2, 3) * 1e-3).bfloat16(),
    "d.f16_special": torch.tensor([0.0, -0.0, 6e-8, 65504.0, float("inf"), -2.5], dtype=torch.float16),
    "e.scalar": torch.tensor(1.5),
}
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
out = os.path.join(root, "tests", "fixtures", "train")
save_file(tensors, os.path.join(out, "mixed.safetensors"), metadata={"format": "pt", "who": "reference"})
with open(os.path.join(out, "mixed.json"), "w") as f:
    json.dump({k: {"shape": list(v.shape), "values": [x if abs(x) != float("inf") else str(x) for x in v.float().flatten().tolist()]}
               for k, v in tensors.items()}, f)
print("wrote", out)
