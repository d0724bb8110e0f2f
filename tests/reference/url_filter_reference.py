#!/usr/bin/env python3
"""Reference decisions of datatrove's URLFilter for aji's URL filter test.

datatrove's URLFilter is run with its three word lists (data/filters/datatrove_*.txt,
the same files datatrove ships) and a small domain / URL blocklist (the UT1 tarball is
not available here), on real URLs from the WARC fixtures plus synthetic URLs built from
the lists (hard words, soft-word pairs, subwords, case variants). Writes
tests/fixtures/data/url_filter_cases.jsonl: {"url", "keep", "reason"}.
Needs: pip install datatrove tldextract pyahocorasick.
"""
import json
import pathlib
import random

from datatrove.data import Document
from datatrove.pipeline.filters.url_filter import URLFilter

ROOT = pathlib.Path(__file__).resolve().parents[2]
lists = {n: (ROOT / "data/filters" / f"datatrove_{n}.txt").read_text().splitlines()
         for n in ("banned_words", "soft_banned_words", "banned_subwords")}
DOMAINS = ["blocked-example.com", "sub.blocked-too.org", "bad.co.kr"]
URLS = ["https://exact.example.net/path/page.html"]

f = URLFilter(extra_domains=DOMAINS, extra_urls=URLS, banned_words=lists["banned_words"],
              banned_subwords=lists["banned_subwords"], soft_banned_words=lists["soft_banned_words"],
              use_integrated_lists=False)
f.banned_subwords_automaton.make_automaton()

rng = random.Random(7)
urls = []
recs = json.loads((ROOT / "tests/fixtures/data/warc/records.json").read_text())
for rs in recs.values():
    urls += [r["url"] for r in rs if r["url"]]
urls += ["https://www.blocked-example.com/a", "http://blocked-example.com", "https://sub.blocked-too.org/x",
         "https://other.blocked-too.org/x", "https://news.bad.co.kr/article?id=1", URLS[0], URLS[0] + "?q=1",
         "https://en.wikipedia.org/wiki/Seoul", "https://www.naver.com/", "http://example.com:8080/a-b_c.html"]
hard = [w for w in lists["banned_words"] if w and not w.startswith("#")]
soft = [w for w in lists["soft_banned_words"] if w and not w.startswith("#")]
sub = [w for w in lists["banned_subwords"] if w and not w.startswith("#")]
for w in rng.sample(hard, 25):
    urls.append(f"https://site{rng.randint(0, 99)}.com/{w}/page")
    urls.append(f"https://site.com/{w.upper()}-x")          # case kept in URL words: no hard match
    urls.append(f"https://site.com/x{w}y")                     # not a separate word
for _ in range(25):
    a, b = rng.sample(soft, 2)
    urls.append(f"https://blog.net/{a}/{b}.html")             # two soft words: drop
    urls.append(f"https://blog.net/{a}/clean.html")           # one soft word: keep
for w in rng.sample(sub, 20):
    urls.append("https://host.org/" + w.replace(" ", "-").title() + "-stuff")
    urls.append("https://host.org/" + w.replace(" ", "_") + "s")
with open(ROOT / "tests/fixtures/data/url_filter_cases.jsonl", "w") as out:
    for u in urls:
        r = f.filter(Document(text="x", id="0", metadata={"url": u}))
        keep, reason = (r, "") if isinstance(r, bool) else (r[0], r[1])
        out.write(json.dumps({"url": u, "keep": bool(keep), "reason": reason}) + "\n")
print(len(urls), "cases")
