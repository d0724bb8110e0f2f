#!/usr/bin/env python3
"""MinHash fixture: datatrove's own signatures for the filter sample documents.

  python3 tests/reference/minhash_vs_datatrove.py
Writes tests/fixtures/data_filters/minhash_sigs.jsonl: per document of docs.jsonl
{"id", "n_shingles", "sig_sha1" (sha1 of the 112 little-endian uint64 values), "band0"}
from datatrove MinhashDedupSignature(config=MinhashConfig(hash_config=HashConfig(hash_fc="sha1",
precision=64))) (FineWeb's setting: 5-grams, 14 x 8, seed 1), plus "simplified" (sha1 of
simplify_text(text)) to localise a mismatch. Also prints the seed-1 a/b parameter tables.
"""
import hashlib, json, os, struct, tempfile

import numpy as np
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
from datatrove.utils.hashing import HashConfig
from datatrove.utils.text import simplify_text

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "fixtures", "data_filters")

cfg = MinhashConfig(hash_config=HashConfig(hash_fc="sha1", precision=64))
step = MinhashDedupSignature(output_folder=tempfile.mkdtemp(), config=cfg)
with open(os.path.join(FIX, "minhash_sigs.jsonl"), "w") as out:
    for line in open(os.path.join(FIX, "docs.jsonl"), encoding="utf-8"):
        d = json.loads(line)
        sh = step.get_shingles(d["text"])
        rec = {"id": d["id"], "n_shingles": int(sh.size),
               "simplified": hashlib.sha1(simplify_text(d["text"]).encode()).hexdigest()}
        if sh.size:
            sig = [v for band in step.get_signature(sh) for v in band]
            rec["sig_sha1"] = hashlib.sha1(struct.pack("<112Q", *sig)).hexdigest()
            rec["band0"] = [str(v) for v in sig[:8]]
        out.write(json.dumps(rec) + "\n")
a, b = step.parameters
print("a[:2] =", [hex(int(x)) for x in a[0][:2]], "b[:2] =", [hex(int(x)) for x in b[0][:2]])
