#!/usr/bin/env python3
"""Data parallelism on paper (docs/distributed.md): per-step gradient traffic, the bandwidth
at which the all-reduce hides behind the backward pass, and the expected scaling to 8, 64
and 512 machines on 10 and 100 Gb/s links, for every preset in configs/.

The model (ring all-reduce of fp32 gradients, as MPI and NCCL do for large buffers):
  traffic per rank and step  = 2 (N-1)/N x 4 P bytes           (P parameters)
  all-reduce time            = traffic / bandwidth + 2 (N-1) x latency
  compute per step and rank  = 6 P x tokens_per_rank / R        (R: FLOP/s of one machine)
  hiding window              = the backward of the LAST micro-batch = 4 P x micro_tokens / R
  visible communication      = max(0, all-reduce time - window)
  bandwidth to hide it       = 2 (N-1)/N x 4 P / window = 2 (N-1)/N x R / micro_tokens  (bytes/s)
The global batch is fixed (tokens per step), so N machines each run tokens/N of it, in
micro-batches of at most micro_tokens; efficiency = compute / (compute + visible).

Calibrate R with --gflops (the FLOP/s one machine reaches in training, e.g. measured:
tok/s x 6P from `aji pretrain`'s metrics.jsonl) and the latency with --latency-us.

  python3 bench/dist_model.py --gflops 640 --latency-us 50
"""
import argparse
import glob
import json
import os


def params(c):
    V, C, L = c["vocab_size"], c["d_model"], c["n_layer"]
    F = c.get("d_ff", 4 * C)
    H = c["n_head"]
    KV = c.get("n_kv_head", H)
    hd = C // H
    if c.get("arch", "llama") == "gpt2":
        per = 4 * C + C * 3 * C + 3 * C + C * C + C + C * F + F + F * C + C
        return V * C + c["max_seq_len"] * C + L * per + 2 * C
    per = 2 * C + C * (H * hd + 2 * KV * hd) + H * hd * C + 3 * C * F
    return V * C + L * per + C + (0 if c.get("tied_embeddings", True) else V * C)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gflops", type=float, required=True, help="training FLOP/s of one machine, in GFLOP/s")
    ap.add_argument("--latency-us", type=float, default=50.0, help="per-message latency of the network")
    ap.add_argument("--global-tokens", type=int, default=524288, help="tokens per optimizer step (all machines)")
    ap.add_argument("--micro-rows", type=int, default=8, help="rows per micro-batch (x the preset's context)")
    args = ap.parse_args()
    R = args.gflops * 1e9
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
    print("| preset | P | gradients | bandwidth to hide (N large) | N | 10 Gb/s: visible comm / efficiency | 100 Gb/s: visible / efficiency |")
    print("|---|---|---|---|---|---|---|")
    for f in sorted(glob.glob(os.path.join(root, "*.json"))):
        c = json.load(open(f))
        if "n_layer" not in c:
            continue
        P = params(c)
        micro = args.micro_rows * c["max_seq_len"]
        hide_bw = 2 * R / micro  # bytes/s
        for n in (8, 64, 512):
            per_rank = args.global_tokens / n
            m = min(micro, per_rank)
            compute = 6 * P * per_rank / R
            window = 4 * P * m / R
            cells = []
            for gbps in (10, 100):
                bw = gbps * 1e9 / 8
                ar = 2 * (n - 1) / n * 4 * P / bw + 2 * (n - 1) * args.latency_us * 1e-6
                vis = max(0.0, ar - window)
                cells.append("%.3f s / %.0f%%" % (vis, 100 * compute / (compute + vis)))
            print("| %s | %.1fM | %.0f MB | %.2f Gb/s | %d | %s | %s |" % (
                os.path.basename(f)[:-5], P / 1e6, 4 * P / 1e6, hide_bw * 8 / 1e9, n, cells[0], cells[1]))


if __name__ == "__main__":
    main()
