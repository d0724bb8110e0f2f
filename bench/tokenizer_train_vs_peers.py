#!/usr/bin/env python3
"""BPE training speed and memory: aji vs Hugging Face tokenizers vs sentencepiece, same run.

Trains a byte-level BPE of --vocab tokens (default 32,768) on the same corpus with
  * aji tokenizer train (cl100k pattern), 1 and 2 threads,
  * HF tokenizers BpeTrainer (Split(cl100k regex) + ByteLevel, all 256 bytes as initial
    alphabet, i.e. the same model), 1 and 2 threads (RAYON_NUM_THREADS),
  * Debian's spm_train --model_type=bpe (sentencepiece's own BPE; not byte-level, so it
    does less work per piece), --num_threads 1 and 2,
each under /usr/bin/time -v, and prints wall time, CPU time (user+sys), peak RSS and the
ratio peer/aji at the same thread count.

Default corpus: the 100 MB benchmark corpus (decompressed to /tmp once):
    xz -dc ../shared/reference/tokenizer/bench/corpus_100mb.txt.xz > /tmp/corpus_100mb.txt
Run from the repository root after `make build`:
    python3 bench/tokenizer_train_vs_peers.py [--corpus FILE] [--vocab N] [--threads 1,2] [--skip spm]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CL100K = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

HF_SCRIPT = r'''
import sys
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
corpus, vocab, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.Sequence([
    pre_tokenizers.Split(Regex(sys.argv[4]), behavior="isolated", invert=False),
    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
trainer = trainers.BpeTrainer(vocab_size=vocab - 3, special_tokens=[], show_progress=False,
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
tok.train([corpus], trainer)
tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
tok.save(out)
'''


def timed(cmd, env=None):
    """Runs cmd under /usr/bin/time -v; returns (wall_s, cpu_s, peak_rss_mb)."""
    full = ["/usr/bin/time", "-v"] + cmd
    r = subprocess.run(full, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-2000:] + r.stderr[-4000:])
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    err = r.stderr

    def field(name):
        m = re.search(re.escape(name) + r":\s*(.+)", err)
        return m.group(1).strip()

    wall_txt = field("Elapsed (wall clock) time (h:mm:ss or m:ss)")
    parts = [float(p) for p in wall_txt.split(":")]
    wall = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
    rss = float(field("Maximum resident set size (kbytes)")) / 1024
    return wall, cpu, rss


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="/tmp/corpus_100mb.txt")
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--aji", default=os.path.join(ROOT, "build", "aji"))
    ap.add_argument("--skip", default="", help="comma list of tools to skip: aji,hf,spm")
    args = ap.parse_args()
    if not os.path.exists(args.corpus):
        raise SystemExit(f"{args.corpus} missing: xz -dc ../shared/reference/tokenizer/bench/corpus_100mb.txt.xz > {args.corpus}")
    skip = set(filter(None, args.skip.split(",")))
    size_mb = os.path.getsize(args.corpus) / 1e6
    print(f"corpus {args.corpus} ({size_mb:.1f} MB), vocab {args.vocab}, cl100k pattern; machine: {os.cpu_count()} cores "
          f"({os.uname().machine}); numbers on a shared machine are noisy", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        hf_script = os.path.join(tmp, "hf_train.py")
        with open(hf_script, "w") as f:
            f.write(HF_SCRIPT)
        for t in [int(x) for x in args.threads.split(",")]:
            env = dict(os.environ, RAYON_NUM_THREADS=str(t), TOKENIZERS_PARALLELISM="true" if t > 1 else "false",
                       OMP_NUM_THREADS=str(t))
            res = {}
            if "aji" not in skip:
                res["aji"] = timed([args.aji, "--threads", str(t), "-q", "tokenizer", "train", "--input", args.corpus,
                                    "--vocab-size", str(args.vocab), "--pattern", "cl100k",
                                    "--out", os.path.join(tmp, "aji.json")], env)
                print(f"  aji      {t}T  wall {res['aji'][0]:7.1f} s  cpu {res['aji'][1]:7.1f} s  rss {res['aji'][2]:6.0f} MB", flush=True)
            if "hf" not in skip:
                res["hf"] = timed([sys.executable, hf_script, args.corpus, str(args.vocab), os.path.join(tmp, "hf.json"), CL100K], env)
                print(f"  hf       {t}T  wall {res['hf'][0]:7.1f} s  cpu {res['hf'][1]:7.1f} s  rss {res['hf'][2]:6.0f} MB", flush=True)
            if "spm" not in skip:
                res["spm"] = timed(["spm_train", f"--input={args.corpus}", f"--model_prefix={os.path.join(tmp, 'spm')}",
                                    "--model_type=bpe", f"--vocab_size={args.vocab}", f"--num_threads={t}",
                                    "--minloglevel=2"], env)
                print(f"  spm      {t}T  wall {res['spm'][0]:7.1f} s  cpu {res['spm'][1]:7.1f} s  rss {res['spm'][2]:6.0f} MB", flush=True)
            rows.append((t, res))
    print()
    print("| tool | threads | wall s | CPU s | peak RSS MB | wall ratio peer/aji | CPU ratio peer/aji |")
    print("|---|---|---|---|---|---|---|")
    for t, res in rows:
        aw, ac, _ = res.get("aji", (float("nan"), float("nan"), 0))
        for name, label in [("aji", "aji tokenizer train"), ("hf", "HF tokenizers BpeTrainer"), ("spm", "spm_train --model_type=bpe")]:
            if name not in res:
                continue
            w, c, m = res[name]
            ratio = "—" if name == "aji" else f"{w / aw:.1f}×"
            cratio = "—" if name == "aji" else f"{c / ac:.1f}×"
            print(f"| {label} | {t} | {w:.1f} | {c:.1f} | {m:.0f} | {ratio} | {cratio} |")


if __name__ == "__main__":
    main()
