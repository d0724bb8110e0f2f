#!/usr/bin/env python3
"""Layout benchmark: aji's HTML extraction against trafilatura, per layout family.

The pages are data/extract_layouts/<family>/*.html.gz (real pages of documentation generators,
wikis, blogs/CMSs, news, forums, product pages, SPA shells, Korean docs; see manifest.tsv and
LICENSE-NOTE.txt there). aji decodes each page (`aji data extract --with-html`); trafilatura gets
the same decoded HTML and is called as datatrove calls it (favor_precision=True,
include_comments=False, deduplicate=True). Score: token F1 (lower-cased \\w+ multisets), as in
extract_vs_trafilatura.py.

Reports mean/median/min F1 per family and the "lost pages": trafilatura keeps >= 500 characters
while aji keeps < 100 (the issue #13 target: none of them, and no family mean below 0.7).

Usage (repository root, after building):
  python3 tests/reference/extract_layouts_vs_trafilatura.py [--aji build/aji] [--json out.json] [--fixtures]
--fixtures writes data/extract_layouts/reference/<family>/<page>.trafilatura.txt, which the C++
test (tests/data/extract_layouts_test.cpp) reads; the C++ tests never need Python.
Needs: pip install -r tests/reference/requirements-extract.txt
"""
import argparse
import collections
import gzip
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from extract_vs_trafilatura import f1, tokens  # noqa: E402  (one F1 definition)

ROOT = pathlib.Path(__file__).resolve().parents[2]
BENCH = ROOT / "data/extract_layouts"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--aji", default=str(ROOT / "build" / "aji"))
    ap.add_argument("--aji-cmd", help="extractor command instead of `AJI data extract --with-html` (prints the same JSON lines)")
    ap.add_argument("--json", help="write per-page scores here")
    ap.add_argument("--fixtures", action="store_true", help="(re)write data/extract_layouts/reference/*.trafilatura.txt")
    ap.add_argument("--family", action="append", help="only these families")
    args = ap.parse_args()
    import trafilatura

    rows_in = [line.split("\t") for line in (BENCH / "manifest.tsv").read_text().splitlines()[1:] if line.strip()]
    if args.family:
        rows_in = [r for r in rows_in if r[0] in args.family]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for fam, rel, _src in rows_in:
            out = pathlib.Path(tmp) / rel.removesuffix(".gz")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(gzip.decompress((BENCH / rel).read_bytes()))
            files.append(out)
        cmd = args.aji_cmd.split() if args.aji_cmd else [args.aji, "data", "extract", "--with-html"]
        res = subprocess.run(cmd + [str(f) for f in files], check=True, capture_output=True, text=True).stdout
        docs = [json.loads(line) for line in res.splitlines() if line.strip()]
        assert len(docs) == len(files), f"{len(docs)} outputs for {len(files)} pages"
        for (fam, rel, _src), d in zip(rows_in, docs):
            ref = trafilatura.extract(d["html"], favor_precision=True, include_comments=False, deduplicate=True) or ""
            prec, rec, score = f1(d["text"], ref)
            rows.append({"family": fam, "file": rel, "f1": score, "precision": prec, "recall": rec,
                         "aji_chars": len(d["text"]), "traf_chars": len(ref)})
            if args.fixtures:
                p = BENCH / "reference" / rel.removesuffix(".html.gz")
                p = p.with_name(p.name + ".trafilatura.txt")
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(ref + "\n", encoding="utf-8")
    by = collections.defaultdict(list)
    for r in rows:
        by[r["family"]].append(r)
    print(f"{'family':18s} {'pages':>5s} {'mean F1':>8s} {'median':>7s} {'min':>6s} {'prec':>6s} {'rec':>6s}")
    for fam in sorted(by):
        rs = by[fam]
        print(f"{fam:18s} {len(rs):5d} {statistics.mean(r['f1'] for r in rs):8.3f} {statistics.median(r['f1'] for r in rs):7.3f} "
              f"{min(r['f1'] for r in rs):6.3f} {statistics.mean(r['precision'] for r in rs):6.3f} "
              f"{statistics.mean(r['recall'] for r in rs):6.3f}")
    print(f"{'ALL':18s} {len(rows):5d} {statistics.mean(r['f1'] for r in rows):8.3f} {statistics.median(r['f1'] for r in rows):7.3f}")
    lost = [r for r in rows if r["traf_chars"] >= 500 and r["aji_chars"] < 100]
    print(f"lost pages (trafilatura >= 500 chars, aji < 100): {len(lost)}")
    for r in lost:
        print(f"  {r['file']}: aji {r['aji_chars']} chars, trafilatura {r['traf_chars']}")
    low = sorted((r for r in rows if r["f1"] < 0.7), key=lambda r: r["f1"])
    for r in low:
        print(f"  F1 {r['f1']:.3f} P {r['precision']:.2f} R {r['recall']:.2f} {r['file']} (aji {r['aji_chars']}, traf {r['traf_chars']})")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1, ensure_ascii=False))
    bad_fams = [f for f in by if statistics.mean(r["f1"] for r in by[f]) < 0.7]
    return 1 if lost or bad_fams else 0


if __name__ == "__main__":
    sys.exit(main())
