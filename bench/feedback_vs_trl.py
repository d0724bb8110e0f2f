#!/usr/bin/env python3
"""GRPO and DPO step time: aji against TRL's GRPOTrainer / DPOTrainer on PyTorch CPU, same model, same
data, same threads, in one run (issue #14, performance).

  python3 bench/feedback_vs_trl.py [--aji build/aji] [--threads 1 2] [--work /tmp/aji-bench/feedback]
        [--grpo-steps 5] [--dpo-steps 8] [--prompts 4] [--group 8] [--max-new 32] [--dpo-batch 8]
        [--only grpo|dpo] [--aji-precision fp32 bf16 auto] [--trl-precision fp32 bf16]

Model: configs/tiny-gpt2.json (GPT-2 family, L6 d384, 6 heads, context 256, vocab 8192, tied; 13.9M
parameters) with a 8192-token BPE tokenizer trained by aji on data/sft/train.jsonl, initialised by one
aji pretraining step (so practically random weights: neither side's samples hit the stop token, both
generate exactly --max-new tokens per completion, and the work per step is the same). aji writes the
checkpoint in Hugging Face form (config.json, model.safetensors, tokenizer files with the ChatML
template); TRL loads that very directory with AutoModelForCausalLM / AutoTokenizer.

GRPO: the prompts of data/rl_tasks/arith_train.jsonl (chat form), --prompts prompts x --group
completions per step, max --max-new new tokens, temperature 1, no top-k/top-p, beta 0.04 (frozen
reference forward), loss dapo, one optimizer step per generation (TRL: per_device_train_batch_size =
prompts x group, steps_per_generation 1, num_iterations 1), reward = the number verifier (a Python
function for TRL, `--verifier number` for aji), stop token <|im_end|> on both sides. aji's rollout time
is its `rollout_seconds`; TRL's is the time spent in `GRPOTrainer._generate` (HF generate with KV
cache over all rows at once). Rollout tokens/s = completion tokens generated / rollout time.

DPO: pairs of data/prefs/hh_rlhf_sample.jsonl whose rendered prompt+chosen and prompt+rejected both
fit in 256 tokens (filtered here with the HF tokenizer, so neither side truncates or drops anything),
--dpo-batch pairs per step, beta 0.1, sigmoid loss, reference log-probs precomputed before training on
both sides (TRL precompute_ref_log_probs=True; aji always does), AdamW. Step time excludes the
reference pass.

Each side runs in its own process (AJI_THREADS / torch.set_num_threads); the first step of each run is a
warm-up and is left out; the table shows the median of the remaining steps. Besides wall time, each
step's CPU seconds (user + system, all threads) are recorded: TRL's from time.process_time() in a
trainer callback, aji's by polling /proc/PID/stat whenever a new metrics.jsonl step line appears (20 ms
resolution). On a shared, loaded machine the CPU ratio is the fairer one.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run(cmd, env=None, quiet=True):
    r = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:])
        raise SystemExit("command failed (%d): %s" % (r.returncode, " ".join(cmd)))
    if not quiet:
        print(r.stdout)
    return r.stdout


def find_model_dir(out):
    """The directory with config.json + model.safetensors inside an aji run dir."""
    for dirpath, _, files in sorted(os.walk(out)):
        if "config.json" in files and "model.safetensors" in files and "tokenizer.json" in files:
            return dirpath
    raise SystemExit("no Hugging Face checkpoint under " + out)


def prepare(args):
    w = args.work
    os.makedirs(w, exist_ok=True)
    marker = os.path.join(w, "ready.json")
    if os.path.exists(marker):  # reused while every file it names is still there (and from this checkout)
        info = json.load(open(marker))
        if all(os.path.exists(v) for v in info.values() if isinstance(v, str) and v.startswith("/")):
            return info
    aji = args.aji
    text = os.path.join(w, "text.jsonl")
    with open(os.path.join(ROOT, "data/sft/train.jsonl"), encoding="utf-8") as f, open(text, "w", encoding="utf-8") as o:
        for line in f:
            for m in json.loads(line)["messages"]:
                o.write(json.dumps({"text": m["content"]}, ensure_ascii=False) + "\n")
    run([aji, "tokenizer", "train", "--input", text, "--jsonl-field", "text", "--vocab-size", "8192",
         "--out", os.path.join(w, "tokenizer.json")])
    run([aji, "data", "tokenize", "--tokenizer", os.path.join(w, "tokenizer.json"), "--input", text,
         "--jsonl-field", "text", "--out", os.path.join(w, "shards"), "--val-fraction", "0.05", "--force"])
    run([aji, "pretrain", "--config", "configs/tiny-gpt2.json", "--data", os.path.join(w, "shards"),
         "--out", os.path.join(w, "base"), "--force", "--steps", "1", "--batch-size", "4", "--seq-len", "256",
         "--lr", "1e-4", "--warmup", "0", "--eval-every", "0", "--sample-every", "0", "--save-every", "0"])
    model = find_model_dir(os.path.join(w, "base"))
    # GRPO tasks: the arithmetic prompts (the answers matter only for the reward)
    tasks = os.path.join(ROOT, "data/rl_tasks/arith_train.jsonl")
    # DPO pairs that fit in 256 tokens on both sides
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model)
    pairs = []
    with open(os.path.join(ROOT, "data/prefs/hh_rlhf_sample.jsonl"), encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if "chosen" not in r:
                continue
            ok = all(len(tok.apply_chat_template(r["prompt"] + r[k], tokenize=True, return_dict=False)) <= 256
                     for k in ("chosen", "rejected"))
            if ok:
                pairs.append(r)
    prefs = os.path.join(w, "pairs.jsonl")
    with open(prefs, "w", encoding="utf-8") as o:
        for r in pairs:
            o.write(json.dumps({"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]},
                               ensure_ascii=False) + "\n")
    info = {"model": model, "tasks": tasks, "pairs": prefs, "n_pairs": len(pairs)}
    json.dump(info, open(marker, "w"))
    return info


# ---------------------------------------------------------------- aji side
def proc_cpu(pid):
    """user + system CPU seconds of a running process (all its threads), from /proc."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def run_aji_timed(cmd, env, metrics, key):
    """Run aji; each time a metrics.jsonl line with KEY appears, record the process's CPU time so far
    (polled every 20 ms), so per-step CPU seconds can be compared on a loaded machine."""
    if os.path.exists(metrics):
        os.remove(metrics)
    logpath = os.path.dirname(metrics) + ".log"
    log = open(logpath, "w")
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    cpu_marks, seen, last = [], 0, 0.0
    while True:
        done = p.poll() is not None
        c = proc_cpu(p.pid)
        if c is not None:
            last = c
        if os.path.exists(metrics):
            lines = [l for l in open(metrics) if key in l]
            while seen < len(lines):
                cpu_marks.append(last)
                seen += 1
        if done:
            break
        time.sleep(0.02)
    log.close()
    if p.returncode != 0:
        sys.stderr.write(open(logpath).read()[-4000:])
        raise SystemExit("command failed (%d): %s" % (p.returncode, " ".join(cmd)))
    return [b - a for a, b in zip(cpu_marks, cpu_marks[1:])], open(logpath).read()


def aji_grpo(args, info, threads, precision):
    out = os.path.join(args.work, "aji-grpo-%d-%s" % (threads, precision))
    env = dict(os.environ, AJI_THREADS=str(threads))
    cpu, _ = run_aji_timed([args.aji, "grpo", "--model", info["model"], "--tasks", info["tasks"], "--verifier", "number",
         "--out", out, "--force", "--steps", str(args.grpo_steps), "--group-size", str(args.group),
         "--prompts-per-step", str(args.prompts), "--max-new-tokens", str(args.max_new), "--lr", "1e-4",
         "--kl-coef", "0.04", "--temperature", "1", "--loss-type", "dapo", "--save-every", "0", "--keep", "1",
         "--precision", precision],
        env, os.path.join(out, "metrics.jsonl"), '"rollout_seconds"')
    steps = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if '"rollout_seconds"' in l]
    rows = [{"step_s": s["seconds"], "rollout_s": s["rollout_seconds"], "tokens": s["tokens"],
             "reply_len": s["reply_len"]} for s in steps]
    for k in range(1, len(rows)):  # CPU of step k = between the lines of steps k-1 and k (step 0 has none)
        rows[k]["cpu_s"] = cpu[k - 1] if k - 1 < len(cpu) else None
    return rows


def aji_dpo(args, info, threads, precision):
    out = os.path.join(args.work, "aji-dpo-%d-%s" % (threads, precision))
    env = dict(os.environ, AJI_THREADS=str(threads))
    val = os.path.join(args.work, "val_one.jsonl")
    with open(info["pairs"], encoding="utf-8") as f, open(val, "w", encoding="utf-8") as o:
        o.write(f.readline())
    cpu, log = run_aji_timed([args.aji, "dpo", "--model", info["model"], "--data", info["pairs"], "--val", val, "--out", out,
               "--force", "--steps", str(args.dpo_steps), "--batch-size", str(args.dpo_batch), "--beta", "0.1",
               "--lr", "1e-6", "--kl-prompts", "0", "--eval-every", "0", "--save-every", "0", "--keep", "1",
               "--precision", precision],
                             env, os.path.join(out, "metrics.jsonl"), '"step_s"')
    m = re.search(r"too_long[^0-9]*(\d+)", log)
    if m and int(m.group(1)) > 0:
        raise SystemExit("aji dropped %s pairs as too long; the filter disagrees with aji's rendering" % m.group(1))
    steps = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if '"step_s"' in l]
    rows = [{"step_s": s["step_s"], "tokens": s.get("tokens")} for s in steps]
    for k in range(1, len(rows)):
        rows[k]["cpu_s"] = cpu[k - 1] if k - 1 < len(cpu) else None
    return rows


# ---------------------------------------------------------------- TRL side (runs in a child process)
def trl_worker(kind, args, info, threads, result_path, precision="fp32"):
    import torch
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    import transformers
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    transformers.logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(info["model"])
    model = AutoModelForCausalLM.from_pretrained(info["model"], torch_dtype=torch.float32)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, a, state, control, **kw):
            times.append((time.perf_counter() - self.t0, time.process_time() - self.c0))

    common = dict(output_dir=os.path.join(args.work, "trl-%s-%d" % (kind, threads)), max_steps=0,
                  logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, bf16=precision == "bf16", fp16=False,
                  dataloader_num_workers=0, seed=0, disable_tqdm=True)
    if kind == "grpo":
        from trl import GRPOConfig, GRPOTrainer
        rows = [json.loads(l) for l in open(info["tasks"], encoding="utf-8")]
        ds = Dataset.from_list([{"prompt": r["messages"], "answer": r["answer"]} for r in rows])

        def number_reward(completions, answer, **kw):
            out = []
            for c, a in zip(completions, answer):
                text = c[0]["content"] if isinstance(c, list) else c
                m = re.search(r"####\s*(-?[\d,]+(?:\.\d+)?)", text) or None
                nums = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text)
                v = m.group(1) if m else (nums[-1] if nums else None)
                try:
                    out.append(1.0 if v is not None and float(v.replace(",", "")) == float(a) else 0.0)
                except ValueError:
                    out.append(0.0)
            return out

        common["max_steps"] = args.grpo_steps
        cfg = GRPOConfig(**common, per_device_train_batch_size=args.prompts * args.group,
                         gradient_accumulation_steps=1, num_generations=args.group,
                         max_completion_length=args.max_new, temperature=1.0, top_p=1.0, top_k=0, beta=0.04,
                         loss_type="dapo", learning_rate=1e-4, steps_per_generation=1, num_iterations=1,
                         generation_kwargs={"eos_token_id": im_end}, log_completions=False)
        tr = GRPOTrainer(model=model, reward_funcs=[number_reward], args=cfg, train_dataset=ds,
                         processing_class=tok, callbacks=[Timer()])
        gen = []
        orig = tr._generate

        def timed_generate(prompts):
            t0 = time.perf_counter()
            r = orig(prompts)
            completion_ids = r[1]
            gen.append((time.perf_counter() - t0, sum(len(c) for c in completion_ids)))
            return r

        tr._generate = timed_generate
        tr.train()
        res = [{"step_s": t[0], "cpu_s": t[1], "rollout_s": g[0], "tokens": g[1],
                "reply_len": g[1] / (args.prompts * args.group)} for t, g in zip(times, gen)]
    else:
        from trl import DPOConfig, DPOTrainer
        rows = [json.loads(l) for l in open(info["pairs"], encoding="utf-8")]
        ds = Dataset.from_list(rows)
        common["max_steps"] = args.dpo_steps
        cfg = DPOConfig(**common, per_device_train_batch_size=args.dpo_batch, gradient_accumulation_steps=1,
                        beta=0.1, learning_rate=1e-6, max_length=256, precompute_ref_log_probs=True)
        tr = DPOTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[Timer()])
        tr.train()
        res = [{"step_s": t[0], "cpu_s": t[1]} for t in times]
    json.dump(res, open(result_path, "w"))


def trl_side(kind, args, info, threads, precision="fp32"):
    path = os.path.join(args.work, "trl-%s-%d-%s.json" % (kind, threads, precision))
    cmd = [sys.executable, os.path.abspath(__file__), "--trl-worker", kind, "--threads", str(threads),
           "--trl-precision", precision,
           "--work", args.work, "--grpo-steps", str(args.grpo_steps), "--dpo-steps", str(args.dpo_steps),
           "--prompts", str(args.prompts), "--group", str(args.group), "--max-new", str(args.max_new),
           "--dpo-batch", str(args.dpo_batch), "--result", path]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    r = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-6000:])
        raise SystemExit("TRL %s worker failed" % kind)
    return json.load(open(path))


def med(rows, key):
    xs = [r[key] for r in rows[1:] if r.get(key) is not None]
    return statistics.median(xs) if xs else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--aji", default=os.path.join(ROOT, "build/aji"))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--work", default="/tmp/aji-bench/feedback")
    ap.add_argument("--grpo-steps", type=int, default=5)
    ap.add_argument("--dpo-steps", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new", type=int, default=32)
    ap.add_argument("--dpo-batch", type=int, default=8)
    ap.add_argument("--only", choices=["grpo", "dpo"])
    ap.add_argument("--aji-precision", nargs="+", default=["fp32"], choices=["fp32", "bf16", "auto"],
                    help="aji's --precision, one aji run each (like for like with --trl-precision of the same name)")
    ap.add_argument("--trl-precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                    help="TRL's precision, one TRL run each: fp32 (its CPU default) or bf16 (TrainingArguments "
                         "bf16=True: torch.autocast on CPU)")
    ap.add_argument("--trl-worker", choices=["grpo", "dpo"], help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.work = os.path.abspath(args.work)
    if args.trl_worker:
        info = json.load(open(os.path.join(args.work, "ready.json")))
        trl_worker(args.trl_worker, args, info, args.threads[0], args.result, args.trl_precision[0])
        return
    try:
        import trl  # noqa: F401
    except ImportError:
        print("skipped: trl is not installed (pip install trl)")
        sys.exit(77)
    info = prepare(args)
    print("model %s; %d DPO pairs fit in 256 tokens; load average %s" %
          (info["model"], info["n_pairs"], " ".join("%.1f" % x for x in os.getloadavg())))
    results = []
    for threads in args.threads:
        if args.only in (None, "grpo"):
            runs = [("aji " + p, aji_grpo(args, info, threads, p)) for p in args.aji_precision]
            runs += [("TRL " + p, trl_side("grpo", args, info, threads, p)) for p in args.trl_precision]
            for name, rows in runs:
                step, ro = med(rows, "step_s"), med(rows, "rollout_s")
                tokps = statistics.median([r["tokens"] / r["rollout_s"] for r in rows[1:] or rows])
                results.append(("GRPO", name, threads, step, ro, step - ro, tokps, med(rows, "reply_len"),
                                med(rows, "cpu_s")))
        if args.only in (None, "dpo"):
            runs = [("aji " + p, aji_dpo(args, info, threads, p)) for p in args.aji_precision]
            runs += [("TRL " + p, trl_side("dpo", args, info, threads, p)) for p in args.trl_precision]
            for name, rows in runs:
                results.append(("DPO", name, threads, med(rows, "step_s"), None, None, None, None,
                                med(rows, "cpu_s")))
        print("load average %s" % " ".join("%.1f" % x for x in os.getloadavg()))
    print("\n| step | impl | threads | step s (wall) | rollout s | update s | rollout tok/s | reply len | step CPU s |")
    print("|---|---|---|---|---|---|---|---|---|")
    f = lambda x, p="%.3f": "—" if x is None else p % x
    for r in results:
        print("| %s | %s | %d | %s | %s | %s | %s | %s | %s |" % (r[0], r[1], r[2], f(r[3]), f(r[4]), f(r[5]),
                                                                 f(r[6], "%.0f"), f(r[7], "%.1f"), f(r[8])))
    print()
    for kind in ("GRPO", "DPO"):
        for threads, prec, tprec in ((t, p, q) for t in args.threads for p in args.aji_precision
                                     for q in args.trl_precision):
            a = [r for r in results if r[0] == kind and r[1] == "aji " + prec and r[2] == threads]
            t = [r for r in results if r[0] == kind and r[1] == "TRL " + tprec and r[2] == threads]
            if a and t:
                line = "%s, %d thread(s), aji %s vs TRL %s: TRL step / aji step = %.2fx wall" % (
                    kind, threads, prec, tprec, t[0][3] / a[0][3])
                if a[0][8] and t[0][8]:
                    line += ", %.2fx CPU" % (t[0][8] / a[0][8])
                if kind == "GRPO":
                    line += "; rollout tokens/s aji / TRL = %.2fx; update TRL / aji = %.2fx" % (
                        a[0][6] / t[0][6], t[0][5] / a[0][5])
                print(line)
    print("load average %s" % " ".join("%.1f" % x for x in os.getloadavg()))


if __name__ == "__main__":
    main()
