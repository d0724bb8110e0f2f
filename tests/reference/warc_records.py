#!/usr/bin/env python3
"""Independent reference for aji's WARC/WET reader: which records datatrove's WarcReader
keeps, read with warcio (the library datatrove uses).

For each WARC fixture it lists the records datatrove would turn into documents
(response records whose WARC-Identified-Payload-Type — or, when that is missing, whose
HTTP Content-Type — is text/html or application/xhtml+xml; conversion records for WET),
with id (WARC-Record-ID without <urn:uuid:...>), url (angle brackets stripped) and the
SHA-1 of the HTTP payload after warcio removed chunking and content encoding.
Writes tests/fixtures/data/warc/records.json.  Needs: pip install warcio.
"""
import hashlib
import json
import pathlib

from warcio.archiveiterator import ArchiveIterator

ROOT = pathlib.Path(__file__).resolve().parents[2]
FX = ROOT / "tests/fixtures/data/warc"
HTML = {"text/html", "application/xhtml+xml"}

out = {}
for f in sorted(FX.glob("*.warc*.gz")):
    recs = []
    with open(f, "rb") as fh:
        for rec in ArchiveIterator(fh):
            t = rec.rec_type
            if t not in ("response", "conversion"):
                continue
            if t == "response":
                ptype = rec.rec_headers.get_header("WARC-Identified-Payload-Type")
                if not ptype and rec.http_headers:
                    ptype = rec.http_headers.get_header("Content-Type") or ""
                ptype = (ptype or "").split(";")[0].strip().lower()
                if ptype not in HTML:
                    continue
            body = rec.content_stream().read()
            rid = (rec.rec_headers.get_header("WARC-Record-ID") or "").strip("<>")
            if rid.startswith("urn:uuid:"):
                rid = rid[9:]
            url = (rec.rec_headers.get_header("WARC-Target-URI") or "").strip("<>")
            recs.append({"id": rid, "url": url, "type": t, "payload_bytes": len(body),
                         "payload_sha1": hashlib.sha1(body).hexdigest()})
    out[f.name] = recs
    print(f.name, len(recs))
(FX / "records.json").write_text(json.dumps(out, indent=1) + "\n")
