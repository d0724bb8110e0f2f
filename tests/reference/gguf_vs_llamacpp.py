#!/usr/bin/env python3
"""aji's GGUF export checked against the real llama.cpp (issue 17, "Export").

What it does (everything offline, small models trained on the bundled corpus):
  1. models (cached in --work): token shards of data/corpus/train with the committed
     tokenizers tests/fixtures/gguf/tokenizer_{cl100k,gpt2}.json; a Llama (2 layers, d128,
     4 heads, 2 KV heads: the Q/K permutation with GQA), a GPT-2 (2 layers, d128) and a Llama with
     QK-norm and tied embeddings (exported as llama.cpp's qwen3) pretrained 300 steps; the Llama
     fine-tuned 400 steps on data/sft (a chat model).
  2. `aji export gguf` of each at f32 and q8_0 (and the base Llama at f16).
  3. every file read back with the `gguf` package (gguf-py): version, required keys and
     their types, tensor names and ggml shapes, 32-byte aligned offsets, vocabulary arrays;
     at f32 the tensors equal the safetensors weights, with attn_q/attn_k compared against
     llama.cpp's own LlamaModel.permute (conversion/llama.py).
  4. tokenizer parity: llama.cpp's tokenizer (llama-tokenize, and the driver below) gives aji's
     ids on mixed English/Korean text, whitespace-heavy text, digits, contractions and special
     tokens, for both pre-tokenizers (llama-bpe, gpt-2).
  5. greedy parity: llama.cpp greedy continuations (tests/reference/llamacpp_driver.cpp, built
     against libllama) vs aji's greedy ids (tests/reference/aji_greedy_ids.cpp, built against
     build/libaji_lib.a: the calls `aji generate --temperature 0` / `aji chat --temperature 0`
     make); base prompts are also run through the real `aji generate` CLI and its text compared.
     Reported: ids equal, the agreeing prefix, first-position max |logit difference|.
The result goes to tests/fixtures/gguf/llamacpp_result.json, which tests/export/gguf_test.cpp
checks (it recomputes the tokenizer ids with aji and requires f32 greedy equality).

Rerun:  python3 tests/reference/gguf_vs_llamacpp.py --llama-cpp /path/to/llama.cpp
        (a llama.cpp source tree with build/bin/libllama.so and build/bin/llama-tokenize;
        `pip install gguf numpy torch` for the file checks; build/aji built first)
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]

TOKENIZE_TEXTS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "안녕하세요, 오늘 날씨가 정말 좋네요. 서울의 인구는 약 950만 명입니다.",
    "aji는 C++20으로 LLM을 만듭니다 (English and 한국어 mixed, 2026년 12월 5일).",
    "I'm sure they'll say it's DON'T and WE'VE, not 'quoted' words.",
    "Numbers: 1234567 3.14159 -42 1,000,000 and 0x1F.",
    "  leading spaces\n\n\ttabs\tand   runs of    spaces   \n   \n",
    "line one\r\nline two\n\n\n  indented\n    more indented   ",
    "<|im_start|>user\n안녕?<|im_end|>\n<|im_start|>assistant\nHi!<|im_end|>\n",
    "Émile's naïve café — “quotes” … 😀 emoji and ünïcödé.",
    "func(x){return x*2;} // code-ish;;; <tag attr=\"v\">",
]
BASE_PROMPTS = ["The king said", "And God said", "ROMEO:", "The government said on Monday that",
                "이 영화는", "정부는 오늘"]
CHAT_PROMPTS = ["What is the capital of France?", "안녕하세요", "Tell me a joke.", "오늘 너무 피곤해"]
N_PREDICT = 32


def run(cmd, stdin=None, cwd=ROOT):
    p = subprocess.run(cmd, input=stdin, cwd=cwd, capture_output=True)
    if p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(map(str, cmd))}\n{p.stderr.decode(errors='replace')}")
    return p.stdout


def build_models(aji, work, force):
    w = work
    specs = {
        "llama": {"arch": "llama", "vocab_size": 1024, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "d_model": 128,
                  "d_ff": 256, "max_seq_len": 128, "norm_eps": 1e-5, "rope_theta": 10000, "tied_embeddings": False,
                  "qk_norm": False},
        "gpt2": {"arch": "gpt2", "vocab_size": 1024, "n_layer": 2, "n_head": 4, "d_model": 128, "max_seq_len": 128,
                 "norm_eps": 1e-5},
        # llama with QK-norm: exported as llama.cpp's qwen3 (tied embeddings, NEOX RoPE)
        "qwen3": {"arch": "llama", "vocab_size": 1024, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "d_model": 128,
                  "d_ff": 256, "max_seq_len": 128, "norm_eps": 1e-6, "rope_theta": 1000000, "tied_embeddings": True,
                  "qk_norm": True},
    }
    toks = {"llama": "tests/fixtures/gguf/tokenizer_cl100k.json", "gpt2": "tests/fixtures/gguf/tokenizer_gpt2.json",
            "qwen3": "tests/fixtures/gguf/tokenizer_cl100k.json"}
    steps = {"llama": "300", "gpt2": "300", "qwen3": "300"}
    for name, cfg in specs.items():
        run_dir = w / f"{name}_run"
        if (run_dir / "latest").exists() and not force:
            continue
        (w / f"{name}_cfg.json").write_text(json.dumps(cfg))
        shards = w / ("shards_gpt2" if name == "gpt2" else "shards_cl100k")
        if not (shards / "manifest.json").exists() or force:
            run([aji, "data", "tokenize", "--tokenizer", toks[name], "--input", "data/corpus/train",
                 "--out", shards, "--force", "--threads", "1"])
        run([aji, "pretrain", "--config", w / f"{name}_cfg.json", "--data", shards, "--out", run_dir,
             "--force", "--steps", steps[name], "--batch-size", "8", "--seq-len", "128", "--lr", "3e-3",
             "--eval-every", "0", "--sample-every", "0", "--save-every", "0", "--keep", "1", "--threads", "1"])
    if force or not (w / "sft_run" / "latest").exists():
        run([aji, "sft", "train", "--model", w / "llama_run", "--data", "data/sft/train.jsonl", "--val",
             "data/sft/val.jsonl", "--out", w / "sft_run", "--force", "--steps", "400", "--batch-size", "8",
             "--seq-len", "128", "--batching", "pack", "--lr", "2e-3", "--skip-invalid", "--threads", "1"])
    return {"llama": (w / "llama_run", "base", toks["llama"]), "llama-chat": (w / "sft_run", "chat", toks["llama"]),
            "gpt2": (w / "gpt2_run", "base", toks["gpt2"]), "qwen3": (w / "qwen3_run", "base", toks["qwen3"])}


def build_tools(llama, work):
    b = work / "bin"
    b.mkdir(exist_ok=True)
    lib = llama / "build" / "bin"
    run(["g++", "-O1", "-std=c++17", f"-I{llama / 'include'}", f"-I{llama / 'ggml' / 'include'}",
         ROOT / "tests/reference/llamacpp_driver.cpp", f"-L{lib}", "-lllama", "-lggml", "-lggml-base",
         f"-Wl,-rpath,{lib}", "-o", b / "llamacpp_driver"])
    run(["g++", "-O1", "-std=c++20", f"-I{ROOT / 'src'}", "-DAJI_VERSION=\"ref\"",
         ROOT / "tests/reference/aji_greedy_ids.cpp", ROOT / "build/libaji_lib.a", "-fopenmp", "-lz", "-lpcre2-8",
         "-lzstd", "-lutf8proc", "-lgumbo", "-ldnnl", "-lcld2", "-lpthread", "-o", b / "aji_greedy_ids"])
    return b / "llamacpp_driver", b / "aji_greedy_ids"


def resolve_ckpt(run_dir):
    return run_dir / (run_dir / "latest").read_text().strip()


def check_file(path, model_dir, ftype, llama):
    """gguf-py reads the file back; returns a dict of what was checked."""
    import gguf
    r = gguf.GGUFReader(str(path))
    f = {k: v for k, v in r.fields.items()}

    def val(k):
        return f[k].contents()

    cfg = json.loads((model_dir / "config.json").read_text())
    arch = val("general.architecture")
    assert f["GGUF.version"].contents() == 3
    T = gguf.GGUFValueType
    need = {"general.architecture": T.STRING, "general.file_type": T.UINT32, f"{arch}.context_length": T.UINT32,
            f"{arch}.embedding_length": T.UINT32, f"{arch}.block_count": T.UINT32,
            f"{arch}.feed_forward_length": T.UINT32, f"{arch}.attention.head_count": T.UINT32,
            "tokenizer.ggml.model": T.STRING, "tokenizer.ggml.pre": T.STRING, "tokenizer.ggml.tokens": T.ARRAY,
            "tokenizer.ggml.token_type": T.ARRAY, "tokenizer.ggml.merges": T.ARRAY,
            "tokenizer.ggml.bos_token_id": T.UINT32, "tokenizer.ggml.eos_token_id": T.UINT32}
    if arch in ("llama", "qwen3"):
        need.update({f"{arch}.attention.head_count_kv": T.UINT32, f"{arch}.rope.freq_base": T.FLOAT32,
                     f"{arch}.attention.layer_norm_rms_epsilon": T.FLOAT32, f"{arch}.rope.dimension_count": T.UINT32})
    else:
        need[f"{arch}.attention.layer_norm_epsilon"] = T.FLOAT32
    for k, t in need.items():
        assert k in f, f"{path}: missing {k}"
        assert f[k].types[0] == t, f"{path}: {k} has type {f[k].types}"
    V = cfg["vocab_size"]
    assert len(val("tokenizer.ggml.tokens")) == V and len(val("tokenizer.ggml.token_type")) == V
    assert len(val("tokenizer.ggml.merges")) > 0
    from safetensors.numpy import load_file
    st = load_file(str(model_dir / "model.safetensors"))
    hf_cfg = cfg
    permute = None
    if arch == "llama":
        sys.path.insert(0, str(llama))
        sys.path.insert(0, str(llama / "gguf-py"))
        from conversion.llama import LlamaModel  # llama.cpp's own permutation
        permute = LlamaModel.permute
    n_checked = 0
    max_q8_err = 0.0
    for t in r.tensors:
        assert t.data_offset % 32 == 0, f"{t.name} at {t.data_offset}"
        shape = list(int(x) for x in t.shape)  # gguf-py: ne order
        if arch in ("llama", "qwen3"):
            m = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                 "output.weight": "lm_head.weight"}
            if t.name.startswith("blk."):
                n, rest = t.name[4:].split(".", 1)
                base = {"attn_norm.weight": "input_layernorm.weight", "attn_q.weight": "self_attn.q_proj.weight",
                        "attn_k.weight": "self_attn.k_proj.weight", "attn_v.weight": "self_attn.v_proj.weight",
                        "attn_output.weight": "self_attn.o_proj.weight",
                        "ffn_norm.weight": "post_attention_layernorm.weight",
                        "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
                        "ffn_down.weight": "mlp.down_proj.weight", "attn_q_norm.weight": "self_attn.q_norm.weight",
                        "attn_k_norm.weight": "self_attn.k_norm.weight"}[rest]
                hf_name = f"model.layers.{n}.{base}"
            else:
                hf_name = m[t.name]
            want = st[hf_name]
            if arch == "llama" and t.name.endswith("attn_q.weight"):
                want = permute(want, hf_cfg["num_attention_heads"], hf_cfg["num_attention_heads"])
            if arch == "llama" and t.name.endswith("attn_k.weight"):
                want = permute(want, hf_cfg["num_attention_heads"], hf_cfg["num_key_value_heads"])
        else:
            m = {"token_embd.weight": "transformer.wte.weight", "position_embd.weight": "transformer.wpe.weight",
                 "output_norm.weight": "transformer.ln_f.weight", "output_norm.bias": "transformer.ln_f.bias",
                 "output.weight": "transformer.wte.weight"}
            if t.name.startswith("blk."):
                n, rest = t.name[4:].split(".", 1)
                part, kind = rest.rsplit(".", 1)
                base = {"attn_norm": "ln_1", "attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj",
                        "ffn_norm": "ln_2", "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"}[part]
                hf_name = f"transformer.h.{n}.{base}.{kind}"
            else:
                hf_name = m[t.name]
            want = st[hf_name]
            if want.ndim == 2 and not t.name.startswith(("token_embd", "position_embd", "output.")):
                want = want.T  # Conv1D (in, out) -> (out, in), as convert_hf_to_gguf.py does
        assert shape == list(reversed(want.shape)), f"{t.name}: {shape} vs {want.shape}"
        if t.tensor_type == gguf.GGMLQuantizationType.F32:
            got = np.asarray(t.data, dtype=np.float32).reshape(want.shape)
            assert np.array_equal(got, want), f"{t.name} differs from {hf_name}"
        elif t.tensor_type == gguf.GGMLQuantizationType.Q8_0:
            from gguf.quants import dequantize
            got = dequantize(t.data, t.tensor_type).reshape(want.shape)
            max_q8_err = max(max_q8_err, float(np.abs(got - want).max()))
        n_checked += 1
    return {"file": path.name, "type": ftype, "architecture": arch, "pre": val("tokenizer.ggml.pre"),
            "n_tensors": len(r.tensors), "n_tokens": V, "n_merges": len(val("tokenizer.ggml.merges")),
            "bos": int(val("tokenizer.ggml.bos_token_id")), "eos": int(val("tokenizer.ggml.eos_token_id")),
            "eot": int(val("tokenizer.ggml.eot_token_id")) if "tokenizer.ggml.eot_token_id" in f else None,
            "chat_template": "tokenizer.chat_template" in f, "tensors_checked": n_checked,
            "max_q8_0_abs_error": max_q8_err if ftype == "q8_0" else None, "bytes": path.stat().st_size}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--aji", default=str(ROOT / "build/aji"))
    ap.add_argument("--llama-cpp", default=os.environ.get("LLAMA_CPP", "/work/llama.cpp"))
    ap.add_argument("--work", default="/tmp/aji-gguf-check")
    ap.add_argument("--out", default=str(ROOT / "tests/fixtures/gguf/llamacpp_result.json"))
    ap.add_argument("--retrain", action="store_true", help="train the models again even if --work has them")
    a = ap.parse_args()
    llama = pathlib.Path(a.llama_cpp)
    if not (llama / "build/bin/libllama.so").exists():
        sys.exit(f"no llama.cpp build at {llama}/build/bin (build llama.cpp first, or pass --llama-cpp)")
    work = pathlib.Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    aji = a.aji
    models = build_models(aji, work, a.retrain)
    driver, aji_ids = build_tools(llama, work)
    llama_tokenize = llama / "build/bin/llama-tokenize"
    ver = subprocess.run([llama / "build/bin/llama-cli", "--version"], capture_output=True)
    commit = ver.stdout.decode(errors="replace").strip() + ver.stderr.decode(errors="replace").strip()
    commit = next((line for line in commit.splitlines() if line.startswith("version")), "unknown")
    result = {"llama_cpp": commit, "n_predict": N_PREDICT, "files": [], "tokenize": [], "greedy": []}

    # --- export and read back ---
    ggufs = {}
    for name, (run_dir, mode, tok) in models.items():
        ck = resolve_ckpt(run_dir)
        for ftype in (["f32", "f16", "q8_0"] if name == "llama" else ["f32", "q8_0"]):
            out = work / f"{name}-{ftype}.gguf"
            run([aji, "export", "gguf", "--model", run_dir, "--out", out, "--type", ftype])
            info = check_file(out, ck, ftype, llama)
            info["model"] = name
            info["mode"] = mode
            result["files"].append(info)
            ggufs[(name, ftype)] = out
            print(f"{out.name}: {info['architecture']} {ftype}, {info['n_tensors']} tensors checked with gguf-py, "
                  f"pre {info['pre']}, eos {info['eos']}, eot {info['eot']}")

    # --- tokenizer parity ---
    for name in ("llama", "gpt2"):
        tok = models[name][2]
        g = ggufs[(name, "f32")]
        for text in TOKENIZE_TEXTS:
            ours = [int(x) for x in run([aji, "tokenizer", "encode", "--tokenizer", tok, "--allow-special"],
                                        stdin=text.encode()).split()]
            theirs = json.loads(run([driver, g, "--tokenize"], stdin=text.encode()))["prompt_ids"]
            entry = {"tokenizer": tok, "text": text, "aji_ids": ours, "llamacpp_ids": theirs, "equal": ours == theirs}
            if llama_tokenize.exists():
                out = run([llama_tokenize, "-m", g, "-p", text, "--ids", "--no-bos", "--log-disable"])
                entry["llama_tokenize_ids"] = json.loads(out.decode().strip().splitlines()[-1])
                entry["equal"] = entry["equal"] and entry["llama_tokenize_ids"] == ours
            result["tokenize"].append(entry)
            print(f"tokenize [{name}] {'OK ' if entry['equal'] else 'DIFF'} {len(ours):3d} ids  {text[:40]!r}")

    # --- greedy parity ---
    for name, (run_dir, mode, tok) in models.items():
        prompts = CHAT_PROMPTS if mode == "chat" else BASE_PROMPTS
        for ftype in (["f32", "f16", "q8_0"] if name == "llama" else ["f32", "q8_0"]):
            for prompt in prompts:
                ours = json.loads(run([aji_ids, run_dir, mode, str(N_PREDICT)], stdin=prompt.encode()))
                text = (f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n" if mode == "chat" else prompt)
                theirs = json.loads(run([driver, ggufs[(name, ftype)], str(N_PREDICT)], stdin=text.encode()))
                agree = 0
                while agree < min(len(ours["ids"]), len(theirs["ids"])) and ours["ids"][agree] == theirs["ids"][agree]:
                    agree += 1
                dl = float(np.abs(np.array(ours["logits"]) - np.array(theirs["logits"])).max())
                e = {"model": name, "mode": mode, "type": ftype, "prompt": prompt,
                     "aji_prompt_ids": ours["prompt_ids"], "llamacpp_prompt_ids": theirs["prompt_ids"],
                     "aji_ids": ours["ids"], "llamacpp_ids": theirs["ids"], "llamacpp_stopped_at_eog": theirs["eog"],
                     "agree_prefix": agree, "equal": ours["ids"] == theirs["ids"],
                     "first_logits_max_abs_diff": dl}
                if mode == "base" and ftype == "f32":  # the real CLI prints the same text
                    cli = run([aji, "generate", "--model", run_dir, "--prompt", prompt, "--temperature", "0",
                               "--max-tokens", str(N_PREDICT), "--threads", "1"])
                    import gguf
                    toks = gguf.GGUFReader(str(ggufs[(name, ftype)])).fields["tokenizer.ggml.tokens"].contents()
                    inv = unicode_to_bytes()
                    stops = {ours["prompt_ids"][0]}
                    gen = b"".join(bytes(inv[ch] for ch in toks[i]) for i in ours["ids"] if i not in stops)
                    try:  # the CLI prints invalid UTF-8 as U+FFFD: compare only valid text
                        gen.decode("utf-8")
                    except UnicodeDecodeError:
                        gen = None
                    e["cli_text_equal"] = None if gen is None else cli in (prompt.encode() + gen, prompt.encode() + gen + b"\n")  # CLI ends with \n
                result["greedy"].append(e)
                print(f"greedy [{name} {ftype}] {'EQUAL' if e['equal'] else 'agree ' + str(agree)}"
                      f" ({len(ours['ids'])} ids, max|dlogit| {dl:.2e}){' CLI TEXT DIFFERS' if e.get('cli_text_equal') is False else ''}"
                      f"  {prompt!r}")

    # --- control: the same Llama without the Q/K permutation loads but does not match ---
    bad = work / "llama-f32-unpermuted.gguf"
    unpermuted_copy(ggufs[("llama", "f32")], bad, resolve_ckpt(models["llama"][0]) / "model.safetensors")
    ctrl = []
    for prompt in BASE_PROMPTS:
        ours = json.loads(run([aji_ids, models["llama"][0], "base", str(N_PREDICT)], stdin=prompt.encode()))
        theirs = json.loads(run([driver, bad, str(N_PREDICT)], stdin=prompt.encode()))
        ctrl.append({"prompt": prompt, "equal": ours["ids"] == theirs["ids"],
                     "first_logits_max_abs_diff": float(np.abs(np.array(ours["logits"]) - np.array(theirs["logits"])).max())})
    result["unpermuted_control"] = {"prompts": len(ctrl), "equal": sum(c["equal"] for c in ctrl),
                                    "min_first_logits_abs_diff": min(c["first_logits_max_abs_diff"] for c in ctrl)}
    print("control, Q/K not permuted:", result["unpermuted_control"])

    # --- summary ---
    def summary(ftype):
        g = [e for e in result["greedy"] if e["type"] == ftype]
        return {"prompts": len(g), "equal": sum(e["equal"] for e in g),
                "first_token_agree": sum(e["agree_prefix"] >= 1 for e in g),
                "mean_agree_prefix": sum(e["agree_prefix"] for e in g) / max(1, len(g)),
                "min_agree_prefix": min((e["agree_prefix"] for e in g), default=0),
                "max_first_logits_abs_diff": max((e["first_logits_max_abs_diff"] for e in g), default=0)}
    result["summary"] = {"tokenize_equal": sum(e["equal"] for e in result["tokenize"]),
                         "tokenize_cases": len(result["tokenize"]),
                         **{ft: summary(ft) for ft in ("f32", "f16", "q8_0")}}
    # the logits rows are large: keep only the summary numbers in the fixture
    lines = []  # one line per entry: the fixture diffs readably
    for k, v in result.items():
        if isinstance(v, list):
            body = ",\n".join("  " + json.dumps(x, ensure_ascii=False) for x in v)
            lines.append(f" {json.dumps(k)}: [\n{body}\n ]")
        else:
            lines.append(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}")
    pathlib.Path(a.out).write_text("{\n" + ",\n".join(lines) + "\n}\n")
    print(json.dumps(result["summary"], indent=1))
    ok = result["summary"]["tokenize_equal"] == result["summary"]["tokenize_cases"] and \
        result["summary"]["f32"]["equal"] == result["summary"]["f32"]["prompts"] and \
        result["unpermuted_control"]["min_first_logits_abs_diff"] > 1e-2
    print("RESULT:", "PASS" if ok else "FAIL", "->", a.out)
    return 0 if ok else 1


def unpermuted_copy(src, dst, st_path):
    """The f32 Llama file rewritten by gguf-py's GGUFWriter with attn_q/attn_k in Hugging Face's
    row order (no permutation): the bug issue 17 warns about. It still loads; its logits must not
    match aji's."""
    import gguf
    from safetensors.numpy import load_file
    st = load_file(str(st_path))
    r = gguf.GGUFReader(str(src))
    w = gguf.GGUFWriter(str(dst), arch=r.fields["general.architecture"].contents())
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            w.add_key_value(k, f.contents(), f.types[0], sub_type=f.types[-1])
        else:
            w.add_key_value(k, f.contents(), f.types[0])
    for t in r.tensors:
        data = np.array(t.data)
        if t.name.endswith(("attn_q.weight", "attn_k.weight")):
            n, rest = t.name[4:].split(".", 1)
            data = st[f"model.layers.{n}.self_attn.{rest[5]}_proj.weight"]
        w.add_tensor(t.name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def unicode_to_bytes():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


if __name__ == "__main__":
    sys.exit(main())
