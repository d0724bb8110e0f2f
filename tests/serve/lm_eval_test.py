#!/usr/bin/env python3
"""lm-evaluation-harness against `aji serve`: its accuracy equals `aji score`'s on the same items.

Starts `build/aji serve` with a tiny random-weight model (serve_util.py) and runs

  lm_eval --model local-completions --tasks aji_arc_easy_20 --include_path tests/fixtures/serve \\
          --model_args model=ID,base_url=http://127.0.0.1:PORT/v1/completions,max_length=CTX,num_concurrent=N \\
          --batch_size 1 --log_samples --output_path TMP

offline (HF_*_OFFLINE=1, a local YAML + JSONL task, no download). lm-eval finds its tokenizer
through the server's /tokenizer_info and /tokenize (no Hugging Face tokenizer), and scores each
choice through /v1/completions with echo + logprobs, summing token_logprobs[ctxlen:-1].

The same items are then scored directly with `aji score --no-bos --json` (the CLI's scorer,
not the server): the continuation's token ids are split exactly as lm-eval's
TemplateLM._encode_pair does (whole = tok(context + continuation), context = tok(context),
continuation = whole[len(context):]) and its log-probabilities are summed. Checks: every
item's per-choice log-likelihood agrees (|diff| < 1e-3), every item's chosen answer agrees
(acc and acc_norm), and so lm-eval's acc and acc_norm equal the direct ones exactly.

Run twice: num_concurrent=1, then num_concurrent=4 (concurrent requests share the server's
decode batch; the answers must not change).

Exit 77 (skipped) when lm-eval is absent: pip install -r tests/serve/requirements.txt
"""
import concurrent.futures
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_util  # noqa: E402

FIXTURES = os.path.join(serve_util.ROOT, "tests", "fixtures", "serve")
TASK = "aji_arc_easy_20"
CONTEXT = 512


def lm_eval_available():
    import importlib.util
    missing = [m for m in ("lm_eval", "tenacity", "aiohttp", "requests") if importlib.util.find_spec(m) is None]
    if missing:
        serve_util.skip("lm-eval with its [api] extra is needed (missing: %s); pip install -r "
                        "tests/serve/requirements.txt" % ", ".join(missing))


def score_text(model_dir, text):
    """(token ids, log-probs of tokens 1..n-1) of text from `aji score --no-bos --json`."""
    fd, path = tempfile.mkstemp(suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    try:
        out = subprocess.run([serve_util.aji_binary(), "--threads", "1", "score", "--model", model_dir, "--input", path,
                              "--no-bos", "--json"], check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(path)
    j = json.loads(out)
    return j["tokens"], j["logprobs"]


def direct_scores(model_dir, docs):
    """Per item, the log-likelihood of each choice (lm-eval's split), through `aji score`."""
    jobs = []
    for d in docs:
        ctx = d["query"] + "\nAnswer:"
        jobs.append(ctx)
        jobs += [ctx + " " + c for c in d["choices"]]
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        scored = dict(zip(jobs, ex.map(lambda t: score_text(model_dir, t), jobs)))
    out = []
    for d in docs:
        ctx = d["query"] + "\nAnswer:"
        ctx_ids, _ = scored[ctx]
        lls = []
        for c in d["choices"]:
            whole, lps = scored[ctx + " " + c]
            # lm-eval sends context_enc + whole[len(context_enc):]; that is `whole` itself when the
            # context's ids are a prefix of the whole's (they are with this split pattern).
            assert whole[:len(ctx_ids)] == ctx_ids, "context ids are not a prefix of the whole text's: %r" % ctx
            lls.append(sum(lps[len(ctx_ids) - 1:]))  # lps[i] is the log-prob of whole[i + 1]
        out.append(lls)
    return out


def argmax(xs):
    return max(range(len(xs)), key=lambda i: (xs[i], -i))  # the first maximum, as numpy.argmax


def run_lm_eval(base, model, out_dir, concurrent):
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_CACHE=os.path.join(out_dir, "hf-datasets"), TOKENIZERS_PARALLELISM="false")
    env.pop("OPENAI_API_KEY", None)
    cmd = [sys.executable, "-m", "lm_eval", "--model", "local-completions", "--tasks", TASK, "--include_path", FIXTURES,
           "--model_args", "model=%s,base_url=%s/v1/completions,max_length=%d,num_concurrent=%d,max_retries=1"
           % (model, base, CONTEXT, concurrent),
           "--batch_size", "1", "--log_samples", "--output_path", out_dir]
    print("$ " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, cwd=FIXTURES, env=env, capture_output=True, text=True, timeout=600)
    tail = (p.stdout + p.stderr)[-3000:]
    if p.returncode != 0:
        raise AssertionError("lm_eval failed (exit %d):\n%s" % (p.returncode, tail))
    print("\n".join(line for line in p.stdout.splitlines() if "|" in line))
    if "remote tokenizer" not in (p.stdout + p.stderr).lower():
        print("note: lm-eval did not say it used the remote tokenizer:\n" + tail)
    results = json.load(open(glob.glob(os.path.join(out_dir, "**", "results_*.json"), recursive=True)[-1]))
    samples_file = glob.glob(os.path.join(out_dir, "**", "samples_%s_*.jsonl" % TASK), recursive=True)[-1]
    samples = {}
    for line in open(samples_file):
        s = json.loads(line)
        samples[s["doc_id"]] = [float(r[0]) for r in s["filtered_resps"]]
    r = results["results"][TASK]
    return r["acc,none"], r["acc_norm,none"], samples


def main():
    lm_eval_available()
    docs = [json.loads(line) for line in open(os.path.join(FIXTURES, "arc_easy_20.jsonl"))]
    tmp = tempfile.mkdtemp(prefix="aji-lm-eval-test-")
    failures = []
    try:
        model_dir = serve_util.make_tiny_model(os.path.join(tmp, "model"), context=CONTEXT)
        direct = direct_scores(model_dir, docs)
        acc = sum(argmax(ll) == d["gold"] for ll, d in zip(direct, docs)) / len(docs)
        acc_norm = sum(argmax([x / len(c) for x, c in zip(ll, d["choices"])]) == d["gold"]
                       for ll, d in zip(direct, docs)) / len(docs)
        print("direct (aji score): acc %.4f acc_norm %.4f over %d items" % (acc, acc_norm, len(docs)))
        with serve_util.Server(model_dir, threads=1) as srv:
            try:
                model = json.loads(urllib.request.urlopen(srv.base + "/v1/models", timeout=10).read())
                model = model["data"][0]["id"]
                for conc in (1, 4):
                    out = os.path.join(tmp, "out-%d" % conc)
                    e_acc, e_norm, samples = run_lm_eval(srv.base, model, out, conc)
                    print("lm-eval num_concurrent=%d: acc %.4f acc_norm %.4f" % (conc, e_acc, e_norm))
                    worst = 0.0
                    for i, ll in enumerate(direct):
                        got = samples.get(i)
                        if got is None or len(got) != len(ll):
                            failures.append("item %d: lm-eval logged %r, direct %r" % (i, got, ll))
                            continue
                        worst = max(worst, max(abs(a - b) for a, b in zip(got, ll)))
                        if argmax(got) != argmax(ll):
                            failures.append("item %d: lm-eval picks choice %d, aji score %d (%r vs %r)"
                                            % (i, argmax(got), argmax(ll), got, ll))
                    print("max |log-likelihood diff| lm-eval vs aji score: %.2e" % worst)
                    if worst >= 1e-3:
                        failures.append("num_concurrent=%d: log-likelihoods differ by up to %.2e" % (conc, worst))
                    if (e_acc, e_norm) != (acc, acc_norm):
                        failures.append("num_concurrent=%d: lm-eval acc %.4f acc_norm %.4f, direct %.4f %.4f"
                                        % (conc, e_acc, e_norm, acc, acc_norm))
                rc = srv.stop()
                if rc != 0:
                    failures.append("aji serve exited with %d on SIGTERM" % rc)
            except Exception:
                print("--- aji serve log ---\n" + srv.log_text())
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("lm-eval test passed: lm-eval and aji score agree item by item")


if __name__ == "__main__":
    main()
