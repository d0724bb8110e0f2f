#!/usr/bin/python3
"""Training-step speed: aji against a plain PyTorch CPU training loop of the same model,
in the same run, same threads.

  /usr/bin/python3 bench/train_step_vs_torch.py [--aji build/aji] [--threads 1 2]
        [--cases tiny:8:256 gpt2-124m:4:256] [--steps 3]

Each case is CONFIG:BATCH:SEQ with CONFIG a preset in configs/. The PyTorch peer is the
model of tests/reference/torch_reference.py in float32 as nn.Parameters, trained with
F.cross_entropy and torch.optim.AdamW (lr 1e-4, betas (0.9, 0.95), wd 0.1 on matrices).
Debian's python3-torch links the reference (netlib) BLAS here, so the peer is run with
bench/dnnl_blas_shim.c preloaded: its sgemm_ is oneDNN's dnnl_sgemm, the same GEMM aji
uses (a fast BLAS selected: the fair setting the issue asks for). Each side runs in its own
process so that peak RSS is its own. Prints s/step, tokens/s, the speed ratio, aji's GEMM
floor, step/floor, MFU and peak RSS.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def build_shim():
    out = os.path.join(tempfile.gettempdir(), "aji-dnnl-blas-shim-%d.so" % os.getuid())
    src = os.path.join(HERE, "dnnl_blas_shim.c")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(src):
        subprocess.check_call(["cc", "-O2", "-shared", "-fPIC", src, "-ldnnl", "-o", out])
    return out


def torch_worker(cfg_path, B, T, steps, threads):
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
    import torch_reference as ref
    torch.set_num_threads(threads)
    ref.DT = torch.float32
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg.pop("comment", None)
    # aji's defaults for keys a config may leave out
    cfg.setdefault("norm_eps", 1e-5)
    cfg.setdefault("rope_theta", 10000.0)
    cfg.setdefault("n_kv_head", cfg["n_head"])
    cfg.setdefault("qk_norm", False)
    cfg.setdefault("tied_embeddings", cfg["arch"] == "gpt2")
    if cfg["arch"] == "gpt2":
        cfg.setdefault("d_ff", 4 * cfg["d_model"])
    g = torch.Generator().manual_seed(0)
    P = {}
    decay, no_decay = [], []
    for name, shape, dec in ref.param_shapes(cfg):
        if len(shape) == 1:
            t = torch.ones(shape) if "weight" in name else torch.zeros(shape)
        else:
            t = 0.02 * torch.randn(shape, generator=g)
        P[name] = torch.nn.Parameter(t)
        (decay if dec else no_decay).append(P[name])
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
    V = cfg["vocab_size"]
    tokens = torch.randint(0, V, (B, T), generator=g)
    targets = torch.randint(0, V, (B, T), generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = ref.forward(cfg, P, tokens)
        loss = F.cross_entropy(logits.view(-1, V), targets.view(-1))
        loss.backward()
        opt.step()
        return loss.item()

    step()  # warm-up
    times = []
    cpu0 = time.process_time()
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / steps
    times.sort()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"step_seconds_median": times[len(times) // 2], "step_seconds_min": times[0],
                      "cpu_seconds_per_step": cpu, "peak_rss_mib": rss, "torch": torch.__version__}))


def run_torch(cfg_path, B, T, steps, threads, shim):
    env = dict(os.environ)  # OMP_WAIT_POLICY (--passive) applies to both sides
    env["LD_PRELOAD"] = shim
    env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.check_output([sys.executable, os.path.abspath(__file__), "--torch-worker", cfg_path, str(B), str(T),
                                   str(steps), str(threads)], env=env)
    return json.loads(out.decode().strip().splitlines()[-1])


def run_aji(aji, cfg_path, B, T, steps, threads):
    out = subprocess.check_output([aji, "--threads", str(threads), "bench", "train-step", "--config", cfg_path, "--batch",
                                   str(B), "--seq", str(T), "--steps", str(steps), "--json"])
    return json.loads(out.decode().strip().splitlines()[-1])


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--torch-worker":
        _, _, cfg_path, B, T, steps, threads = sys.argv
        torch_worker(cfg_path, int(B), int(T), int(steps), int(threads))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--aji", default=os.path.join(ROOT, "build", "aji"))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cases", nargs="+", default=["tiny:8:256", "tiny-gpt2:8:256", "gpt2-124m:4:256"])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--json-out", help="also write every measurement to this JSON file")
    ap.add_argument("--passive", action="store_true",
                    help="OMP_WAIT_POLICY=PASSIVE for both sides: on a busy machine spinning threads waste CPU")
    args = ap.parse_args()
    shim = build_shim()
    if args.passive:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    rows = []
    print("machine: %s, %d cores, load average %s (wall times are only comparable on an idle machine; "
          "CPU-seconds are the fairer measure under contention)" % (os.uname().nodename, os.cpu_count(), os.getloadavg()))
    for case in args.cases:
        name, B, T = case.split(":")
        B, T = int(B), int(T)
        cfg_path = name if os.path.exists(name) else os.path.join(ROOT, "configs", name + ".json")
        for th in args.threads:
            a = run_aji(args.aji, cfg_path, B, T, args.steps, th)
            t = None if args.skip_torch else run_torch(cfg_path, B, T, args.steps, th, shim)
            nan = float("nan")
            ts = t["step_seconds_median"] if t else nan
            tc = t["cpu_seconds_per_step"] if t else nan
            print("%-10s B=%d T=%d threads=%d" % (name, B, T, th))
            print("    torch: %.3f s/step wall, %.3f CPU-s/step -> %.0f tok/s, %.0f tok/CPU-s, peak RSS %.0f MiB" %
                  (ts, tc, B * T / ts, B * T / tc, t["peak_rss_mib"] if t else nan))
            print("    aji:   %.3f s/step wall, %.3f CPU-s/step -> %.0f tok/s, %.0f tok/CPU-s, peak RSS %.0f MiB" %
                  (a["step_seconds_median"], a["step_cpu_seconds_median"], a["tokens_per_second"],
                   a["tokens_per_cpu_second"], a["peak_rss_mib"]))
            print("    aji/torch speed: %.2fx wall, %.2fx CPU | aji GEMM floor %.3f s wall, %.3f CPU-s -> step/floor "
                  "%.2fx wall, %.2fx CPU | MFU %.1f%% of %.0f GFLOP/s nominal, %.1f%% of %.0f measured" %
                  (ts / a["step_seconds_median"], tc / a["step_cpu_seconds_median"], a["gemm_floor_seconds"],
                   a["gemm_floor_cpu_seconds"], a["step_over_floor"], a["step_over_floor_cpu"], 100 * a["mfu"],
                   a["peak_gflops"], 100 * a["mfu_measured"], a["peak_gflops_measured"]))
            print("    aji main-thread CPU by op: " +
                  ", ".join("%s %.3f" % (k, v) for k, v in a["breakdown_cpu_seconds"].items()))
            rows.append({"case": name, "B": B, "T": T, "threads": th, "aji": a, "torch": t})
            sys.stdout.flush()
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
