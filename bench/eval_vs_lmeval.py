#!/usr/bin/env python3
"""`aji eval run` items/s against lm-evaluation-harness (`lm_eval --model hf`, HFLM in process),
same Hugging Face checkpoint, same items, same thread count, 0- and k-shot (issue 17's target:
aji >= 5x lm-eval). Evaluation time alone on both sides (model load and start-up excluded;
aji's is the sum of results.json "seconds", lm-eval's the simple_evaluate call).

Models (written to a temp dir, nothing downloaded):
  tiny  the fixture tests/fixtures/eval/hf-gpt2 (2 layers, n_embd 48, vocab 513), its position
        table extended from 256 to 1024 rows so 5-shot prompts fit (rows past 256 repeat the
        last one; the first 256 positions, so every 0-shot score, are the fixture's)
  big   a random GPT-2 with 6 layers, n_embd 256, 8 heads, 1024 positions, the same tokenizer
Items: the first --n items of tests/fixtures/eval/tasks/{arc_easy,hellaswag,piqa}.jsonl; the
few-shot examples come from data/eval/<task>.fewshot.jsonl on both sides (each harness
samples its own k examples with seed 1234, so the k-shot prompts differ in which examples
they hold, not in how many).

    pip install -r tests/reference/requirements-eval.txt
    python3 bench/eval_vs_lmeval.py --aji build/aji [--threads 1] [--n 60] [--shots 0 5] \
        [--models tiny big] [--aji-args "--batch 8"] [--json out.json]
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
from eval_vs_lm_eval import FIX, TASKS, read_jsonl  # noqa: E402  (one definition of the fixture and tasks)


def write_yaml(d, name, test_file, fewshot_file):
    with open(os.path.join(d, f"aji_{name}.yaml"), "w") as f:
        f.write(f"""task: aji_{name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {test_file}
    train: {fewshot_file}
test_split: test
fewshot_split: train
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: gold
target_delimiter: " "
fewshot_delimiter: "\\n\\n"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
""")


def make_models(d, which):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    fast = PreTrainedTokenizerFast.from_pretrained(os.path.join(FIX, "hf-gpt2"))
    out = {}
    if "tiny" in which:
        src = GPT2LMHeadModel.from_pretrained(os.path.join(FIX, "hf-gpt2"))
        cfg = src.config
        cfg.n_positions = 1024
        m = GPT2LMHeadModel(cfg)
        sd = src.state_dict()
        wpe = sd["transformer.wpe.weight"]
        sd["transformer.wpe.weight"] = torch.cat([wpe, wpe[-1:].expand(1024 - wpe.shape[0], -1)], 0)
        m.load_state_dict(sd, strict=False)
        p = os.path.join(d, "tiny")
        m.save_pretrained(p, safe_serialization=True)
        fast.save_pretrained(p)
        out["tiny"] = (p, "fixture hf-gpt2 (2 layers, n_embd 48), 1024 positions")
    if "big" in which:
        torch.manual_seed(0)
        cfg = GPT2Config(vocab_size=len(fast), n_positions=1024, n_embd=256, n_layer=6, n_head=8,
                         bos_token_id=len(fast) - 1, eos_token_id=len(fast) - 1)
        p = os.path.join(d, "big")
        GPT2LMHeadModel(cfg).save_pretrained(p, safe_serialization=True)
        fast.save_pretrained(p)
        out["big"] = (p, "random GPT-2, 6 layers, n_embd 256")
    return out


def run_lm_eval(model_dir, yaml_dir, shots, threads):
    os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                      TOKENIZERS_PARALLELISM="false")
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    torch.set_num_threads(threads)
    lm = HFLM(pretrained=model_dir, dtype="float32", device="cpu", batch_size=16)
    tm = TaskManager(include_path=yaml_dir)
    t0 = time.time()
    res = simple_evaluate(model=lm, tasks=[f"aji_{t}" for t in TASKS], num_fewshot=shots, task_manager=tm,
                          log_samples=True, random_seed=1234, numpy_random_seed=1234, torch_random_seed=1234,
                          fewshot_random_seed=1234)
    secs = time.time() - t0
    n = sum(len(res["samples"][f"aji_{t}"]) for t in TASKS)
    acc = {t: res["results"][f"aji_{t}"]["acc,none"] for t in TASKS}
    return secs, n, acc


def run_aji(aji, model_dir, task_dir, shots, threads, extra):
    with tempfile.TemporaryDirectory() as out:
        t0 = time.time()
        subprocess.run([aji, "--threads", str(threads), "-q", "eval", "run", "--model", model_dir, "--no-bos",
                        "--shots", str(shots), "--tasks"] + [os.path.join(task_dir, t + ".jsonl") for t in TASKS] +
                       ["--out", out] + extra, check=True, stdout=subprocess.DEVNULL)
        wall = time.time() - t0
        res = json.load(open(os.path.join(out, "results.json")))
    secs = sum(r["seconds"] for r in res["results"])
    n = sum(r["n"] for r in res["results"])
    too_long = sum(r["too_long"] for r in res["results"])
    acc = {r["task"]: r["metrics"]["acc"]["value"] for r in res["results"] if r["metrics"]}
    per_task = {r["task"]: r["items_per_s"] for r in res["results"]}
    return secs, n, too_long, acc, per_task, wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--aji", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--shots", type=int, nargs="+", default=[0, 5])
    ap.add_argument("--models", nargs="+", default=["tiny", "big"])
    ap.add_argument("--aji-args", default="", help="extra `aji eval run` flags, e.g. \"--batch 8\"")
    ap.add_argument("--aji-only", action="store_true", help="time aji alone (lm-eval not run)")
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args()
    extra = a.aji_args.split()
    rows = []
    print(f"load average at start: {os.getloadavg()[0]:.1f}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as d:
        task_dir, yaml_dir = os.path.join(d, "tasks"), os.path.join(d, "yaml")
        os.makedirs(task_dir)
        os.makedirs(yaml_dir)
        for t in TASKS:
            items = read_jsonl(os.path.join(FIX, "tasks", t + ".jsonl"))[:a.n]
            test = os.path.join(task_dir, t + ".jsonl")
            with open(test, "w", encoding="utf-8") as f:
                for it in items:
                    f.write(json.dumps(it, ensure_ascii=False) + "\n")
            few = os.path.join(task_dir, t + ".fewshot.jsonl")
            shutil.copy(os.path.join(ROOT, "data", "eval", t + ".fewshot.jsonl"), few)
            write_yaml(yaml_dir, t, test, few)
        models = make_models(d, a.models)
        for name, (path, desc) in models.items():
            for k in a.shots:
                secs, n, too_long, acc, per_task, wall = run_aji(a.aji, path, task_dir, k, a.threads, extra)
                row = {"model": name, "desc": desc, "shots": k, "threads": a.threads, "aji_args": a.aji_args,
                       "aji_items": n, "aji_too_long": too_long, "aji_seconds": secs, "aji_items_per_s": n / secs,
                       "aji_per_task_items_per_s": per_task, "aji_wall_incl_startup": wall, "aji_acc": acc}
                if not a.aji_only:
                    lsecs, ln, lacc = run_lm_eval(path, yaml_dir, k, a.threads)
                    row.update(lm_eval_items=ln, lm_eval_seconds=lsecs, lm_eval_items_per_s=ln / lsecs,
                               ratio=(n / secs) / (ln / lsecs), lm_eval_acc=lacc)
                row["load_average"] = os.getloadavg()[0]
                rows.append(row)
                msg = f"{name} {k}-shot: aji {n} items {n / secs:.1f} items/s"
                if not a.aji_only:
                    msg += f", lm-eval {row['lm_eval_items']} items {row['lm_eval_items_per_s']:.1f} items/s, " \
                           f"ratio {row['ratio']:.1f}x"
                print(msg + f" (load {row['load_average']:.1f})", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
