#!/usr/bin/env python3
"""Builds fuzz/corpus/<harness>/ from the test fixtures (tests/fixtures, configs/) plus a
few synthetic files in formats no fixture holds (shards, optimizer state, tiktoken).
Standard library only. Seeds are kept small (libFuzzer mutates small inputs fastest);
re-run after changing a fixture: python3 fuzz/make_seeds.py"""
import base64, gzip, json, os, shutil, struct, zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.join(ROOT, "fuzz", "corpus")
MAX = 16 << 10  # bytes per seed


def put(harness, name, data):
    d = os.path.join(OUT, harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data[:MAX] if not name.endswith(".keep") else data)


def read(*p):
    with open(os.path.join(FIX, *p), "rb") as f:
        return f.read()


def gunzip(*p):
    return gzip.decompress(read(*p))


def gzip_members(*p):
    """The raw gzip members of a multi-member file (Common Crawl: one per record)."""
    data, out = read(*p), []
    pos = 0
    while pos < len(data):
        d = zlib.decompressobj(31)
        d.decompress(data[pos:])
        used = len(data) - pos - len(d.unused_data)
        out.append(data[pos:pos + used])
        pos += used
    return out


def warc_records(raw):
    parts = raw.split(b"WARC/1.")
    return [b"WARC/1." + p for p in parts[1:]]


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def shard_checksum(b):  # src/aji/train/shards.cpp
    M = 0xFFFFFFFFFFFFFFFF
    h = 0x243F6A8885A308D3 ^ len(b)
    i = 0
    while i + 8 <= len(b):
        (w,) = struct.unpack_from("<Q", b, i)
        h = ((h ^ w) * 0x9E3779B97F4A7C15) & M
        h ^= h >> 29
        i += 8
    tail = int.from_bytes(b[i:] + bytes(8 - (len(b) - i)), "little") if i < len(b) else 0
    h = ((h ^ tail) * 0x9E3779B97F4A7C15) & M
    return splitmix64(h)


def feedback_seeds(put, read, root):
    def data(*p):
        with open(os.path.join(root, "data", *p), "rb") as f:
            return f.read()
    put("feedback_files", "seed-prefs", b"\x00" + b"\n".join(data("prefs", "hh_rlhf_sample.jsonl").split(b"\n")[:3]))
    ranking = {"prompt": [{"role": "user", "content": "Tell me a joke."}],
               "responses": [[{"role": "assistant", "content": r}] for r in ["A pun.", "No.", "the the the", "Knock knock."]],
               "ranking": [3, [0, 2], 1]}
    put("feedback_files", "seed-ranking", b"\x00" + json.dumps(ranking).encode() + b"\n")
    put("feedback_files", "seed-tasks", b"\x01" + b"\n".join(data("rl_tasks", "arith_test.jsonl").split(b"\n")[:4]))
    hh = [{"chosen": "\n\nHuman: How do I boil an egg?\n\nAssistant: Boil it.\n\nHuman: How long?\n\nAssistant: Nine minutes.",
           "rejected": "\n\nHuman: How do I boil an egg?\n\nAssistant: Boil it.\n\nHuman: How long?\n\nAssistant: No."},
          {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello", "rejected": "\n\nHuman: Hi\n\nAssistant: Hello"}]
    put("feedback_files", "seed-hh", b"\x02" + b"\n".join(json.dumps(r).encode() for r in hh) + b"\n")
    put("feedback_files", "seed-oasst", b"\x03" + read("sft", "oasst_trees.jsonl").split(b"\n")[0])
    put("feedback_files", "seed-gsm8k", b"\x04" + b"\n".join(read("sft", "gsm8k_sample.jsonl").split(b"\n")[:3]))
    put("feedback_files", "seed-verify-number", b"\x05" + "1,234\nso 1000 + 234 = 1234\n#### 1,234".encode())
    put("feedback_files", "seed-verify-choice", b"\x05" + "B\n정답은 (B)입니다".encode())


def main():
    if os.path.isdir(OUT):
        for h in os.listdir(OUT):
            for f in os.listdir(os.path.join(OUT, h)):
                if f.startswith("seed-"):
                    os.remove(os.path.join(OUT, h, f))

    # --- WARC / WET: plain records, single gzip members, a short multi-member file
    for fx in ["warcio-example.warc.gz", "whirlwind.warc.wet.gz", "dolma-sample-0000.warc.gz",
               "resiliparse-warcfile.warc.gz"]:
        recs = warc_records(gunzip("data", "warc", fx))
        for i, r in enumerate(recs[:4]):
            if len(r) <= MAX:
                put("warc", f"seed-{fx}-rec{i}", r)
        mem = [m for m in gzip_members("data", "warc", fx) if len(m) < 4096]
        if mem:
            put("warc", f"seed-{fx}-members", b"".join(mem[:3]))
    put("warc", "seed-whirlwind-head.gz", read("data", "warc", "whirlwind.warc.gz"))

    # --- JSONL documents
    lines = gunzip("data", "warc", "dolma-cc_en_head-0174.jsonl.gz").split(b"\n")
    put("jsonl", "seed-dolma", b"\n".join(l[:1500] + (b'"}' if len(l) > 1500 else b"") for l in lines[:4]))
    put("jsonl", "seed-docs", b"\n".join(read("data_filters", "docs.jsonl").split(b"\n")[:5]))
    put("jsonl", "seed-dolma.gz", gzip.compress(b"\n".join(lines[:2])))

    # --- HTML extraction
    # The extraction fixtures (tests/fixtures/data/extract/*.html) are not copied: the html
    # harness reads that folder as a second seed directory (fuzz/CMakeLists.txt, run_long.sh).
    put("html", "seed-euckr.html",
        '<html><head><meta charset="euc-kr"><title>시험</title></head><body><p>한국어 문서입니다.</p>'
        '<ul><li><a href="/">메뉴</a></li></ul><table><tr><td>가</td><td>나</td></tr></table></body></html>'
        .encode("euc-kr"))

    # --- charset: "<content-type>\n<bytes>"
    ko = "<p>안녕하세요, 세계. 똠방각하</p>"
    put("charset", "seed-euckr", b"text/html; charset=euc-kr\n" + ko.encode("cp949"))
    put("charset", "seed-cp1252", b"text/html; charset=windows-1252\n" + "café naïve “quoted”".encode("cp1252"))
    put("charset", "seed-sjis", b"shift_jis\n" + "日本語のテキスト".encode("shift_jis"))
    put("charset", "seed-utf16", b"text/plain; charset=utf-16\n" + "hello wörld".encode("utf-16"))
    put("charset", "seed-meta", b"\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=gb2312\">"
        + "中文网页".encode("gb2312"))
    put("charset", "seed-bom", b"text/html\n\xef\xbb\xbf<p>bom</p>")
    put("charset", "seed-badutf8", b"utf-8\n\xc3\x28 \xe2\x82 \xf0\x9f\x98\x80 \xed\xa0\x80 \xc0\xaf")

    # --- conversations
    for fx in ["chatbot_expected.jsonl", "gsm8k_expected.jsonl", "oasst_expected.jsonl", "self_instruct_expected.jsonl"]:
        put("conversation", "seed-" + fx, b"\n".join(read("sft", fx).split(b"\n")[:3]))
    put("conversation", "seed-system",
        json.dumps({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                                 {"role": "assistant", "content": "4"}], "source": "x"}) + "\n")

    # --- instruction / task sources: first byte picks the format (0 chatbot, 1 oasst, 2 self_instruct, 3 gsm8k)
    put("sft_sources", "seed-chatbot", b"\x00" + read("sft", "chatbot_sample.csv"))
    put("sft_sources", "seed-tricky", b"\x00" + read("sft", "tricky.csv"))
    put("sft_sources", "seed-oasst", b"\x01" + read("sft", "oasst_trees.jsonl").split(b"\n")[0])
    put("sft_sources", "seed-self-instruct", b"\x02" + read("sft", "self_instruct_sample.jsonl"))
    put("sft_sources", "seed-gsm8k", b"\x03" + read("sft", "gsm8k_sample.jsonl"))
    put("sft_sources", "seed-gsm8k-keep", b"\x07" + b"\n".join(read("sft", "gsm8k_sample.jsonl").split(b"\n")[:2]))

    # --- feedback data: first byte 0 preferences, 1 tasks, 2 hh-rlhf, 3 oasst-ranked, 4 gsm8k tasks, 5 verifiers
    feedback_seeds(put, read, ROOT)

    # --- labeled data: first byte = format (0 csv, 1 tsv, 2 jsonl) | 4 no header | 8 no label | 16 errors | 32 map
    nsmc = gunzip("tokenizer", "parity", "nsmc_raw_head.tsv.gz").split(b"\n")
    put("labeled", "seed-nsmc", b"\x01" + b"\n".join(nsmc[:12]))
    put("labeled", "seed-nsmc-map", bytes([1 | 32]) + b"\n".join(nsmc[:8]))
    put("labeled", "seed-tricky", b"\x00" + read("sft", "tricky.csv"))
    put("labeled", "seed-csv", b"\x00text,label\n\"a, b\",spam\n\"multi\nline \"\"q\"\"\",ham\r\nplain,ham\n")
    put("labeled", "seed-csv-noheader", bytes([0 | 4]) + b"hello,1\nworld,2\n")
    put("labeled", "seed-jsonl", b"\x02" + b'{"text":"good","label":"pos"}\n{"text":"bad","label":0}\n{"text":"x","label":true}\n')
    put("labeled", "seed-predict", bytes([2 | 8]) + b'{"text":"no label"}\n')

    # --- tokenizer files: first byte = 0 tiktoken, 1 aji, 2 HF tokenizer.json, 3 sniffed
    ranks = [bytes([i]) for i in range(256)] + [b"th", b"the", b" the", b"in", b"\xec\x95", b"\xec\x95\x88"]
    tt = b"".join(base64.b64encode(r) + b" " + str(i).encode() + b"\n" for i, r in enumerate(ranks))
    put("tokenizer_files", "seed-tiktoken", b"\x00" + tt)
    put("tokenizer_files", "seed-sniff-tiktoken", b"\x03" + tt)
    aji = {"format": "aji-tokenizer", "version": 1, "pattern": "gpt2",
           "n_ranks": len(ranks), "tokens": [base64.b64encode(r).decode() for r in ranks],
           "specials": [{"text": "<|endoftext|>", "id": len(ranks)}], "metadata": {"name": "seed"}}
    put("tokenizer_files", "seed-aji", b"\x01" + json.dumps(aji).encode())
    aji["merge_priority"] = list(range(len(ranks) - 1, -1, -1))
    aji["pattern"] = "o200k"
    put("tokenizer_files", "seed-aji-priority", b"\x01" + json.dumps(aji).encode())
    hf = json.loads(read("tokenizer", "hf_trained_gpt2.json"))
    # a smaller tokenizer.json: the 256 byte tokens, the first merges
    vocab = {k: v for k, v in hf["model"]["vocab"].items() if v < 300}
    hf["model"]["vocab"] = vocab
    hf["model"]["merges"] = [m for m in hf["model"]["merges"]
                             if ("".join(m) if isinstance(m, list) else m.replace(" ", "")) in vocab][:40]
    hf["added_tokens"] = [t for t in hf.get("added_tokens", []) if t["id"] < 302]
    for name, sel in [("seed-hf-gpt2", 2), ("seed-sniff-hf", 3)]:
        put("tokenizer_files", name, bytes([sel]) + json.dumps(hf).encode())
    hf2 = json.loads(read("tokenizer", "hf_trained_cl100k.json"))
    put("tokenizer_files", "seed-hf-cl100k-head", b"\x02" + json.dumps({k: v for k, v in hf2.items() if k != "model"}).encode()
        + b"")

    # --- model configs
    for fx in os.listdir(os.path.join(ROOT, "configs")):
        if fx.endswith(".json"):
            with open(os.path.join(ROOT, "configs", fx), "rb") as f:
                put("model_config", "seed-" + fx, f.read())
    put("model_config", "seed-toy-aji", read("toy", "base", "aji_config.json"))
    put("model_config", "seed-toy-hf", read("toy", "base", "config.json"))
    for d in ["hf-llama", "hf-gpt2", "hf-gpt2-hub-layout"]:
        put("model_config", "seed-" + d, read("infer", d, "config.json"))

    # --- safetensors
    put("safetensors", "seed-mixed", read("train", "mixed.safetensors"))
    hdr = json.dumps({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                      "b": {"dtype": "BF16", "shape": [3], "data_offsets": [16, 22]},
                      "c": {"dtype": "F16", "shape": [], "data_offsets": [22, 24]},
                      "__metadata__": {"format": "pt"}}).encode()
    hdr += b" " * (-len(hdr) % 8)
    put("safetensors", "seed-small", struct.pack("<Q", len(hdr)) + hdr + bytes(range(24)))

    # --- AJITOK shards
    for width, toks in [(2, [50256, 1, 2, 3, 65535]), (4, [100257, 70000, 5])]:
        payload = b"".join(t.to_bytes(width, "little") for t in toks)
        head = b"AJITOK\0\0" + struct.pack("<IIQQII", 1, width, len(toks), shard_checksum(payload),
                                           65536 if width == 2 else 200000, toks[0])
        put("shard", f"seed-w{width}", head + bytes(64 - len(head)) + payload)

    # --- checkpoint state: first byte = 0 optimizer.bin (4 params), 1 manifest.json, 2 labels.json, 3 loader cursor
    m = struct.pack("<4f", 0.1, -0.2, 0.3, 0.0)
    v = struct.pack("<4f", 0.01, 0.04, 0.09, 0.0)
    s = shard_checksum(m) ^ ((shard_checksum(v) * 3) & 0xFFFFFFFFFFFFFFFF)
    adam = b"AJIADAMW" + struct.pack("<IQQffffQ", 1, 4, 7, 0.9, 0.95, 1e-8, 0.1, s) + m + v
    put("checkpoint_state", "seed-optimizer", b"\x00" + adam)
    man = {"format": "aji-token-shards", "version": 1, "vocab_size": 4096, "bos_id": 0,
           "tokenizer_file": "aji_tokenizer.json", "tokenizer_hash": "00ff", "val_fraction": 0.05, "seed": 1,
           "train": [{"file": "train-00000.ajitok", "tokens": 10, "documents": 2, "bytes": 40}],
           "val": [{"file": "val-00000.ajitok", "tokens": 3, "documents": 1, "bytes": 9}], "skipped_documents": 0}
    put("checkpoint_state", "seed-manifest", b"\x01" + json.dumps(man).encode())
    put("checkpoint_state", "seed-labels", b"\x02" + json.dumps({"format": "aji-labels", "version": 1,
                                                                   "labels": ["ham", "spam"]}).encode())
    put("checkpoint_state", "seed-cursor", b"\x03" + json.dumps({"epoch": 0, "shard_index": 1, "position": 77,
        "rng_state": ["0123456789abcdef", "1", "ffffffffffffffff", "0"]}).encode())


if __name__ == "__main__":
    main()
