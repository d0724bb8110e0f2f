#!/usr/bin/env python3
"""Serving speed: `aji serve` against llama.cpp's `llama-server` on the same random Llama, same
threads, in one run.

  python3 bench/serve_vs_llamacpp.py --llama-server /work/llama.cpp/build/bin/llama-server \\
        --gguf-py /work/llama.cpp/gguf-py [--configs tiny llama-small] [--threads 2] \\
        [--clients 1 4 16 64] [--duration 15] [--prompt 32] [--gen 32]

For each config (configs/NAME.json, Llama family) the script draws one set of random fp32 weights
(numpy, seed 0) and writes it twice:
  * an aji model directory: aji_config.json, model.safetensors (Hugging Face Llama names) and a
    BPE tokenizer with exactly vocab_size ids, trained by `aji tokenizer train` on
    ../shared/data/tinyshakespeare/input.txt (or --corpus), so every id the model can emit decodes;
  * a GGUF file (llama.cpp's own gguf-py writer, F32, q/k rows permuted as convert_hf_to_gguf.py
    does, so both servers compute the same function) with an SPM-style dummy vocabulary of the
    same size (speed does not depend on the strings).
Then it starts one server at a time on a free loopback port, both configured for the largest
client count (aji: --max-batch C --max-queue 2C; llama-server: -np C -c C*(prompt+gen+16)
--kv-unified), and for each client count runs closed-loop clients for --duration seconds: each
client sends a streamed /v1/completions request whose prompt is --prompt random token ids
(the same ids for both servers), temperature 0, max_tokens --gen, waits for the whole reply,
and sends the next. Reported per server and client count: aggregate generated tokens/s (tokens
counted from the streamed pieces; usage when the server sends it), time to first token p50/p99,
request latency p50/p99, requests and failures. llama-server also gets "ignore_eos": true; aji
has no such field (a random model's EOS is 1 in vocab_size per token, and tokens are counted,
not assumed).

llama.cpp is not a dependency of aji: build llama-server from a llama.cpp checkout
(`cmake -B build -DLLAMA_CURL=OFF && cmake --build build --target llama-server`).
"""
import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from generate_vs_llamacpp import load_config  # noqa: E402  (one reader of an aji config for both llama.cpp benchmarks)
ROOT = os.path.dirname(HERE)
AJI_CONFIG_KEYS = ("arch", "vocab_size", "n_layer", "n_head", "n_kv_head", "d_model", "d_ff", "max_seq_len",
                   "norm_eps", "rope_theta", "tied_embeddings", "qk_norm")


def random_weights(cfg, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    C, L, H, KV, F, V = (cfg["d_model"], cfg["n_layer"], cfg["n_head"], cfg["n_kv_head"], cfg["d_ff"],
                         cfg["vocab_size"])
    hd = C // H

    def n(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    w = {"model.embed_tokens.weight": n(V, C), "model.norm.weight": np.ones(C, np.float32)}
    if not cfg["tied_embeddings"]:
        w["lm_head.weight"] = n(V, C)
    for i in range(L):
        p = "model.layers.%d." % i
        w[p + "input_layernorm.weight"] = np.ones(C, np.float32)
        w[p + "post_attention_layernorm.weight"] = np.ones(C, np.float32)
        w[p + "self_attn.q_proj.weight"] = n(H * hd, C)
        w[p + "self_attn.k_proj.weight"] = n(KV * hd, C)
        w[p + "self_attn.v_proj.weight"] = n(KV * hd, C)
        w[p + "self_attn.o_proj.weight"] = n(C, H * hd)
        w[p + "mlp.gate_proj.weight"] = n(F, C)
        w[p + "mlp.up_proj.weight"] = n(F, C)
        w[p + "mlp.down_proj.weight"] = n(C, F)
    return w


def write_safetensors(path, tensors):
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, a in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for a in tensors.values():
            f.write(a.tobytes())


def write_aji_dir(cfg, weights, out, aji, corpus):
    os.makedirs(out, exist_ok=True)
    tok = os.path.join(out, "aji_tokenizer.json")
    subprocess.run([aji, "tokenizer", "train", "--input", corpus, "--vocab-size", str(cfg["vocab_size"]), "--out", tok],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(tok) as f:
        t = json.load(f)
    if t["n_ranks"] + len(t["specials"]) != cfg["vocab_size"]:
        raise SystemExit("the corpus gave a tokenizer of %d ids, the model has %d: give a larger --corpus"
                         % (t["n_ranks"] + len(t["specials"]), cfg["vocab_size"]))
    eot = next(s["id"] for s in t["specials"] if s["text"] == "<|endoftext|>")
    ac = {k: cfg[k] for k in AJI_CONFIG_KEYS}
    ac.update(bos_token_id=eot, eos_token_id=eot)
    with open(os.path.join(out, "aji_config.json"), "w") as f:
        json.dump(ac, f, indent=1)
    write_safetensors(os.path.join(out, "model.safetensors"), weights)
    return out


def write_gguf(cfg, weights, path, gguf_py):
    sys.path.insert(0, gguf_py)
    import gguf
    import numpy as np
    C, L, H, KV, V = cfg["d_model"], cfg["n_layer"], cfg["n_head"], cfg["n_kv_head"], cfg["vocab_size"]
    hd = C // H

    def permute(w, heads):  # Hugging Face rotate-half rows -> GGUF interleaved pairs (convert_hf_to_gguf.py)
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(cfg["max_seq_len"])
    w.add_embedding_length(C)
    w.add_block_count(L)
    w.add_feed_forward_length(cfg["d_ff"])
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_layer_norm_rms_eps(cfg["norm_eps"])
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_file_type(0)
    tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    tokens += ["p%d" % i for i in range(V - len(tokens))]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * V)
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (V - 259))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)
    w.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", weights["model.norm.weight"])
    if "lm_head.weight" in weights:
        w.add_tensor("output.weight", weights["lm_head.weight"])
    for i in range(L):
        p = "model.layers.%d." % i
        w.add_tensor("blk.%d.attn_norm.weight" % i, weights[p + "input_layernorm.weight"])
        w.add_tensor("blk.%d.ffn_norm.weight" % i, weights[p + "post_attention_layernorm.weight"])
        w.add_tensor("blk.%d.attn_q.weight" % i, np.ascontiguousarray(permute(weights[p + "self_attn.q_proj.weight"], H)))
        w.add_tensor("blk.%d.attn_k.weight" % i, np.ascontiguousarray(permute(weights[p + "self_attn.k_proj.weight"], KV)))
        w.add_tensor("blk.%d.attn_v.weight" % i, weights[p + "self_attn.v_proj.weight"])
        w.add_tensor("blk.%d.attn_output.weight" % i, weights[p + "self_attn.o_proj.weight"])
        w.add_tensor("blk.%d.ffn_gate.weight" % i, weights[p + "mlp.gate_proj.weight"])
        w.add_tensor("blk.%d.ffn_up.weight" % i, weights[p + "mlp.up_proj.weight"])
        w.add_tensor("blk.%d.ffn_down.weight" % i, weights[p + "mlp.down_proj.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, port, log_path, timeout=300):
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit("%s exited with %d; log %s:\n%s" % (cmd[0], proc.returncode, log_path,
                                                                  open(log_path).read()[-2000:]))
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise SystemExit("%s did not answer /health in %d s" % (cmd[0], timeout))


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return "killed"


def one(port, body):
    """(generated tokens, ttft s, latency s) of one streamed completion."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    try:
        c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            raise RuntimeError("HTTP %d %s" % (r.status, r.read()[:200]))
        ttft, pieces, usage, buf, done = None, 0, None, b"", False
        while not done:
            chunk = r.read1(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf and not done:
                line, buf = buf.split(b"\n", 1)
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    break
                j = json.loads(data)
                if "error" in j:
                    raise RuntimeError("error event %r" % j["error"])
                if j.get("usage"):
                    usage = j["usage"]
                for ch in j.get("choices") or []:
                    if ch.get("text"):
                        pieces += 1
                        if ttft is None:
                            ttft = time.perf_counter() - t0
        if not done:
            raise RuntimeError("stream ended without [DONE]")
        n = usage["completion_tokens"] if usage and usage.get("completion_tokens") else pieces
        return n, ttft, time.perf_counter() - t0
    finally:
        c.close()


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def load(port, clients, duration, prompts, gen, extra):
    lock = threading.Lock()
    res = {"tokens": 0, "ok": 0, "failed": 0, "ttft": [], "lat": [], "errors": []}
    deadline = time.time() + duration

    def client(i):
        k = i
        while time.time() < deadline:
            # no "model": aji answers 404 for an id it does not serve; llama-server ignores it
            body = dict({"prompt": prompts[k % len(prompts)], "max_tokens": gen, "temperature": 0,
                         "stream": True, "stream_options": {"include_usage": True}}, **extra)
            k += clients
            try:
                n, ttft, lat = one(port, body)
                with lock:
                    res["tokens"] += n
                    res["ok"] += 1
                    res["lat"].append(lat)
                    if ttft is not None:
                        res["ttft"].append(ttft)
            except Exception as e:  # noqa: BLE001 - counted and shown
                with lock:
                    res["failed"] += 1
                    if len(res["errors"]) < 3:
                        res["errors"].append(str(e)[:200])

    ts = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    return {"clients": clients, "wall_s": round(wall, 2), "requests": res["ok"], "failed": res["failed"],
            "tokens": res["tokens"], "tok_per_s": round(res["tokens"] / wall, 1),
            "ttft_ms_p50": round(pct(res["ttft"], 50) * 1e3, 1), "ttft_ms_p99": round(pct(res["ttft"], 99) * 1e3, 1),
            "latency_ms_p50": round(pct(res["lat"], 50) * 1e3, 1), "latency_ms_p99": round(pct(res["lat"], 99) * 1e3, 1),
            "errors": res["errors"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--aji", default=os.path.join(ROOT, "build", "aji"))
    ap.add_argument("--llama-server", required=True)
    ap.add_argument("--gguf-py", required=True)
    ap.add_argument("--configs", nargs="+", default=["tiny", "llama-small"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare", "input.txt"))
    ap.add_argument("--servers", nargs="+", default=["aji", "llama.cpp"], choices=["aji", "aji-gemm", "llama.cpp"],
                    help="aji-gemm: aji serve --no-batch-invariant (one GEMM over the decode batch)")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    cmax = max(args.clients)
    results = []
    with tempfile.TemporaryDirectory(prefix="serve-vs-llamacpp-") as tmp:
        for name in args.configs:
            cfg_path, cfg = load_config(name)
            if args.prompt + args.gen >= cfg["max_seq_len"]:
                raise SystemExit("%s: --prompt + --gen must fit the context %d" % (name, cfg["max_seq_len"]))
            weights = random_weights(cfg)
            rng = random.Random(1)
            prompts = [[rng.randrange(259, cfg["vocab_size"] - 3) for _ in range(args.prompt)] for _ in range(256)]
            for server in args.servers:
                port = free_port()
                log = os.path.join(tmp, "%s-%s.log" % (name, server.replace(".", "")))
                if server.startswith("aji"):
                    d = os.path.join(tmp, name + "-aji")
                    if not os.path.exists(d):
                        write_aji_dir(cfg, weights, d, args.aji, args.corpus)
                    cmd = [args.aji, "--threads", str(args.threads), "serve", "--model", d, "--port", str(port),
                           "--max-batch", str(cmax), "--max-queue", str(2 * cmax)]
                    if server == "aji-gemm":
                        cmd.append("--no-batch-invariant")
                    extra = {}
                else:
                    g = os.path.join(tmp, name + ".gguf")
                    if not os.path.exists(g):
                        write_gguf(cfg, weights, g, args.gguf_py)
                    ctx = cmax * (args.prompt + args.gen + 16)
                    cmd = [args.llama_server, "-m", g, "--host", "127.0.0.1", "--port", str(port), "-t",
                           str(args.threads), "-tb", str(args.threads), "-np", str(cmax), "-c", str(ctx),
                           "--kv-unified", "--no-webui"]
                    extra = {"ignore_eos": True}
                print("$ " + " ".join(cmd), flush=True)
                proc = start(cmd, port, log)
                try:
                    load(port, 1, 2, prompts, args.gen, extra)  # warm-up
                    for c in args.clients:
                        r = load(port, c, args.duration, prompts, args.gen, extra)
                        r.update(config=name, server=server, threads=args.threads,
                                 loadavg_1m=round(os.getloadavg()[0], 2))
                        results.append(r)
                        print("%-12s %-9s clients %3d: %7.1f tok/s | TTFT p50 %7.1f p99 %7.1f ms | latency p50 %7.1f "
                              "p99 %7.1f ms | %d requests, %d failed | load %.1f %s" % (
                                  name, server, c, r["tok_per_s"], r["ttft_ms_p50"], r["ttft_ms_p99"],
                                  r["latency_ms_p50"], r["latency_ms_p99"], r["requests"], r["failed"],
                                  r["loadavg_1m"], r["errors"] or ""), flush=True)
                finally:
                    rc = stop(proc)
                    print("%s exit status on SIGTERM: %s" % (server, rc), flush=True)
        print("\naggregate generated tokens/s (aji / llama-server):")
        for name in args.configs:
            for c in args.clients:
                row = {r["server"]: r for r in results if r["config"] == name and r["clients"] == c}
                for aji in ("aji", "aji-gemm"):
                    if aji in row and "llama.cpp" in row:
                        a, l = row[aji]["tok_per_s"], row["llama.cpp"]["tok_per_s"]
                        print("  %-12s clients %3d: %-8s %8.1f  llama-server %8.1f  -> %.2fx" % (
                            name, c, aji, a, l, a / l if l else 0))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
