#!/usr/bin/env python3
"""`aji serve` through the official `openai` Python client (PyPI), the way users' tools call it.

Starts `build/aji serve` with a tiny random-weight model (serve_util.py) and checks:
  * chat: the response shape (object, role, finish_reason, usage adds up); temperature 0 gives
    the same text twice; a seeded temperature-1 request gives the same text twice, and not the
    same text for every seed;
  * streaming chat with stream_options.include_usage: one id and `created` in every chunk, the
    first delta carries the role, the pieces reassemble to the non-streamed text, the last chunk
    has choices == [] and the same usage as the non-streamed reply;
  * completions with echo + logprobs on a token-id prompt (what lm-evaluation-harness sends):
    one entry per prompt token (the first null) plus the generated one, each equal to the
    log-probability `aji score` computes for the same ids (independent code path: the CLI's
    scorer), the argmax in top_logprobs; max_tokens 0 scores the prompt only;
  * n=2 (two choices, indices 0 and 1; greedy, so both equal the n=1 text);
  * stop: with a stop string taken from the unconstrained greedy output, the reply is exactly
    the text before its first occurrence, finish_reason "stop";
  * errors: 400 (empty messages, a wrong type, a prompt longer than the context, malformed
    JSON), 404 (unknown route; an unknown model is either 404 or accepted and echoed, see
    error_tests), 401 with --api-key (wrong or missing key) while /health still answers and the
    right key works.

Exit 77 (skipped) when the openai package is absent: pip install -r tests/serve/requirements.txt
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_util  # noqa: E402

try:
    import openai
except ImportError:
    serve_util.skip("the openai package is not installed (pip install -r tests/serve/requirements.txt)")

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


def aji_score(model_dir, text):
    """Token ids and per-token log-probs of text, from `aji score --no-bos --json`."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(text)
    try:
        out = subprocess.run([serve_util.aji_binary(), "--threads", "1", "score", "--model", model_dir, "--input",
                              f.name, "--no-bos", "--json"], check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    j = json.loads(out)
    return j["tokens"], j["logprobs"]


def chat_tests(client, model):
    msgs = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Tell me about the sea."},
            {"role": "assistant", "content": "It is large."},
            {"role": "user", "content": "And 바다 in Korean?"}]
    r1 = client.chat.completions.create(model=model, messages=msgs, temperature=0, max_tokens=24, seed=1)
    r2 = client.chat.completions.create(model=model, messages=msgs, temperature=0, max_tokens=24, seed=1)
    c = r1.choices[0]
    check(r1.object == "chat.completion" and r1.id, "chat: object chat.completion with an id")
    check(r1.model == model, "chat: the model id is echoed (%r)" % r1.model)
    check(c.index == 0 and c.message.role == "assistant", "chat: choice 0 is the assistant's")
    check(c.finish_reason in ("stop", "length"), "chat: finish_reason %r" % c.finish_reason)
    u = r1.usage
    check(u.prompt_tokens > 0 and u.completion_tokens > 0 and u.total_tokens == u.prompt_tokens + u.completion_tokens,
          "chat: usage adds up (%d + %d = %d)" % (u.prompt_tokens, u.completion_tokens, u.total_tokens))
    check(u.completion_tokens <= 24, "chat: max_tokens respected (%d)" % u.completion_tokens)
    check(c.finish_reason == "stop" or u.completion_tokens == 24, "chat: finish_reason length only at max_tokens")
    check(r1.choices[0].message.content == r2.choices[0].message.content, "chat: temperature 0 is repeatable")
    text = c.message.content

    # max_completion_tokens is a synonym of max_tokens.
    r3 = client.chat.completions.create(model=model, messages=msgs, temperature=0, max_completion_tokens=5)
    check(r3.usage.completion_tokens <= 5 and text.startswith(r3.choices[0].message.content),
          "chat: max_completion_tokens=5 gives a prefix of the longer greedy reply")

    # Streaming, with usage.
    chunks = list(client.chat.completions.create(model=model, messages=msgs, temperature=0, max_tokens=24, seed=1,
                                                 stream=True, stream_options={"include_usage": True}))
    check(len(chunks) >= 2, "stream: %d chunks" % len(chunks))
    check(len({ch.id for ch in chunks}) == 1 and len({ch.created for ch in chunks}) == 1,
          "stream: the same id and created in every chunk")
    check(all(ch.object == "chat.completion.chunk" for ch in chunks), "stream: object chat.completion.chunk")
    with_choices = [ch for ch in chunks if ch.choices]
    check(with_choices and with_choices[0].choices[0].delta.role == "assistant", "stream: the first delta has the role")
    streamed = "".join(ch.choices[0].delta.content or "" for ch in with_choices)
    check(streamed == text, "stream: pieces reassemble to the non-streamed reply (%r vs %r)" % (streamed[:40], text[:40]))
    finishes = [ch.choices[0].finish_reason for ch in with_choices if ch.choices[0].finish_reason]
    check(finishes == [c.finish_reason], "stream: one finish_reason, the same as non-streamed (%s)" % finishes)
    last = chunks[-1]
    check(last.choices == [] and last.usage is not None, "stream: the last chunk has choices [] and usage")
    if last.usage is not None:
        check((last.usage.prompt_tokens, last.usage.completion_tokens) == (u.prompt_tokens, u.completion_tokens),
              "stream: usage equals the non-streamed usage")
    check(all(ch.usage is None for ch in chunks[:-1]), "stream: usage only in the last chunk")

    # Seeds: the same seed repeats at temperature 1; different seeds do not all agree.
    def sampled(seed):
        return client.chat.completions.create(model=model, messages=msgs, temperature=1.0, top_p=1.0, max_tokens=16,
                                              seed=seed).choices[0].message.content
    a, b = sampled(42), sampled(42)
    check(a == b, "seed: seed 42 gives the same sampled reply twice")
    check(len({sampled(s) for s in (1, 2, 3)} | {a}) > 1, "seed: seeds 1, 2, 3, 42 do not all give the same reply")

    # n = 2 at temperature 0: two choices, both the greedy reply.
    rn = client.chat.completions.create(model=model, messages=msgs, temperature=0, max_tokens=24, n=2)
    check(sorted(ch.index for ch in rn.choices) == [0, 1], "n=2: choices with index 0 and 1")
    check(all(ch.message.content == text for ch in rn.choices), "n=2: greedy choices equal the n=1 reply")
    check(rn.usage.completion_tokens == 2 * u.completion_tokens,
          "n=2: usage counts both choices (%d)" % rn.usage.completion_tokens)
    return msgs


def stop_tests(client, model):
    prompt = "The ship sailed"
    full = client.completions.create(model=model, prompt=prompt, temperature=0, max_tokens=48)
    text = full.choices[0].text
    # A two-letter stop string from the middle of the greedy output: the reply must end right
    # before its first occurrence.
    stop = None
    for k in range(len(text) // 3, len(text) - 1):
        if text[k:k + 2].isalpha() and text[k:k + 2].isascii():
            stop = text[k:k + 2]
            break
    if not check(stop is not None, "stop: the greedy output has ASCII letters to stop on (%r)" % text[:60]):
        return
    want = text[:text.index(stop)]
    r = client.completions.create(model=model, prompt=prompt, temperature=0, max_tokens=48, stop=[stop, "\u0000zz"])
    check(r.choices[0].text == want and r.choices[0].finish_reason == "stop",
          "stop: %r ends the reply before it (%r, finish %s)" % (stop, r.choices[0].text[-20:], r.choices[0].finish_reason))
    rc = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], temperature=0,
                                        max_tokens=48)
    ctext = rc.choices[0].message.content
    for k in range(len(ctext) // 3, len(ctext) - 1):
        if ctext[k:k + 2].isalpha() and ctext[k:k + 2].isascii():
            s = ctext[k:k + 2]
            r2 = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                                temperature=0, max_tokens=48, stop=s)
            check(r2.choices[0].message.content == ctext[:ctext.index(s)] and r2.choices[0].finish_reason == "stop",
                  "stop: a string stop on chat ends the reply before %r" % s)
            break


def logprob_tests(client, model, model_dir):
    text = "The sea is wide and the ship is small. 바다는 넓다."
    ids, ref = aji_score(model_dir, text)
    check(len(ref) == len(ids) - 1, "aji score: one log-prob per token after the first")
    for max_tokens in (1, 0):
        r = client.completions.create(model=model, prompt=[ids], temperature=0, max_tokens=max_tokens, logprobs=1,
                                      echo=True, seed=1234)
        lp = r.choices[0].logprobs
        n = len(ids) + max_tokens
        check(len(lp.token_logprobs) == n and len(lp.tokens) == n and len(lp.top_logprobs) == n,
              "echo max_tokens=%d: %d entries for %d prompt tokens" % (max_tokens, len(lp.token_logprobs), len(ids)))
        if len(lp.token_logprobs) != n:
            continue
        check(lp.token_logprobs[0] is None and lp.top_logprobs[0] is None, "echo: the first prompt token has null")
        diff = max(abs(a - b) for a, b in zip(lp.token_logprobs[1:len(ids)], ref))
        check(diff < 1e-4, "echo max_tokens=%d: prompt log-probs equal aji score's (max diff %.2e)" % (max_tokens, diff))
        ok_top = all(t is not None and len(t) >= 1 and max(t.values()) >= v - 1e-6 and all(x <= 0 for x in t.values())
                     for v, t in zip(lp.token_logprobs[1:], lp.top_logprobs[1:]))
        check(ok_top, "echo: top_logprobs hold the argmax (>= the chosen token's log-prob)")
        # Where the chosen token is the argmax its value must be the same float (lm-eval's is_greedy).
        # Tokens that are parts of a UTF-8 character all read "\ufffd", so they are left out.
        exact = all(t[tok] == v for tok, v, t in zip(lp.tokens[1:], lp.token_logprobs[1:], lp.top_logprobs[1:])
                    if tok in t and "\ufffd" not in tok)
        check(exact, "echo: an argmax token's top_logprobs value equals its token_logprob exactly")
        check(r.choices[0].text.startswith(text) or max_tokens == 0 and r.choices[0].text == text,
              "echo: text begins with the prompt")
        check(all(math.isfinite(v) for v in lp.token_logprobs[1:]), "echo: finite log-probs")


def error_tests(client, model, base):
    def status_of(fn):
        try:
            fn()
            return 200
        except openai.APIStatusError as e:
            return e.status_code

    s = status_of(lambda: client.chat.completions.create(model=model, messages=[], max_tokens=4))
    check(s == 400, "error: empty messages -> %d (want 400)" % s)
    s = status_of(lambda: client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}],
                                                         max_tokens=4, temperature="hot"))
    check(s == 400, "error: temperature 'hot' -> %d (want 400)" % s)
    s = status_of(lambda: client.completions.create(model=model, prompt="x" * 5000, max_tokens=4))
    check(s == 400, "error: a prompt longer than the context -> %d (want 400)" % s)
    # An unknown model is a 404 (model_not_found), as OpenAI and vLLM answer.
    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}],
                                       max_tokens=2)
        check(False, "error: unknown model -> 404 (got a reply)")
    except openai.NotFoundError as e:
        check(getattr(e, "code", None) == "model_not_found", "error: unknown model -> 404 model_not_found")
    try:
        client.chat.completions.create(model=model, messages=[], max_tokens=4)
    except openai.BadRequestError as e:
        body = e.body if isinstance(e.body, dict) else {}
        check(isinstance(body.get("message"), str) and body.get("type"), "error: OpenAI shape with message and type")
    st, _ = serve_util.post_json(base + "/v1/no-such-route", {})
    check(st == 404, "error: unknown route -> %d (want 404)" % st)
    st, body = serve_util.post_json(base + "/v1/chat/completions", b"{not json")
    check(st == 400 and isinstance(body, dict) and "error" in body, "error: malformed JSON -> %d (want 400)" % st)


def auth_tests(model_dir):
    with serve_util.Server(model_dir, extra_args=["--api-key", "s3cret"]) as srv:
        base = srv.base + "/v1"
        with urllib.request.urlopen(srv.base + "/health", timeout=10) as r:
            check(r.status == 200, "auth: /health answers without a key")
        c = openai.OpenAI(base_url=base, api_key="wrong", max_retries=0)
        try:
            c.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
            s = 200
        except openai.APIStatusError as e:
            s = e.status_code
        check(s == 401, "auth: a wrong key -> %d (want 401)" % s)
        s, body = serve_util.post_json(base + "/chat/completions", {"model": "x", "max_tokens": 2,
                                                                     "messages": [{"role": "user", "content": "hi"}]})
        check(s == 401 and isinstance(body, dict) and "error" in body, "auth: no key -> %d (want 401)" % s)
        good = openai.OpenAI(base_url=base, api_key="s3cret", max_retries=0)
        model = good.models.list().data[0].id
        r = good.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        check(r.choices[0].message.role == "assistant", "auth: the right key works")
        rc = srv.stop()
        check(rc == 0, "auth server: exit status %s on SIGTERM" % rc)


def main():
    tmp = tempfile.mkdtemp(prefix="aji-openai-test-")
    try:
        model_dir = serve_util.make_tiny_model(os.path.join(tmp, "model"))
        with serve_util.Server(model_dir) as srv:
            try:
                client = openai.OpenAI(base_url=srv.base + "/v1", api_key="x", max_retries=0, timeout=60)
                models = client.models.list().data
                check(len(models) == 1 and models[0].object == "model", "models: one model listed")
                model = models[0].id
                chat_tests(client, model)
                stop_tests(client, model)
                logprob_tests(client, model, model_dir)
                error_tests(client, model, srv.base)
                rc = srv.stop()
                check(rc == 0, "server: exit status %s on SIGTERM" % rc)
            except Exception:
                print("--- aji serve log ---\n" + srv.log_text())
                raise
            if failures:
                print("--- aji serve log ---\n" + srv.log_text())
        auth_tests(model_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("%d check(s) failed:\n  %s" % (len(failures), "\n  ".join(failures)))
        sys.exit(1)
    print("openai client test passed (openai %s)" % openai.__version__)


if __name__ == "__main__":
    main()
