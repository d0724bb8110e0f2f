"""Shared helpers for the `aji serve` client tests (tests/serve/*_test.py).

* make_tiny_model(dir): a tiny model directory `aji serve` loads: a BPE tokenizer trained by
  `aji tokenizer train` on tests/fixtures/tokenizer/train_tiny.txt (with the default specials
  <|endoftext|> <|im_start|> <|im_end|>, so the chat template renders) and a GPT-2-shaped model
  with random weights written here as safetensors (stdlib only: no numpy, no torch).
* Server: starts `build/aji serve` on a free loopback port, waits for /health, stops it with
  SIGTERM (and checks it exits 0), keeps its log for failure messages.
* skip(msg): exit 77, which CTest reports as skipped (SKIP_RETURN_CODE 77).
"""
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SKIP = 77


def skip(msg):
    print("SKIPPED: " + msg, flush=True)
    sys.exit(SKIP)


def aji_binary():
    path = os.environ.get("AJI_BINARY") or os.path.join(ROOT, "build", "aji")
    if not os.access(path, os.X_OK):
        skip("no aji binary at %s (build it: cmake --build build --target aji, or set AJI_BINARY)" % path)
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_safetensors(path, tensors):
    """tensors: list of (name, shape, list-of-floats). Writes F32 little-endian safetensors."""
    header, blobs, off = {"__metadata__": {"format": "pt", "producer": "tests/serve/serve_util.py"}}, [], 0
    for name, shape, values in tensors:
        blob = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(blob)]}
        blobs.append(blob)
        off += len(blob)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def make_tiny_model(out_dir, vocab_size=384, d_model=32, n_layer=2, n_head=4, context=512, seed=0):
    """Writes out_dir/{aji_tokenizer.json, config.json, model.safetensors}; returns out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    tok_path = os.path.join(out_dir, "aji_tokenizer.json")
    if not os.path.exists(tok_path):
        p = subprocess.run([aji_binary(), "tokenizer", "train", "--input",
                            os.path.join(ROOT, "tests", "fixtures", "tokenizer", "train_tiny.txt"),
                            "--vocab-size", str(vocab_size), "--out", tok_path], capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError("aji tokenizer train failed:\n" + p.stdout + p.stderr)
    with open(tok_path) as f:
        tok = json.load(f)
    n_vocab = tok["n_ranks"] + len(tok["specials"])
    eot = next(s["id"] for s in tok["specials"] if s["text"] == "<|endoftext|>")
    C, F = d_model, 4 * d_model
    cfg = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
           "n_embd": C, "n_head": n_head, "n_layer": n_layer, "n_inner": F, "n_positions": context,
           "n_ctx": context, "vocab_size": n_vocab, "layer_norm_epsilon": 1e-5, "bos_token_id": eot,
           "eos_token_id": eot, "tie_word_embeddings": True, "torch_dtype": "float32"}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    rng = random.Random(seed)

    def normal(shape, std=0.2):
        n = 1
        for d in shape:
            n *= d
        return (shape, [rng.gauss(0.0, std) for _ in range(n)])

    def const(shape, v):
        return (shape, [v] * shape[0])

    t = [("transformer.wte.weight",) + normal([n_vocab, C], 0.5), ("transformer.wpe.weight",) + normal([context, C], 0.1)]
    for i in range(n_layer):
        p = "transformer.h.%d." % i
        t += [(p + "ln_1.weight",) + const([C], 1.0), (p + "ln_1.bias",) + const([C], 0.0),
              (p + "attn.c_attn.weight",) + normal([C, 3 * C]), (p + "attn.c_attn.bias",) + const([3 * C], 0.0),
              (p + "attn.c_proj.weight",) + normal([C, C]), (p + "attn.c_proj.bias",) + const([C], 0.0),
              (p + "ln_2.weight",) + const([C], 1.0), (p + "ln_2.bias",) + const([C], 0.0),
              (p + "mlp.c_fc.weight",) + normal([C, F]), (p + "mlp.c_fc.bias",) + const([F], 0.0),
              (p + "mlp.c_proj.weight",) + normal([F, C]), (p + "mlp.c_proj.bias",) + const([C], 0.0)]
    t += [("transformer.ln_f.weight",) + const([C], 1.0), ("transformer.ln_f.bias",) + const([C], 0.0)]
    _write_safetensors(os.path.join(out_dir, "model.safetensors"), t)
    return out_dir


class Server:
    """`aji serve --model DIR` on a free loopback port. Use as a context manager."""

    def __init__(self, model_dir, extra_args=(), threads=1, ready_timeout=60):
        self.port = free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        self.log = tempfile.NamedTemporaryFile(prefix="aji-serve-", suffix=".log", delete=False)
        cmd = [aji_binary(), "--threads", str(threads), "serve", "--model", model_dir, "--host", "127.0.0.1",
               "--port", str(self.port)] + list(extra_args)
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("aji serve exited with %d before it was ready:\n%s" % (self.proc.returncode,
                                                                                         self.log_text()))
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.time() > deadline:
                self.stop()
                raise RuntimeError("aji serve did not answer /health within %d s:\n%s" % (ready_timeout,
                                                                                          self.log_text()))
            time.sleep(0.1)

    def log_text(self):
        try:
            with open(self.log.name, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self, timeout=30):
        """SIGTERM, wait; returns the exit status (the server must exit 0 on SIGTERM)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass


def post_json(url, body, headers=None, timeout=60):
    """Returns (status, parsed JSON or raw text)."""
    data = json.dumps(body).encode() if not isinstance(body, bytes) else body
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers=dict({"Content-Type": "application/json"}, **(headers or {})))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")
