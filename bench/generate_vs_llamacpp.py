#!/usr/bin/python3
"""Generation speed: aji against llama.cpp on the same random Llama, same threads, same run.

  /usr/bin/python3 bench/generate_vs_llamacpp.py --llama-bench PATH/llama-bench \\
        --gguf-py PATH/llama.cpp/gguf-py [--configs bench/configs/llama-17m.json llama-small] \\
        [--threads 1] [--prompt 128] [--gen 64] [--weights fp32 bf16 q8_0] [--batch 1 16]

For each aji config (Llama family, fp32) the script writes a GGUF file of the same shapes
with random weights (llama.cpp's own gguf-py writer; an SPM-style vocabulary of dummy
pieces, since speed does not depend on the strings), then runs

  llama-bench -m FILE -p PROMPT -n GEN -t THREADS -r 3     (pp and tg tokens/s)
  aji --threads THREADS bench generate --config CFG --batch 1 --prompt-len PROMPT --gen 1 --json
  aji --threads THREADS bench generate --config CFG --batch 1 --prompt-len 1 --gen GEN --json

(llama-bench's tg test generates from an empty context, hence aji's 1-token prompt.)
Both with a KV cache, at the same weight type (--weights: aji's `--weights fp32|bf16|q8_0`
against a GGUF whose matrices are F32, BF16 or Q8_0, written with gguf-py's own quantizer;
norms stay F32 in both). llama.cpp's KV cache is f16 unless --llama-kv says otherwise; aji's
is fp32 (--llama-kv f32 compares like with like: at batch 16 the cache is as many bytes per
step as the weights). Batch 1 rows use llama-bench; llama-bench has no batched decode
test, so rows with --batch > 1 run llama-batched-bench (-npp PROMPT -ntg GEN -npl BATCH) when
--llama-batched-bench is given, and aji's batch-B decode after a PROMPT-token prompt (else aji
only). Prints tokens/s of prompt processing and of
generation for both, and aji/llama.cpp.

llama.cpp is not a dependency of aji: build llama-bench from a llama.cpp checkout
(`cmake -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF && cmake --build build --target llama-bench`).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def load_config(name):
    path = name if os.path.exists(name) else os.path.join(ROOT, "configs", name + ".json")
    with open(path) as f:
        cfg = json.load(f)
    cfg.setdefault("n_kv_head", cfg["n_head"])
    cfg.setdefault("norm_eps", 1e-5)
    cfg.setdefault("rope_theta", 10000.0)
    cfg.setdefault("tied_embeddings", False)
    cfg.setdefault("qk_norm", False)
    if cfg["arch"] != "llama":
        raise SystemExit("%s: only Llama-family configs map onto llama.cpp's llama architecture" % name)
    if cfg["qk_norm"]:
        raise SystemExit("%s: QK-norm has no llama-architecture GGUF equivalent" % name)
    return path, cfg


def write_gguf(cfg, path, gguf_py, wtype="fp32"):
    sys.path.insert(0, gguf_py)
    import numpy as np
    import gguf
    from gguf.quants import quantize

    rng = np.random.default_rng(0)
    C, L, H, KV, F, V = (cfg["d_model"], cfg["n_layer"], cfg["n_head"], cfg["n_kv_head"], cfg["d_ff"],
                         cfg["vocab_size"])
    hd = C // H
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(cfg["max_seq_len"])
    w.add_embedding_length(C)
    w.add_block_count(L)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_layer_norm_rms_eps(cfg["norm_eps"])
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(cfg["rope_theta"])
    qtype = {"fp32": gguf.GGMLQuantizationType.F32, "bf16": gguf.GGMLQuantizationType.BF16,
             "q8_0": gguf.GGMLQuantizationType.Q8_0}[wtype]
    w.add_file_type({"fp32": 0, "bf16": 32, "q8_0": 7}[wtype])  # matrices in wtype, norms F32
    # SPM-style vocabulary: <unk> <s> </s>, the 256 byte pieces, then dummy pieces.
    tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    tokens += ["p%d" % i for i in range(V - len(tokens))]
    types = [2, 3, 3] + [6] * 256 + [1] * (V - 259)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * V)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def t(name, *shape):
        x = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)
        if qtype == gguf.GGMLQuantizationType.F32 or shape[-1] % 32:
            w.add_tensor(name, x)
        else:
            w.add_tensor(name, quantize(x, qtype), raw_dtype=qtype)

    t("token_embd.weight", V, C)
    w.add_tensor("output_norm.weight", np.ones(C, dtype=np.float32))
    if not cfg["tied_embeddings"]:
        t("output.weight", V, C)
    for i in range(L):
        w.add_tensor("blk.%d.attn_norm.weight" % i, np.ones(C, dtype=np.float32))
        w.add_tensor("blk.%d.ffn_norm.weight" % i, np.ones(C, dtype=np.float32))
        t("blk.%d.attn_q.weight" % i, H * hd, C)
        t("blk.%d.attn_k.weight" % i, KV * hd, C)
        t("blk.%d.attn_v.weight" % i, KV * hd, C)
        t("blk.%d.attn_output.weight" % i, C, H * hd)
        t("blk.%d.ffn_gate.weight" % i, F, C)
        t("blk.%d.ffn_up.weight" % i, F, C)
        t("blk.%d.ffn_down.weight" % i, C, F)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def run_llama_bench(exe, gguf_path, prompt, gen, threads, kv="f16"):
    out = subprocess.check_output([exe, "-m", gguf_path, "-p", str(prompt), "-n", str(gen), "-t", str(threads),
                                   "-ctk", kv, "-ctv", kv, "-r", "3", "-o", "json"], stderr=subprocess.DEVNULL)
    rows = json.loads(out)
    pp = next(r for r in rows if r["n_prompt"] > 0 and r["n_gen"] == 0)
    tg = next(r for r in rows if r["n_gen"] > 0 and r["n_prompt"] == 0)
    return {"pp_tokens_per_second": pp["avg_ts"], "tg_tokens_per_second": tg["avg_ts"],
            "build": rows[0].get("build_commit", "?")}


def run_llama_batched(exe, gguf_path, prompt, gen, threads, batch, kv="f16"):
    # llama-batched-bench: `batch` sequences of `prompt` tokens, then `gen` decode steps of all
    # of them together; S_TG = generated tokens/s over all sequences.
    out = subprocess.check_output([exe, "-m", gguf_path, "-c", str(batch * (prompt + gen) + 64), "-b", "2048",
                                   "-ub", "512", "-npp", str(prompt), "-ntg", str(gen), "-npl", str(batch),
                                   "-t", str(threads), "-ctk", kv, "-ctv", kv, "--output-format", "jsonl"],
                                  stderr=subprocess.DEVNULL)
    row = [json.loads(l) for l in out.decode().splitlines() if l.startswith("{")][-1]
    return {"pp_tokens_per_second": row["speed_pp"], "tg_tokens_per_second": row["speed_tg"], "build": "?"}


def run_aji(aji, cfg_path, prompt, gen, threads, weights="fp32", batch=1, kv="fp32"):
    # llama-bench's tg test generates from an empty context and its pp test processes one
    # prompt: measure aji the same way (generation after a 1-token prompt). Batched rows
    # (llama-batched-bench) decode after a full prompt.
    def bench(p, g):
        out = subprocess.check_output([aji, "--threads", str(threads), "bench", "generate", "--config", cfg_path,
                                       "--batch", str(batch), "--prompt-len", str(p), "--gen", str(g), "--json",
                                       "--weights", weights, "--kv-cache", kv], stderr=subprocess.DEVNULL)
        return json.loads(out)
    pp = bench(prompt, 1)
    tg = bench(1 if batch == 1 else prompt, gen)
    return {"prompt_tokens_per_second": pp["prompt_tokens_per_second"],
            "gen_tokens_per_second": tg["gen_tokens_per_second"], "peak_rss_mib": tg["peak_rss_mib"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--aji", default=os.path.join(ROOT, "build", "aji"))
    ap.add_argument("--llama-bench", required=True, help="path to llama.cpp's llama-bench binary")
    ap.add_argument("--gguf-py", required=True, help="path to llama.cpp's gguf-py directory")
    ap.add_argument("--configs", nargs="+", default=[os.path.join(HERE, "configs", "llama-17m.json"), "llama-small"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--weights", nargs="+", default=["fp32"], choices=["fp32", "bf16", "q8_0"])
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--llama-kv", default="f16", choices=["f16", "f32", "bf16", "q8_0"],
                    help="llama.cpp's KV cache type (its default f16; aji's cache is fp32: f32 compares like with like)")
    ap.add_argument("--aji-kv", default="fp32", choices=["fp32", "bf16"], help="aji's KV cache type (--kv-cache)")
    ap.add_argument("--llama-batched-bench", help="llama.cpp's llama-batched-bench (rows with --batch > 1)")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            cfg_path, cfg = load_config(name)
            for wt in args.weights:
                gguf_path = os.path.join(tmp, os.path.basename(cfg_path) + "." + wt + ".gguf")
                write_gguf(cfg, gguf_path, args.gguf_py, wt)
                for th in args.threads:
                    for b in args.batch:
                        if b == 1:
                            lc = run_llama_bench(args.llama_bench, gguf_path, args.prompt, args.gen, th, args.llama_kv)
                        elif args.llama_batched_bench:
                            lc = run_llama_batched(args.llama_batched_bench, gguf_path, args.prompt, args.gen, th, b,
                                                   args.llama_kv)
                        else:
                            lc = None
                        a = run_aji(args.aji, cfg_path, args.prompt, args.gen, th, wt, b, args.aji_kv)
                        lpp = lc["pp_tokens_per_second"] if lc else float("nan")
                        ltg = lc["tg_tokens_per_second"] if lc else float("nan")
                        print("%-16s %-5s batch=%-2d threads=%d  prompt %d: aji %.0f tok/s, llama.cpp %.0f -> %.2fx | "
                              "generation %d: aji %.1f tok/s, llama.cpp %.1f -> %.2fx" %
                              (os.path.basename(cfg_path), wt, b, th, args.prompt, a["prompt_tokens_per_second"], lpp,
                               a["prompt_tokens_per_second"] / lpp, args.gen, a["gen_tokens_per_second"], ltg,
                               a["gen_tokens_per_second"] / ltg), flush=True)
                        results.append({"config": cfg_path, "weights": wt, "batch": b, "threads": th, "aji": a,
                                        "llama_cpp": lc})
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
