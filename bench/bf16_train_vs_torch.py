#!/usr/bin/python3
"""bf16 mixed-precision training step: aji fp32, aji bf16, PyTorch fp32 and PyTorch bf16
(torch.autocast("cpu", dtype=torch.bfloat16)), same model, batch and threads, in one run.

  /usr/bin/python3 bench/bf16_train_vs_torch.py [--bench build/bench/bf16_train_bench]
        [--threads 1 2] [--cases tiny:8:256] [--steps 3] [--skip-torch]

aji's side is build/bench/bf16_train_bench (one train_step: forward, LM-head loss, backward,
AdamW). PyTorch's is bench/train_step_vs_torch.py's worker (the model of
tests/reference/torch_reference.py, float32 parameters, torch.optim.AdamW; fp32 products
through the dnnl_sgemm shim), with the forward pass run under autocast for the bf16 row
(the loss is taken from the bf16 logits cast to float32). Each side runs in its own process.
Prints s/step, tokens/s, the ratios the issue asks for (aji bf16 vs aji fp32, aji bf16 vs
PyTorch bf16) and aji's MFU against the measured fp32 FMA and bf16 vdpbf16ps peaks.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import train_step_vs_torch as base  # noqa: E402


def torch_worker(cfg_path, B, T, steps, threads, precision):
    import torch
    sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
    import torch_reference as ref
    if precision == "bf16":
        fp32_forward = ref.forward

        def autocast_forward(cfg, P, tokens):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = fp32_forward(cfg, P, tokens)
            return logits.float()

        ref.forward = autocast_forward  # the worker below looks it up at each step
    base.torch_worker(cfg_path, B, T, steps, threads)


def run_torch(cfg_path, B, T, steps, threads, precision, shim):
    env = dict(os.environ)
    env["LD_PRELOAD"] = shim
    env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.check_output([sys.executable, os.path.abspath(__file__), "--torch-worker", cfg_path, str(B), str(T),
                                   str(steps), str(threads), precision], env=env)
    return json.loads(out.decode().strip().splitlines()[-1])


def run_aji(bench, cfg_path, B, T, steps, threads, precision):
    out = subprocess.check_output([bench, cfg_path, str(B), str(T), str(steps), str(threads), precision])
    return json.loads(out.decode().strip().splitlines()[-1])


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--torch-worker":
        _, _, cfg_path, B, T, steps, threads, precision = sys.argv
        torch_worker(cfg_path, int(B), int(T), int(steps), int(threads), precision)
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default=os.path.join(ROOT, "build", "bench", "bf16_train_bench"))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cases", nargs="+", default=["tiny:8:256"])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    shim = base.build_shim()
    print("machine: %s, %d cores, load average %s" % (os.uname().nodename, os.cpu_count(), os.getloadavg()))
    rows = []
    for case in args.cases:
        name, B, T = case.split(":")
        B, T = int(B), int(T)
        cfg_path = name if os.path.exists(name) else os.path.join(ROOT, "configs", name + ".json")
        for th in args.threads:
            r = {"case": name, "B": B, "T": T, "threads": th}
            for p in ("fp32", "bf16"):
                r["aji_" + p] = run_aji(args.bench, cfg_path, B, T, args.steps, th, p)
                r["torch_" + p] = None if args.skip_torch else run_torch(cfg_path, B, T, args.steps, th, p, shim)
            nan = float("nan")
            print("%-10s B=%d T=%d threads=%d (load %.1f)" % (name, B, T, th, os.getloadavg()[0]))
            for key in ("aji_fp32", "aji_bf16", "torch_fp32", "torch_bf16"):
                v = r[key]
                if v is None:
                    continue
                extra = ""
                if key.startswith("aji"):
                    extra = " | %.1f GFLOP/s, MFU %.1f%% of the measured %s peak %.0f GFLOP/s" % (
                        v["gflops"], 100 * v["mfu_measured"], v["precision"], v["peak_gflops_measured"])
                print("    %-10s %.3f s/step (min %.3f), %.0f tok/s, %.3f CPU-s/step, peak RSS %.0f MiB%s" %
                      (key, v["step_seconds_median"], v["step_seconds_min"], B * T / v["step_seconds_median"],
                       v.get("cpu_seconds_per_step", nan), v["peak_rss_mib"], extra))
            a32, a16 = r["aji_fp32"]["step_seconds_median"], r["aji_bf16"]["step_seconds_median"]
            line = "    aji bf16 vs aji fp32: %.2fx" % (a32 / a16)
            if r["torch_bf16"]:
                line += " | vs PyTorch bf16: %.2fx | vs PyTorch fp32: %.2fx" % (
                    r["torch_bf16"]["step_seconds_median"] / a16, r["torch_fp32"]["step_seconds_median"] / a16)
            print(line)
            rows.append(r)
            sys.stdout.flush()
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
