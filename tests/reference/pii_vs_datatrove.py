#!/usr/bin/env python3
"""PII fixture: datatrove's PIIFormatter on hand-made and random strings.

  python3 tests/reference/pii_vs_datatrove.py
Writes tests/fixtures/data_filters/pii_cases.jsonl: {"in", "out"} in order, all through ONE
PIIFormatter (its replacements cycle across documents, as in a datatrove task).
"""
import json, os, random

from datatrove.pipeline.formatters import PIIFormatter

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "data_filters", "pii_cases.jsonl")

cases = [
    "Contact me at john.doe@example.com or JANE@Mail.Example.ORG today.",
    "no email here: user@localhost, @handle, a@b",
    "weird!#$%&'*+/=?^_`{|}~-local@sub-domain.example.co.uk and x@[192.168.0.1]",
    "메일abc@x.com 으로 보내세요 (glued to Hangul)",
    "문의: 홍길동 <gildong.hong@naver.com>",
    "Server 8.8.8.8 and 1.1.1.1, private 192.168.1.1 10.0.0.5 127.0.0.1 172.16.5.4 172.32.0.1",
    "shared 100.64.3.2, doc 192.0.2.33, bench 198.18.0.1, multicast 224.0.0.1, 239.255.255.250",
    "broadcast 255.255.255.255 reserved 240.0.0.1 zero 0.0.0.0 192.0.0.9 192.0.0.171",
    "leading zeros 01.2.3.4 and 8.8.08.8 and 001.002.003.004",
    "version 1.2.3.4.5 and 1234.5.6.7 and 256.1.1.1 and 8.8.8.888",
    "email then ip: a.b@c.de 203.0.114.7 e@f.gh 44.55.66.77",
]
rng = random.Random(7)
for _ in range(200):
    ip = ".".join(str(rng.choice([rng.randrange(256), rng.choice([0, 10, 100, 127, 169, 172, 192, 198, 203, 224, 240, 255])]))
                  for _ in range(4))
    cases.append(f"host {ip} up")
for _ in range(60):
    user = "".join(rng.choice("abcxyz019._-+") for _ in range(rng.randrange(1, 10)))
    dom = "".join(rng.choice("abc-9.") for _ in range(rng.randrange(1, 10)))
    cases.append(f"mail {user}@{dom}.com now")
fmt = PIIFormatter()
with open(OUT, "w", encoding="utf-8") as f:
    for c in cases:
        f.write(json.dumps({"in": c, "out": fmt.format(c)}, ensure_ascii=False) + "\n")
print(len(cases), "cases ->", OUT)
