#!/usr/bin/env python3
"""Per-filter throughput: aji vs datatrove on the same 313 real documents, same run, 1 thread.

  python3 bench/data_filters_vs_datatrove.py [--aji-bench build/bench/data_filters_bench] [--repeat 3]

datatrove 0.10 (pip), English settings as FineWeb (spaCy "en" word tokenizer), MinHash with
FineWeb's sha1 config; PIIFormatter. Prints MB/s (text bytes / CPU second) and the ratio.
"""
import argparse, json, os, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def load_docs():
    docs = []
    for line in open(os.path.join(ROOT, "tests/fixtures/data_filters/docs.jsonl"), encoding="utf-8"):
        docs.append(json.loads(line)["text"])
    return docs


def datatrove_rates(texts, repeat):
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter)
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.utils.hashing import HashConfig

    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    sig = MinhashDedupSignature(output_folder=tempfile.mkdtemp(), config=MinhashConfig(hash_config=HashConfig(hash_fc="sha1")))
    sig_xx = MinhashDedupSignature(output_folder=tempfile.mkdtemp(), config=MinhashConfig(hash_config=HashConfig(hash_fc="xxhash")))
    pii = PIIFormatter()
    cases = {
        "GopherRepetition": (GopherRepetitionFilter(), "filter"),
        "GopherQuality": (GopherQualityFilter(), "filter"),
        "C4Quality": (C4QualityFilter(filter_no_terminal_punct=False), "filter"),
        "FineWebQuality": (FineWebQualityFilter(), "filter"),
        "Pii": (pii, "format"),
        "MinhashSignatureSha1": (sig, "sig"),
        "MinhashSignatureXxh64": (sig_xx, "sig"),
    }
    # (AllQualityFilters below: the four in FineWeb's order with early exit, as aji's apply_quality_filters.)
    rates = {}
    for name, (obj, kind) in cases.items():
        best = None
        for _ in range(repeat):
            # Distinct strings each round: datatrove caches word splits per text (lru_cache(5)).
            batch = [t + " " * (_ + 1) for t in texts]
            t0 = time.process_time()
            for t in batch:
                if kind == "filter":
                    obj.filter(Document(text=t, id="x"))
                elif kind == "format":
                    obj.format(t)
                else:
                    sh = obj.get_shingles(t)
                    if sh.size:
                        obj.get_signature(sh)
            dt = time.process_time() - t0
            best = dt if best is None else min(best, dt)
        rates[name] = nbytes / best / 1e6
    # The FineWeb chain as a pipeline runs it: stop at the first drop; C4 rewrites the text.
    chain = [GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(filter_no_terminal_punct=False),
             FineWebQualityFilter()]
    best = None
    for r in range(repeat):
        batch = [t + " " * (r + 1) for t in texts]
        t0 = time.process_time()
        for t in batch:
            doc = Document(text=t, id="x")
            for f in chain:
                res = f.filter(doc)
                if res is not True and not (isinstance(res, bool) and res):
                    break
        dt = time.process_time() - t0
        best = dt if best is None else min(best, dt)
    rates["AllQualityFilters"] = nbytes / best / 1e6
    return rates


def aji_rates(binary):
    env = dict(os.environ, AJI_THREADS="1", OMP_NUM_THREADS="1")
    out = subprocess.run([binary, "--benchmark_format=json", "--benchmark_min_time=0.5"], capture_output=True,
                         text=True, env=env, check=True).stdout
    rates = {}
    for b in json.loads(out)["benchmarks"]:
        rates[b["name"].removeprefix("BM_")] = b["bytes_per_second"] / 1e6
    return rates


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--aji-bench", default=os.path.join(ROOT, "build/bench/data_filters_bench"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    texts = load_docs()
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"{len(texts)} docs, {mb:.2f} MB; 1 thread; MB/s of text per CPU second", file=sys.stderr)
    dt = datatrove_rates(texts, args.repeat)
    aj = aji_rates(args.aji_bench)
    print(f"{'filter':24s} {'aji MB/s':>10s} {'datatrove MB/s':>15s} {'ratio':>8s}")
    for name, r in dt.items():
        a = aj.get(name)
        print(f"{name:24s} {a:10.2f} {r:15.3f} {a / r:7.1f}x")


if __name__ == "__main__":
    main()
