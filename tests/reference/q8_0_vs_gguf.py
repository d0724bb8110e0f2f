#!/usr/bin/env python3
"""aji's Q8_0 quantizer against the gguf package, byte for byte.

aji has one Q8_0 quantizer (src/aji/kernels/cpu/lowbit.cpp: quantize_q8_0), used by
`aji export gguf --type q8_0` and by `--weights q8_0` generation. This script exports each
model twice (f32 and q8_0), quantizes the f32 matrices with gguf.quants.quantize (the
gguf-py reference of ggml's quantize_row_q8_0_ref: fp16 scale max|x|/127, values rounded
half away from zero), and compares the bytes of every Q8_0 tensor.

Usage:  python3 tests/reference/q8_0_vs_gguf.py [--aji build/aji] --model RUN_DIR [--model ...]
(any model directory with its tokenizer: an aji run or checkpoint, e.g. the demo's run)
Exit 0: every tensor equal; 1: a difference; 77: the gguf package is missing (skip).
"""
import argparse
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import gguf
    from gguf.quants import quantize
except ImportError as e:  # reference check only
    print(f"skip: {e} (pip install gguf numpy)")
    sys.exit(77)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tensors(path):
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--aji", default=os.path.join(ROOT, "build", "aji"))
    ap.add_argument("--model", action="append", required=True,
                    help="model directory with its tokenizer (repeatable)")
    a = ap.parse_args()
    models = a.model
    compared = blocks = bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for m in models:
            files = {}
            for typ in ("f32", "q8_0"):
                files[typ] = os.path.join(tmp, f"{os.path.basename(m.rstrip('/'))}-{typ}.gguf")
                subprocess.run([a.aji, "--quiet", "export", "gguf", "--model", m, "--type", typ, "--out", files[typ]],
                               check=True)
            f32, q8 = tensors(files["f32"]), tensors(files["q8_0"])
            for name, t in q8.items():
                if t.tensor_type != gguf.GGMLQuantizationType.Q8_0:
                    continue
                x = np.asarray(f32[name].data, dtype=np.float32)
                x = x.reshape(-1, int(t.shape[0]))  # ggml ne[0] = the row length
                want = quantize(x, gguf.GGMLQuantizationType.Q8_0).tobytes()
                got = np.asarray(t.data).tobytes()
                compared += 1
                blocks += x.size // 32
                if got != want:
                    bad += 1
                    g = np.frombuffer(got, np.uint8).reshape(-1, 34)
                    w = np.frombuffer(want, np.uint8).reshape(-1, 34)
                    diff = np.nonzero((g != w).any(axis=1))[0]
                    print(f"MISMATCH {m}: {name}: {len(diff)} of {len(g)} blocks differ, first block {diff[0]}")
    print(f"{compared} Q8_0 tensors ({blocks} blocks) compared, {bad} differ")
    if compared == 0:
        print("no Q8_0 tensor was written (every matrix narrower than 32?)")
        return 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
