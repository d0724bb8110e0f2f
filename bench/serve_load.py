#!/usr/bin/env python3
"""Load test for `aji serve`: N concurrent clients for D seconds, a mix of streamed and
non-streamed chat and completion requests. Stdlib only (threads + http.client).

  python3 bench/serve_load.py --model DIR [--clients 64] [--duration 60] [--threads 2] [--max-batch 16]
  python3 bench/serve_load.py --base-url http://127.0.0.1:8080 [--pid PID]   # a server already running

Each client loops until the deadline: it picks a route (chat or completions), streamed or not
(--stream-fraction), a prompt (English or Korean) and max_tokens in [--min-tokens, --max-tokens],
opens a fresh connection (or, with --keep-alive, reuses its own; a kept connection the server has
closed is reopened and the request resent, counted apart), sends the request and checks the reply:
  * non-streamed: status 200, JSON of the right `object`, one choice per `n` with text,
    finish_reason stop|length, usage.total_tokens = prompt_tokens + completion_tokens,
    completion_tokens <= max_tokens;
  * streamed (stream_options.include_usage): every `data:` line is JSON (or [DONE], last), one
    id in all chunks, exactly one finish_reason, a final usage chunk with choices [], no error
    event.
Anything else counts as a failure (HTTP status, connection error, timeout) or a malformed reply,
and the first few are printed. Reported: requests, failures, malformed, generated tokens and
aggregate tokens/s (usage.completion_tokens summed over the run / wall time), time to first
token p50/p99 (streamed: until the first content chunk), latency p50/p99, and the server's
RSS idle, after a warm-up, at the end of the load and after a few idle seconds (memory should
be flat: a leak grows with every request). With --model the server is started here on a free
port and stopped with SIGTERM at the end (its exit status is reported).
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
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

PROMPTS = [
    "Tell me a short story about a ship.",
    "What is the capital of France? Answer briefly.",
    "Write three lines about the sea.",
    "안녕하세요! 오늘 날씨가 어때요?",
    "한국어로 짧은 시를 써 주세요.",
    "Explain what a tokenizer does.",
    "List five fruits.",
    "서울에서 부산까지 얼마나 걸려요?",
]


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.ok = 0
        self.failures = 0
        self.malformed = 0
        self.tokens = 0
        self.ttft = []
        self.latency = []
        self.by_kind = {}
        self.examples = []
        self.reconnects = 0
        self.started = 0

    def record(self, kind, ok, tokens=0, ttft=None, latency=None, problem=None, malformed=False):
        with self.lock:
            self.requests += 1
            k = self.by_kind.setdefault(kind, [0, 0])
            k[0] += 1
            if ok:
                self.ok += 1
                k[1] += 1
                self.tokens += tokens
                if ttft is not None:
                    self.ttft.append(ttft)
                self.latency.append(latency)
            elif malformed:
                self.malformed += 1
            else:
                self.failures += 1
            if problem and len(self.examples) < 8:
                self.examples.append("%s: %s" % (kind, problem))


class Malformed(Exception):
    pass


RETRYABLE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def one_request(host, port, headers, model, rng, args, pool):
    """Returns (kind, completion_tokens, ttft or None, latency). Raises on failure / Malformed.
    pool: this client's kept-alive connection ({} without --keep-alive: a fresh one each time)."""
    chat = rng.random() < args.chat_fraction
    stream = rng.random() < args.stream_fraction
    max_tokens = rng.randint(args.min_tokens, args.max_tokens)
    prompt = rng.choice(PROMPTS)
    if args.max_prompt_repeat > 1:  # random prompt sizes: the prompt repeated 1..R times
        prompt = " ".join([prompt] * rng.randint(1, args.max_prompt_repeat))
    body = {"model": model, "max_tokens": max_tokens, "temperature": rng.choice([0.0, 0.7, 1.0]),
            "seed": rng.randint(0, 1 << 30)}
    if chat:
        path = "/v1/chat/completions"
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        path = "/v1/completions"
        body["prompt"] = prompt
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    kind = ("chat" if chat else "completions") + ("+stream" if stream else "")
    t0 = time.perf_counter()
    for attempt in (0, 1):
        reused = "conn" in pool
        conn = pool.pop("conn", None) or http.client.HTTPConnection(host, port, timeout=args.timeout)
        try:
            conn.request("POST", path, json.dumps(body), dict(headers, **{"Content-Type": "application/json"}))
            resp = conn.getresponse()
            break
        except RETRYABLE:
            conn.close()
            # A kept-alive connection the server closed meanwhile (its keep-alive limit or
            # timeout) is not a failure: every HTTP client reconnects and resends then.
            if not (reused and attempt == 0):
                raise
            pool["reconnects"] = pool.get("reconnects", 0) + 1
    ok = False
    try:
        if resp.status != 200:
            raise RuntimeError("HTTP %d: %s" % (resp.status, resp.read()[:200]))
        if not stream:
            raw = resp.read()
            latency = time.perf_counter() - t0
            try:
                j = json.loads(raw)
            except ValueError:
                raise Malformed("not JSON: %r" % raw[:120])
            want = "chat.completion" if chat else "text_completion"
            if j.get("object") != want or not isinstance(j.get("choices"), list) or len(j["choices"]) != 1:
                raise Malformed("object/choices wrong: %r" % raw[:200])
            c = j["choices"][0]
            text = c.get("message", {}).get("content") if chat else c.get("text")
            if not isinstance(text, str) or c.get("finish_reason") not in ("stop", "length"):
                raise Malformed("choice wrong: %r" % c)
            u = j.get("usage") or {}
            if (u.get("total_tokens") != u.get("prompt_tokens", -1) + u.get("completion_tokens", -1)
                    or not 0 <= u.get("completion_tokens", -1) <= max_tokens):
                raise Malformed("usage wrong: %r" % u)
            ok = True
            return kind, u["completion_tokens"], None, latency
        ttft, ids, finishes, usage, done, n_lines = None, set(), [], None, False, 0
        buf = b""
        while True:
            chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                line = line.rstrip(b"\r")
                if not line.startswith(b"data:"):
                    continue
                if done:
                    raise Malformed("data after [DONE]")
                data = line[5:].strip()
                n_lines += 1
                if data == b"[DONE]":
                    done = True
                    continue
                try:
                    j = json.loads(data)
                except ValueError:
                    raise Malformed("chunk is not JSON: %r" % data[:120])
                if "error" in j:
                    raise RuntimeError("error event: %r" % j["error"])
                ids.add(j.get("id"))
                if j.get("usage"):
                    usage = j["usage"]
                    if j.get("choices"):
                        raise Malformed("usage chunk with choices")
                for c in j.get("choices") or []:
                    piece = (c.get("delta") or {}).get("content") if chat else c.get("text")
                    if piece and ttft is None:
                        ttft = time.perf_counter() - t0
                    if c.get("finish_reason"):
                        finishes.append(c["finish_reason"])
        latency = time.perf_counter() - t0
        if not done:
            raise Malformed("no [DONE] (%d data lines)" % n_lines)
        if len(ids) != 1:
            raise Malformed("%d different ids" % len(ids))
        if len(finishes) != 1 or finishes[0] not in ("stop", "length"):
            raise Malformed("finish_reasons %r" % finishes)
        if not usage or not 0 <= usage.get("completion_tokens", -1) <= max_tokens:
            raise Malformed("usage %r" % usage)
        ok = True
        return kind, usage["completion_tokens"], ttft, latency
    finally:
        if ok and args.keep_alive and not resp.will_close:
            pool["conn"] = conn
        else:
            conn.close()


def client_loop(idx, host, port, headers, model, args, deadline, stats):
    rng = random.Random(args.seed * 1000 + idx)
    pool = {}
    while time.time() < deadline:
        if args.max_requests:
            with stats.lock:
                if stats.started >= args.max_requests:
                    break
                stats.started += 1
        try:
            kind, toks, ttft, lat = one_request(host, port, headers, model, rng, args, pool)
            stats.record(kind, True, toks, ttft, lat)
        except Malformed as e:
            stats.record("?", False, problem="malformed: %s" % e, malformed=True)
        except Exception as e:  # noqa: BLE001 - every failure is counted and shown
            stats.record("?", False, problem="%s: %s" % (type(e).__name__, e))
    if "conn" in pool:
        pool["conn"].close()
    with stats.lock:
        stats.reconnects += pool.get("reconnects", 0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_health(base, proc, timeout=120):
    u = urllib.parse.urlparse(base)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit("aji serve exited with %d" % proc.returncode)
        try:
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not answer /health in %d s" % timeout)


def get_json(host, port, path, headers):
    c = http.client.HTTPConnection(host, port, timeout=30)
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    return r.status, r.read()


def run_phase(host, port, headers, model, args, clients, duration, pid=None, rss_every=0, timeline=None):
    """timeline (a list) gets (seconds since the start, requests answered, RSS KiB) every
    rss_every seconds while the phase runs, and once at its end."""
    stats = Stats()
    deadline = time.time() + duration
    threads = [threading.Thread(target=client_loop, args=(i, host, port, headers, model, args, deadline, stats),
                                daemon=True) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    if rss_every > 0 and pid and timeline is not None:
        while any(t.is_alive() for t in threads):
            end = time.time() + rss_every
            while time.time() < end and any(t.is_alive() for t in threads):
                time.sleep(0.1)
            with stats.lock:
                done = stats.requests
            timeline.append((round(time.perf_counter() - t0, 1), done, rss_kib(pid)))
    for t in threads:
        t.join()
    return stats, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description="Load test for aji serve", formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", help="start build/aji serve --model DIR here")
    ap.add_argument("--base-url", help="use a running server instead")
    ap.add_argument("--pid", type=int, help="with --base-url: the server's pid, for RSS")
    ap.add_argument("--aji", default=os.path.join(ROOT, "build", "aji"))
    ap.add_argument("--threads", type=int, default=2, help="server --threads (with --model)")
    ap.add_argument("--max-batch", type=int, default=16, help="server --max-batch (with --model)")
    ap.add_argument("--max-queue", type=int, default=128, help="server --max-queue (with --model)")
    ap.add_argument("--server-arg", action="append", default=[], help="extra server argument (repeatable)")
    ap.add_argument("--api-key", default="")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--min-tokens", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--stream-fraction", type=float, default=0.5)
    ap.add_argument("--chat-fraction", type=float, default=0.5)
    ap.add_argument("--timeout", type=float, default=300, help="per-request timeout, seconds")
    ap.add_argument("--keep-alive", action="store_true",
                    help="each client keeps its connection open between requests (default: a fresh one each)")
    ap.add_argument("--phases", type=int, default=1,
                    help="run the load this many times, RSS after each (flat memory: no growth after the first); "
                         "the numbers printed are the last phase's")
    ap.add_argument("--max-requests", type=int, default=0,
                    help="stop each phase after this many requests (0 = only --duration bounds it)")
    ap.add_argument("--max-prompt-repeat", type=int, default=1,
                    help="random prompt sizes: each prompt is its text repeated 1..R times")
    ap.add_argument("--rss-every", type=float, default=0,
                    help="sample the server's RSS every S seconds during the load (a timeline: flat memory)")
    ap.add_argument("--idle", type=float, default=3, help="seconds idle before the last RSS reading")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    proc = None
    if args.model:
        port = free_port()
        base = "http://127.0.0.1:%d" % port
        cmd = [args.aji, "--threads", str(args.threads), "serve", "--model", args.model, "--port", str(port),
               "--max-batch", str(args.max_batch), "--max-queue", str(args.max_queue)] + args.server_arg
        if args.api_key:
            cmd += ["--api-key", args.api_key]
        print("$ " + " ".join(cmd), flush=True)
        log = open(os.path.join("/tmp", "serve_load-%d.log" % port), "w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        pid = proc.pid
    elif args.base_url:
        base = args.base_url.rstrip("/")
        pid = args.pid
    else:
        ap.error("give --model DIR or --base-url URL")
    u = urllib.parse.urlparse(base)
    host, port = u.hostname, u.port
    headers = {"Authorization": "Bearer " + args.api_key} if args.api_key else {}
    result = {}
    phase_failures = []
    try:
        wait_health(base, proc)
        st, raw = get_json(host, port, "/v1/models", headers)
        model = json.loads(raw)["data"][0]["id"] if st == 200 else "aji"
        rss = {"idle": rss_kib(pid) if pid else None}
        warm, _ = run_phase(host, port, headers, model, args, min(4, args.clients), 3)
        rss["after_warmup"] = rss_kib(pid) if pid else None
        print("warm-up: %d requests, %d failed" % (warm.requests, warm.failures + warm.malformed), flush=True)
        rss["after_each_phase"] = []
        timeline = []
        for phase in range(args.phases):
            stats, wall = run_phase(host, port, headers, model, args, args.clients, args.duration, pid,
                                    args.rss_every, timeline)
            rss["after_each_phase"].append(rss_kib(pid) if pid else None)
            if args.phases > 1:
                print("phase %d: %d requests, %d failed, %d malformed, RSS %s KiB" % (
                    phase + 1, stats.requests, stats.failures, stats.malformed, rss["after_each_phase"][-1]),
                    flush=True)
                phase_failures.append(stats.failures + stats.malformed)
        rss["after_load"] = rss["after_each_phase"][-1]
        time.sleep(args.idle)
        rss["after_idle"] = rss_kib(pid) if pid else None
        st, metrics = get_json(host, port, "/metrics", headers)
        result = {
            "clients": args.clients, "duration_s": round(wall, 2), "requests": stats.requests, "ok": stats.ok,
            "failures": stats.failures, "malformed": stats.malformed, "by_kind": stats.by_kind,
            "generated_tokens": stats.tokens, "tokens_per_s": round(stats.tokens / wall, 1),
            "requests_per_s": round(stats.ok / wall, 2),
            "ttft_ms": {"p50": round(pct(stats.ttft, 50) * 1000, 1), "p99": round(pct(stats.ttft, 99) * 1000, 1),
                        "n": len(stats.ttft)},
            "latency_ms": {"p50": round(pct(stats.latency, 50) * 1000, 1),
                           "p99": round(pct(stats.latency, 99) * 1000, 1)},
            "rss_kib": rss, "problems": stats.examples, "keep_alive": args.keep_alive,
            "keep_alive_reconnects": stats.reconnects,
            "metrics_status": st, "failures_by_phase": phase_failures, "rss_timeline": timeline,
        }
        print("%d clients x %.0f s: %d requests (%s), %d failed, %d malformed" % (
            args.clients, wall, stats.requests, ", ".join("%s %d" % (k, v[0]) for k, v in sorted(stats.by_kind.items())),
            stats.failures, stats.malformed))
        print("generated %d tokens: %.1f tok/s aggregate, %.2f requests/s%s" % (
            stats.tokens, stats.tokens / wall, stats.ok / wall,
            " (keep-alive; %d reconnects after the server closed an idle connection)" % stats.reconnects
            if args.keep_alive else " (a fresh connection per request)"))
        print("time to first token (streamed): p50 %.0f ms, p99 %.0f ms; latency: p50 %.0f ms, p99 %.0f ms" % (
            result["ttft_ms"]["p50"], result["ttft_ms"]["p99"], result["latency_ms"]["p50"],
            result["latency_ms"]["p99"]))
        if pid:
            print("server RSS (MiB): idle %.1f, after warm-up %.1f, after load %.1f, after %.0f s idle %.1f" % tuple(
                [rss["idle"] / 1024, rss["after_warmup"] / 1024, rss["after_load"] / 1024, args.idle,
                 rss["after_idle"] / 1024]))
        if timeline:
            print("RSS over the load (s, requests answered in the phase, MiB):")
            for t, n, r in timeline:
                print("  %7.1f %7d %8.1f" % (t, n, (r or 0) / 1024))
        for p in stats.examples:
            print("  problem: " + p)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = "killed after 60 s"
            print("server exit status on SIGTERM: %s" % rc)
            result["server_exit"] = rc
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    sys.exit(1 if result.get("failures") or result.get("malformed") or any(phase_failures) else 0)


if __name__ == "__main__":
    main()
