#!/usr/bin/env python3
"""Full data-pipeline throughput: aji vs datatrove, same stages, same input, same run.

Input: the real Common Crawl / wget WARC samples (cc_web_samples/*.warc.gz) plus every
real HTML page of html_en and html_ko packed as WARC response records (one gzip member
each, as Common Crawl writes them), so both pipelines read the very same bytes.

Stages (FineWeb's order, datatrove examples/fineweb.py):
  WarcReader → URLFilter → Trafilatura(favour_precision) → GopherRepetition →
  GopherQuality → C4Quality(filter_no_terminal_punct=False) → FineWebQuality → JsonlWriter
aji runs `aji data run` with the matching stages (its gumbo extractor instead of
trafilatura).  Language ID is OFF on both sides: datatrove's LanguageFilter needs the
fastText lid.176.bin model, which cannot be downloaded here; PII is off on both sides
(FineWeb applies it after dedup, outside this job).

Per-core throughput = MB of input (compressed WARC bytes on disk) per CPU-second
(user + system time of the process and its children, from getrusage), with one worker /
one thread: on a shared, oversubscribed machine wall time measures the neighbours, CPU
time measures the program.  Wall times are printed too.  aji is also run with 2 threads.

Usage: python3 bench/data_pipeline_vs_datatrove.py [--aji build/aji] [--repeat N]
Needs (benchmark only): pip install datatrove trafilatura warcio tldextract pyahocorasick
"""
import argparse
import gzip
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path("/work/shared/data")


def build_input(dst: pathlib.Path, repeat: int) -> int:
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted((SHARED / "cc_web_samples").glob("*.warc.gz")):
        if ".wet" in f.name:
            continue
        for r in range(repeat):
            shutil.copy(f, dst / f"{f.name[:-len('.warc.gz')]}-{r}.warc.gz")
    pages = sorted(p for d in ("html_en", "html_ko") for p in (SHARED / d).rglob("*.html"))
    for r in range(repeat):
        with open(dst / f"html-pages-{r}.warc.gz", "wb") as out:
            for i, p in enumerate(pages):
                body = p.read_bytes()
                http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: %d\r\n\r\n" % len(body) + body
                url = "https://docs.example.org/" + str(p.relative_to(SHARED))
                rec = (b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:00000000-0000-0000-%04d-%012d>\r\n" % (r, i)
                       + b"WARC-Target-URI: " + url.encode() + b"\r\nWARC-Date: 2024-01-01T00:00:00Z\r\n"
                       + b"WARC-Identified-Payload-Type: text/html\r\n"
                       + b"Content-Type: application/http; msgtype=response\r\nContent-Length: %d\r\n\r\n" % len(http)
                       + http + b"\r\n\r\n")
                out.write(gzip.compress(rec, compresslevel=6))
    return sum(f.stat().st_size for f in dst.iterdir())


def lists():
    return {n: (ROOT / "data/filters" / f"datatrove_{n}.txt").read_text().splitlines()
            for n in ("banned_words", "soft_banned_words", "banned_subwords")}


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd) -> tuple[float, float]:
    """Runs cmd; returns (wall seconds, CPU seconds of it and its children)."""
    c0, t0 = child_cpu(), time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0, child_cpu() - c0


def run_datatrove_inprocess(inp: pathlib.Path, out: pathlib.Path) -> None:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter, URLFilter)
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter

    l = lists()
    url = URLFilter(banned_words=l["banned_words"], banned_subwords=l["banned_subwords"],
                    soft_banned_words=l["soft_banned_words"], use_integrated_lists=False)
    url.banned_subwords_automaton.make_automaton()
    pipeline = [
        WarcReader(str(inp), glob_pattern="*.gz", default_metadata={}),
        url,
        Trafilatura(favour_precision=True, timeout=1.0),
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False),
        FineWebQualityFilter(),
        JsonlWriter(str(out)),
    ]
    ex = LocalPipelineExecutor(pipeline=pipeline, tasks=1, workers=1, logging_dir=str(out / "logs"))
    ex.run()


def run_aji(aji: str, inp: pathlib.Path, out: pathlib.Path, threads: int) -> tuple[float, float, dict]:
    cfg = {"language_id": {"enabled": False}, "pii_enabled": False,
           "output": {"write_dropped_samples": False}}
    cfg_path = out.parent / f"aji-config-{threads}.json"
    cfg_path.write_text(json.dumps(cfg))
    wall, cpu = timed([aji, "--threads", str(threads), "data", "run", "--no-progress", "--config", str(cfg_path),
                       "--input", str(inp), "--out", str(out)])
    return wall, cpu, json.loads((out / "report.json").read_text())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--aji", default=str(ROOT / "build" / "aji"))
    ap.add_argument("--repeat", type=int, default=1, help="copies of the input (more = steadier timings)")
    ap.add_argument("--datatrove-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.datatrove_child:  # the datatrove run, in its own process so that its CPU time can be measured
        run_datatrove_inprocess(pathlib.Path(args.datatrove_child[0]), pathlib.Path(args.datatrove_child[1]))
        return 0
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="aji-bench-data-"))
    try:
        inp = tmp / "in"
        nbytes = build_input(inp, args.repeat)
        mb = nbytes / 1e6
        print(f"input: {len(list(inp.iterdir()))} WARC files, {mb:.2f} MB compressed")
        w_dt, c_dt = timed([sys.executable, __file__, "--datatrove-child", str(inp), str(tmp / "dt")])
        dt_kept = sum(1 for f in (tmp / "dt").glob("*.jsonl.gz") for _ in gzip.open(f))
        w1, c1, rep1 = run_aji(args.aji, inp, tmp / "aji1", 1)
        w2, c2, _ = run_aji(args.aji, inp, tmp / "aji2", 2)
        kept = sum(rep1["total"]["kept_docs"].values())
        read = rep1["total"]["stages"]["read"]["docs_out"]
        print(f"aji: {read} documents read, {kept} kept; datatrove: {dt_kept} kept")
        print(f"{'pipeline':22s} {'wall s':>8s} {'CPU s':>8s} {'MB/CPU-s':>9s}")
        print(f"{'datatrove (1 worker)':22s} {w_dt:8.2f} {c_dt:8.2f} {mb / c_dt:9.3f}")
        print(f"{'aji (1 thread)':22s} {w1:8.2f} {c1:8.2f} {mb / c1:9.3f}")
        print(f"{'aji (2 threads)':22s} {w2:8.2f} {c2:8.2f} {mb / c2:9.3f}")
        print(f"per-core ratio (MB per CPU-second, aji 1 thread / datatrove): {c_dt / c1:.1f}x")
        print(f"wall-time ratio (aji 1 thread / datatrove, contended machine): {w_dt / w1:.1f}x; "
              f"aji 2 threads vs 1: {w1 / w2:.2f}x wall")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
