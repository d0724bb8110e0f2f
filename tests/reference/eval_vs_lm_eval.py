#!/usr/bin/env python3
"""`aji eval run` against lm-evaluation-harness (`lm_eval --model hf`), item for item.

1. Builds a tiny GPT-2 in Hugging Face format under tests/fixtures/eval/hf-gpt2/: a
   byte-level BPE tokenizer (tokenizers, trained on the bundled task text, <|endoftext|> as
   the last id) and a 2-layer GPT2LMHeadModel trained for a few hundred steps on the same
   text so its scores are not near-ties (a few hundred KB).
2. Writes the first N items of three bundled tasks (arc_easy, hellaswag, piqa) to
   tests/fixtures/eval/tasks/ and a local lm-eval task YAML for each (dataset_path: json,
   no downloads), and runs lm-eval's hf backend (HFLM, what `lm_eval --model hf` runs) 0-shot
   in process with log_samples, timing the evaluation alone.
3. Writes tests/fixtures/eval/lm_eval_reference.json: per item the log-likelihood of each
   choice, and acc / acc_norm, which tests/eval/eval_vs_lm_eval_test.cpp checks aji's
   scores of the same model and items against.
4. With --aji BINARY: runs `aji eval run --no-bos` on the same items, compares item for
   item, and times both (items/s, same thread count); --bench also times both on a bigger
   random GPT-2 (n_embd 256, 6 layers).

    pip install -r tests/reference/requirements-eval.txt   # torch transformers tokenizers lm-eval
    python3 tests/reference/eval_vs_lm_eval.py [--aji build/aji] [--bench] [--n 60] [--threads 1] [--keep-model]
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures", "eval")
TASKS = ["arc_easy", "hellaswag", "piqa"]
CTX = 256


def build_model(model_dir, texts, threads):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[], show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens(["<|endoftext|>"])  # the last id, outside the ordinary range
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")
    eot = tok.token_to_id("<|endoftext|>")
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=CTX, n_embd=48, n_layer=2, n_head=4,
                     bos_token_id=eot, eos_token_id=eot, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    model = GPT2LMHeadModel(cfg)
    ids = []
    for t in texts:
        ids += [eot] + tok.encode(t).ids
    data = torch.tensor(ids)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(300):
        starts = torch.randint(0, len(data) - 129, (16,))
        x = torch.stack([data[s:s + 128] for s in starts])
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"trained tiny GPT-2: final loss {loss.item():.3f}", file=sys.stderr)
    model.eval()
    if os.path.isdir(model_dir):
        shutil.rmtree(model_dir)
    model.save_pretrained(model_dir, safe_serialization=True)
    fast.save_pretrained(model_dir)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def write_yaml(d, name, data_file):
    with open(os.path.join(d, f"aji_{name}.yaml"), "w") as f:
        f.write(f"""task: aji_{name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data_file}
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: gold
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
""")


def run_lm_eval(model_dir, yaml_dir, threads):
    """lm-eval's hf backend in process: returns (seconds of evaluation alone, samples per task)."""
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
    res = simple_evaluate(model=lm, tasks=[f"aji_{t}" for t in TASKS], num_fewshot=0, task_manager=tm,
                          log_samples=True)
    secs = time.time() - t0
    return secs, {t: sorted(res["samples"][f"aji_{t}"], key=lambda s: s["doc_id"]) for t in TASKS}


def run_aji(aji, model_dir, task_dir, threads):
    with tempfile.TemporaryDirectory() as out:
        t0 = time.time()
        subprocess.run([aji, "--threads", str(threads), "eval", "run", "--model", model_dir, "--no-bos", "--tasks"] +
                       [os.path.join(task_dir, t + ".jsonl") for t in TASKS] + ["--out", out], check=True)
        wall = time.time() - t0
        res = json.load(open(os.path.join(out, "results.json")))
    return wall, sum(r["seconds"] for r in res["results"]), res


def bench(aji, task_dir, threads):
    """Speed on a bigger random GPT-2 (not committed): items/s of both, evaluation alone."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    with tempfile.TemporaryDirectory() as d:
        fast = PreTrainedTokenizerFast.from_pretrained(os.path.join(FIX, "hf-gpt2"))
        torch.manual_seed(0)
        cfg = GPT2Config(vocab_size=len(fast), n_positions=CTX, n_embd=256, n_layer=6, n_head=8,
                         bos_token_id=len(fast) - 1, eos_token_id=len(fast) - 1)
        GPT2LMHeadModel(cfg).save_pretrained(d, safe_serialization=True)
        fast.save_pretrained(d)
        yd = os.path.join(d, "yaml")
        os.makedirs(yd)
        for t in TASKS:
            write_yaml(yd, t, os.path.join(task_dir, t + ".jsonl"))
        lm_secs, samples = run_lm_eval(d, yd, threads)
        n = sum(len(v) for v in samples.values())
        wall, aji_secs, _ = run_aji(aji, d, task_dir, threads)
        print(f"bench (GPT-2 n_embd 256, 6 layers, {threads} threads, {n} items): lm-eval {n / lm_secs:.1f} items/s, "
              f"aji {n / aji_secs:.1f} items/s ({lm_secs / aji_secs:.1f}x); aji wall incl. start-up {wall:.2f} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--aji", help="aji binary: also run aji and compare")
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep-model", action="store_true", help="reuse tests/fixtures/eval/hf-gpt2")
    ap.add_argument("--bench", action="store_true", help="with --aji: also time both on a bigger random GPT-2")
    a = ap.parse_args()
    model_dir = os.path.join(FIX, "hf-gpt2")
    task_dir = os.path.join(FIX, "tasks")
    os.makedirs(task_dir, exist_ok=True)
    texts = []
    for t in TASKS:  # training text: the few-shot splits (never the evaluated items)
        texts += [r["context"] + " " + r["choices"][r["gold"]]
                  for r in read_jsonl(os.path.join(ROOT, "data", "eval", t + ".fewshot.jsonl"))]
    if not (a.keep_model and os.path.isdir(model_dir)):
        build_model(model_dir, texts, a.threads)
    # The first n items whose every request fits the context: lm-eval would left-truncate a
    # longer one, aji counts it and leaves it out, so such items are not comparable.
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    for t in TASKS:
        items = [it for it in read_jsonl(os.path.join(ROOT, "data", "eval", t + ".jsonl"))
                 if all(len(tok.encode(it["context"] + " " + c).ids) <= CTX for c in it["choices"])][:a.n]
        with open(os.path.join(task_dir, t + ".jsonl"), "w", encoding="utf-8") as f:
            for it in items:
                f.write(json.dumps(it, ensure_ascii=False) + "\n")
    from importlib.metadata import version
    ref = {"lm_eval_version": version("lm_eval"), "transformers_version": version("transformers"),
           "model": "tests/fixtures/eval/hf-gpt2", "shots": 0, "bos": False, "tasks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for t in TASKS:
            write_yaml(tmp, t, os.path.join(task_dir, t + ".jsonl"))
        secs, all_samples = run_lm_eval(model_dir, tmp, a.threads)
    n_total = 0
    for t in TASKS:
        items = []
        for s in all_samples[t]:
            lls = [float(r[0][0]) if isinstance(r[0], (list, tuple)) else float(r[0]) for r in s["resps"]]
            items.append({"doc_id": s["doc_id"], "logliks": lls, "acc": s["acc"], "acc_norm": s["acc_norm"]})
        n_total += len(items)
        ref["tasks"][t] = {"file": f"tests/fixtures/eval/tasks/{t}.jsonl", "items": items,
                           "acc": sum(i["acc"] for i in items) / len(items),
                           "acc_norm": sum(i["acc_norm"] for i in items) / len(items)}
    ref["lm_eval_seconds"] = secs
    ref["lm_eval_items_per_s"] = n_total / secs
    with open(os.path.join(FIX, "lm_eval_reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    print(f"lm-eval: {n_total} items in {secs:.2f} s ({n_total / secs:.1f} items/s, evaluation alone)", file=sys.stderr)
    if a.aji:
        wall, aji_secs, res = run_aji(a.aji, model_dir, task_dir, a.threads)
        worst, mismatches = 0.0, 0
        for r in res["results"]:
            items = ref["tasks"][r["task"]]["items"]
            for mine, theirs in zip(r["items"], items):
                worst = max(worst, max(abs(x - y) for x, y in zip(mine["logliks"], theirs["logliks"])))
                mismatches += (mine["pred"] == mine["gold"]) != bool(theirs["acc"])
                mismatches += (mine["pred_norm"] == mine["gold"]) != bool(theirs["acc_norm"])
            print(f"{r['task']}: aji acc {r['metrics']['acc']['value']:.4f} acc_norm "
                  f"{r['metrics']['acc_norm']['value']:.4f} | lm-eval acc {ref['tasks'][r['task']]['acc']:.4f} "
                  f"acc_norm {ref['tasks'][r['task']]['acc_norm']:.4f}")
        print(f"max |loglik difference| {worst:.2e}, acc/acc_norm mismatches {mismatches}")
        print(f"tiny model: aji {n_total / aji_secs:.1f} items/s, lm-eval {n_total / secs:.1f} items/s "
              f"({secs / aji_secs:.1f}x); aji wall incl. start-up {wall:.2f} s")
        if a.bench:
            bench(a.aji, task_dir, a.threads)

if __name__ == "__main__":
    main()
