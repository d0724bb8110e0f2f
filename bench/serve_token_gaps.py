#!/usr/bin/env python3
"""Per-token timing of one streaming client against a running server (aji serve or
llama-server): N sequential streamed /v1/completions requests (32 random token ids as the
prompt, 32 tokens at temperature 0, a fresh connection each), the arrival time of every SSE
event. Prints request latency p50, time to first token p50, the gap between consecutive
events (p50, p90, max) and tokens/s. Stdlib only.

  python3 bench/serve_token_gaps.py PORT [N] ['{"extra": "json fields"}']

Used in docs/serve.md (Performance) to compare OpenMP wait policies on one client.
"""
import http.client
import json
import random
import statistics
import sys
import time


def main():
    port = int(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    rng = random.Random(1)
    lat, ttfts, gaps = [], [], []
    for _ in range(n):
        body = dict({"prompt": [rng.randrange(259, 8000) for _ in range(32)], "max_tokens": 32, "temperature": 0,
                     "stream": True}, **extra)
        c = http.client.HTTPConnection("127.0.0.1", port)
        t0 = time.perf_counter()
        c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        times, buf = [], b""
        while True:
            ch = r.read1(65536)
            if not ch:
                break
            now = time.perf_counter()
            buf += ch
            while b"\n\n" in buf:
                ev, buf = buf.split(b"\n\n", 1)
                if ev.startswith(b"data: ") and ev[6:] != b"[DONE]":
                    times.append(now - t0)
            if b"[DONE]" in ch:
                break
        lat.append(time.perf_counter() - t0)
        c.close()
        ttfts.append(times[0] if times else float("nan"))
        gaps += [b - a for a, b in zip(times, times[1:])]
    gaps.sort()
    print("requests %d  latency p50 %.1f ms  ttft p50 %.1f ms  gap p50 %.2f ms p90 %.2f max %.1f ms  "
          "tok/s (1 client) %.1f" % (n, statistics.median(lat) * 1e3, statistics.median(ttfts) * 1e3,
                                     statistics.median(gaps) * 1e3, gaps[int(len(gaps) * .9)] * 1e3, gaps[-1] * 1e3,
                                     32 * n / sum(lat)))


if __name__ == "__main__":
    main()
