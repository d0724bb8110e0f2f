#!/usr/bin/env python3
"""End-to-end MinHash dedup: `aji data dedup run` vs datatrove's four MinHash stages, same input, same run.

  python3 bench/dedup_vs_datatrove.py [--aji build/aji] [--copies 8] [--threads 1]

Input: the 313 real sample documents plus `copies` perturbed copies of each (a random line dropped, a
word changed: near-duplicates), as one JSONL file. datatrove: JsonlReader → MinhashDedupSignature (sha1,
FineWeb config) → MinhashDedupBuckets (14 tasks) → MinhashDedupCluster → MinhashDedupFilter → JsonlWriter,
LocalPipelineExecutor with 1 worker. Prints wall seconds, MB/s and how many documents each removed.
"""
import argparse, json, os, random, shutil, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def make_input(path, copies):
    rng = random.Random(1)
    docs = [json.loads(l) for l in open(os.path.join(ROOT, "tests/fixtures/data_filters/docs.jsonl"), encoding="utf-8")]
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"id": d["id"], "text": d["text"]}, ensure_ascii=False) + "\n")
            n += 1
            for c in range(copies):
                lines = d["text"].split("\n")
                if len(lines) > 3:
                    del lines[rng.randrange(len(lines))]
                words = "\n".join(lines).split(" ")
                words[rng.randrange(len(words))] = "perturbed"
                f.write(json.dumps({"id": f"{d['id']}~{c}", "text": " ".join(words)}, ensure_ascii=False) + "\n")
                n += 1
    return n


def run_datatrove(inp, work):
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                          MinhashDedupSignature)
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    cfg = MinhashConfig(hash_config=HashConfig(hash_fc="sha1", precision=64))
    d, name = os.path.dirname(inp), os.path.basename(inp)
    logs = os.path.join(work, "logs")
    stages = [
        ([JsonlReader(d, glob_pattern=name), MinhashDedupSignature(output_folder=f"{work}/sigs", config=cfg)], 1),
        ([MinhashDedupBuckets(input_folder=f"{work}/sigs", output_folder=f"{work}/buckets", config=cfg)], cfg.num_buckets),
        ([MinhashDedupCluster(input_folder=f"{work}/buckets", output_folder=f"{work}/remove", config=cfg)], 1),
        ([JsonlReader(d, glob_pattern=name), MinhashDedupFilter(input_folder=f"{work}/remove"),
          JsonlWriter(f"{work}/out", compression=None)], 1),
    ]
    t0 = time.time()
    for i, (pipe, tasks) in enumerate(stages):
        LocalPipelineExecutor(pipeline=pipe, tasks=tasks, workers=1, logging_dir=f"{logs}/{i}").run()
    dt = time.time() - t0
    kept = sum(1 for f in os.listdir(f"{work}/out") for _ in open(os.path.join(work, "out", f)))
    return dt, kept


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--aji", default=os.path.join(ROOT, "build/aji"))
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    try:
        inp = os.path.join(tmp, "in", "docs.jsonl")
        os.makedirs(os.path.dirname(inp))
        n = make_input(inp, args.copies)
        mb = os.path.getsize(inp) / 1e6
        t0 = time.time()
        out = subprocess.run([args.aji, "data", "dedup", "run", "--input", inp, "--out", f"{tmp}/aji",
                              "--threads", str(args.threads)], capture_output=True, text=True, check=True).stdout
        aji_s = time.time() - t0
        stats = json.loads(out.split("dedup: ", 1)[1])
        dt_s, dt_kept = run_datatrove(inp, f"{tmp}/dt")
        print(f"input: {n} docs, {mb:.1f} MB (313 real docs + {args.copies} near-copies each)")
        print(f"aji  --threads {args.threads}: {aji_s:6.2f} s  {mb / aji_s:7.2f} MB/s  kept {stats['kept']}")
        print(f"datatrove (1 worker): {dt_s:6.2f} s  {mb / dt_s:7.2f} MB/s  kept {dt_kept}")
        print(f"ratio: {dt_s / aji_s:.1f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
