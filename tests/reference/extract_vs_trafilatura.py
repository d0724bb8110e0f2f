#!/usr/bin/env python3
"""Agreement of aji's HTML extraction with trafilatura (the extractor FineWeb used).

For every page, both extractors get the very same UTF-8 HTML (aji prints the HTML it
decoded with `aji data extract --with-html`), trafilatura is called exactly as
datatrove's Trafilatura step calls it (favor_precision=True, include_comments=False,
deduplicate=True), and the token-level F1 of aji's text against trafilatura's is
computed (tokens = lower-cased \\w+ runs, multiset overlap, as in SQuAD-style F1).

Usage (from the repository root, after building):
  python3 tests/reference/extract_vs_trafilatura.py [--aji build/aji] [--fixtures]
      [--json out.json] PATH...
PATH: HTML files, directories, or WARC files. Default: the real pages in
/work/shared/data/html_en, html_ko and the WARC samples in cc_web_samples.
--fixtures rewrites tests/fixtures/data/extract/*.trafilatura.txt for the pages copied
there (the C++ test reads them).
Needs: pip install trafilatura lxml_html_clean (reference only, never at test time).
"""
import argparse
import collections
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = pathlib.Path("/work/shared/data")
DEFAULT_PATHS = [SHARED / "html_en", SHARED / "html_ko", SHARED / "cc_web_samples"]
TOKEN = re.compile(r"\w+", re.UNICODE)


def tokens(text):
    return TOKEN.findall((text or "").lower())


def f1(pred, ref):
    p, r = collections.Counter(tokens(pred)), collections.Counter(tokens(ref))
    if not p and not r:
        return 1.0, 1.0, 1.0
    if not p or not r:
        return 0.0, 0.0, 0.0
    overlap = sum((p & r).values())
    prec, rec = overlap / sum(p.values()), overlap / sum(r.values())
    return prec, rec, (2 * prec * rec / (prec + rec) if prec + rec else 0.0)


def collect(paths):
    files = []
    for p in paths:
        p = pathlib.Path(p)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                n = f.name.lower()
                if f.is_file() and n.endswith((".html", ".htm", ".xhtml", ".warc", ".warc.gz")):
                    files.append(f)
        elif p.exists():
            files.append(p)
    return files


def aji_extract(aji, files):
    out = subprocess.run([aji, "data", "extract", "--with-html"] + [str(f) for f in files],
                         check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def group_of(path):
    s = str(path)
    for g in ("html_en", "html_ko", "cc_web_samples", "fixtures"):
        if g in s:
            sub = pathlib.Path(s.split(g + "/", 1)[1]).parts[0] if g != "cc_web_samples" else "warc"
            return f"{g}/{sub}"
    return "other"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", default=[str(p) for p in DEFAULT_PATHS])
    ap.add_argument("--aji", default=str(ROOT / "build" / "aji"))
    ap.add_argument("--json", help="write per-page scores here")
    ap.add_argument("--fixtures", action="store_true", help="regenerate tests/fixtures/data/extract/*.trafilatura.txt")
    args = ap.parse_args()
    import trafilatura

    files = collect(args.paths)
    docs = aji_extract(args.aji, files)
    rows = []
    t_traf = 0.0
    for d in docs:
        html = d.get("html")
        if not html:
            continue
        t0 = time.perf_counter()
        ref = trafilatura.extract(html, favor_precision=True, include_comments=False, deduplicate=True) or ""
        t_traf += time.perf_counter() - t0
        prec, rec, score = f1(d["text"], ref)
        rows.append({"file": d["file"], "id": d["id"], "group": group_of(d["file"]), "precision": prec,
                     "recall": rec, "f1": score, "aji_tokens": len(tokens(d["text"])), "traf_tokens": len(tokens(ref))})
    by = collections.defaultdict(list)
    for r in rows:
        by[r["group"]].append(r)
    print(f"{'group':34s} {'pages':>5s} {'mean F1':>8s} {'median':>7s} {'min':>6s} {'prec':>6s} {'rec':>6s}")
    for g in sorted(by):
        rs = by[g]
        print(f"{g:34s} {len(rs):5d} {statistics.mean(r['f1'] for r in rs):8.3f} "
              f"{statistics.median(r['f1'] for r in rs):7.3f} {min(r['f1'] for r in rs):6.3f} "
              f"{statistics.mean(r['precision'] for r in rs):6.3f} {statistics.mean(r['recall'] for r in rs):6.3f}")
    if rows:
        print(f"{'ALL':34s} {len(rows):5d} {statistics.mean(r['f1'] for r in rows):8.3f} "
              f"{statistics.median(r['f1'] for r in rows):7.3f} {min(r['f1'] for r in rows):6.3f}")
        print(f"(trafilatura took {t_traf:.1f} s for {len(rows)} pages)")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1, ensure_ascii=False))
    if args.fixtures:
        fx = ROOT / "tests/fixtures/data/extract"
        for page in sorted(fx.glob("*.html")):
            d = aji_extract(args.aji, [page])[0]
            ref = trafilatura.extract(d["html"], favor_precision=True, include_comments=False, deduplicate=True) or ""
            page.with_suffix(".trafilatura.txt").write_text(ref + "\n", encoding="utf-8")
            print("wrote", page.with_suffix(".trafilatura.txt").relative_to(ROOT))


if __name__ == "__main__":
    sys.exit(main())
