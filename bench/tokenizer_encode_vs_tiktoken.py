#!/usr/bin/env python3
"""aji vs Python tiktoken: encode throughput on the same corpus, same ranks, same run.

  python3 bench/tokenizer_encode_vs_tiktoken.py [--corpus FILE] [--mb 20] [--encoding cl100k_base]
        [--repeat 1] [--aji-bench build/bench/tokenizer_encode_bench]

The corpus defaults to ../shared/reference/tokenizer/bench/corpus_100mb.txt.xz (unpacked
once into /tmp/aji-bench/). Chunking follows corpus_manifest.json: from offset i, up to the
first "\\n\\n" at or after i+16384. tiktoken runs encode_ordinary over the chunks (1 thread)
and encode_ordinary_batch(num_threads=2); aji runs encode_batch with 1 and 2 threads
(build/bench/tokenizer_encode_bench --corpus). Both hash all ids (uint32 LE, in order) with
SHA-256 and the script checks they agree (and, on the full corpus, that they equal the
manifest's). Reports wall-clock MB/s and, for the single-thread runs, CPU-time MB/s (on a
shared machine the CPU time is the fairer figure).
"""
import argparse
import array
import hashlib
import json
import lzma
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "reference"))
import tiktoken_local  # noqa: E402

SHARED_BENCH = os.path.join(os.path.dirname(REPO), "shared", "reference", "tokenizer", "bench")
if not os.path.isdir(SHARED_BENCH):
    SHARED_BENCH = "/work/shared/reference/tokenizer/bench"


def corpus_path(arg):
    if arg:
        return arg
    out = "/tmp/aji-bench/corpus_100mb.txt"
    if not os.path.exists(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with lzma.open(os.path.join(SHARED_BENCH, "corpus_100mb.txt.xz")) as f, open(out + ".tmp", "wb") as g:
            while True:
                b = f.read(1 << 24)
                if not b:
                    break
                g.write(b)
        os.rename(out + ".tmp", out)
    return out


def chunks_of(data: bytes):
    out, i = [], 0
    while i < len(data):
        j = data.find(b"\n\n", min(len(data), i + 16384))
        end = len(data) if j < 0 else j + 2
        out.append(data[i:end])
        i = end
    return out


def ids_sha(list_of_ids):
    h = hashlib.sha256()
    for ids in list_of_ids:
        h.update(array.array("I", ids).tobytes())
    return h.hexdigest(), sum(len(x) for x in list_of_ids)


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus")
    ap.add_argument("--mb", type=float, default=0, help="use only the first N MB (0 = all)")
    ap.add_argument("--encoding", default="cl100k_base")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--aji-bench", default=os.path.join(REPO, "build", "bench", "tokenizer_encode_bench"))
    args = ap.parse_args()

    path = corpus_path(args.corpus)
    data = open(path, "rb").read()
    if args.mb and len(data) > args.mb * 1e6:
        cut = data.find(b"\n\n", int(args.mb * 1e6))
        data = data[: len(data) if cut < 0 else cut + 2]
    chunks = [c.decode("utf-8") for c in chunks_of(data)]
    mb = len(data) / 1e6
    print(f"corpus {path}: {mb:.2f} MB, {len(chunks)} chunks, encoding {args.encoding}")

    enc = tiktoken_local.encoding(args.encoding)
    results = []
    best = None
    for _ in range(args.repeat):
        c0, t0 = cpu_seconds(), time.perf_counter()
        ids = [enc.encode_ordinary(c) for c in chunks]
        t, c = time.perf_counter() - t0, cpu_seconds() - c0
        best = (t, c) if best is None or t < best[0] else best
    sha, ntok = ids_sha(ids)
    results.append(("tiktoken encode_ordinary", 1, best[0], best[1], sha, ntok))
    best = None
    for _ in range(args.repeat):
        c0, t0 = cpu_seconds(), time.perf_counter()
        ids = enc.encode_ordinary_batch(chunks, num_threads=2)
        t, c = time.perf_counter() - t0, cpu_seconds() - c0
        best = (t, c) if best is None or t < best[0] else best
    sha2, ntok2 = ids_sha(ids)
    results.append(("tiktoken encode_ordinary_batch", 2, best[0], best[1], sha2, ntok2))
    del ids

    cmd = [args.aji_bench, "--corpus", path, "--encoding", args.encoding, "--threads", "1,2",
           "--repeat", str(args.repeat)]
    if args.mb:
        cmd += ["--mb", str(args.mb)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        r = json.loads(line)
        assert r["bytes"] == len(data), (r["bytes"], len(data))
        results.append((f"aji encode_batch", r["threads"], r["seconds"], r.get("cpu_seconds", float("nan")),
                        r["ids_sha256"], r["tokens"]))

    print(f"{'implementation':34s} {'threads':>7s} {'wall s':>8s} {'MB/s':>8s} {'cpu s':>8s} {'MB/cpu-s':>9s} tokens")
    for name, th, t, c, s, n in results:
        print(f"{name:34s} {th:7d} {t:8.3f} {mb / t:8.2f} {c:8.3f} {mb / c if c == c and c > 0 else float('nan'):9.2f} {n}")
    shas = {r[4] for r in results}
    print("ids sha256:", "all equal" if len(shas) == 1 else "MISMATCH " + str(shas), results[0][4][:16])
    manifest = json.load(open(os.path.join(SHARED_BENCH, "corpus_manifest.json")))
    full = manifest["end_to_end_check"]["corpus_100mb.txt"].get(args.encoding)
    if len(data) == manifest["corpus_100mb.txt"]["bytes"] and full:
        print("manifest check:", "OK" if results[0][4] == full["ids_sha256"] else "MISMATCH")
    tk1, tk2 = results[0], results[1]
    aji = {r[1]: r for r in results[2:]}
    print(f"ratio aji/tiktoken, 1 thread, wall: {tk1[2] / aji[1][2]:.2f}x   cpu: {tk1[3] / aji[1][3]:.2f}x")
    print(f"ratio aji/tiktoken, 2 threads, wall: {tk2[2] / aji[2][2]:.2f}x")
    print(f"aji scaling 1->2 threads (wall): {aji[1][2] / aji[2][2]:.2f}x")
    return 0 if len(shas) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
