#!/usr/bin/env python3
"""The chat page at `/` in a real browser: headless Chromium driven through chromedriver.

Starts `build/aji serve` on a free port with a tiny random-weight model (serve_util.py), opens
the page, types an English and then a Korean message, waits for each streamed reply, clicks
Regenerate, checks that Enter while an IME is composing does not send, New chat, Stop on a long
reply (the page's reading is slowed down so the click lands mid-stream), and takes screenshots at desktop (1280x900) and phone (390x844) size. A second server
with --api-key checks that the page shows the 401 and that the key typed into Settings works. Each screenshot is decoded here (a small PNG reader,
stdlib only) and must not be blank (grey-level variance and distinct colours); every reply
element must have text; the phone layout must not scroll sideways.

The browser is driven with the W3C WebDriver protocol spoken directly to Debian's chromedriver
over HTTP (urllib), so no selenium package is needed. Skips (exit 77) when chromium or
chromedriver is absent (scripts/install-deps installs both).

  python3 tests/serve/browser_test.py [--base-url http://127.0.0.1:PORT] [--out DIR]

--base-url tests a server that is already running instead of starting one; --out keeps the
screenshots (default: a temporary directory, printed).
"""
import argparse
import base64
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_util  # noqa: E402


# ---------------------------------------------------------------------------------------------
# A minimal W3C WebDriver client.

class WebDriverError(RuntimeError):
    pass


class Browser:
    def __init__(self, chromedriver, chromium, width, height):
        self.port = serve_util.free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="chromedriver-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([chromedriver, "--port=%d" % self.port], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.base = "http://127.0.0.1:%d" % self.port
        deadline = time.time() + 30
        while True:
            try:
                if self._call("GET", "/status")["value"].get("ready"):
                    break
            except (OSError, WebDriverError):
                pass
            if time.time() > deadline or self.proc.poll() is not None:
                raise WebDriverError("chromedriver did not start")
            time.sleep(0.2)
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=%d,%d" % (width, height), "--lang=en-US", "--no-first-run",
                "--user-data-dir=" + tempfile.mkdtemp(prefix="aji-chromium-")]
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome",
                                                 "goog:chromeOptions": {"binary": chromium, "args": args}}}}
        self.session = self._call("POST", "/session", caps, timeout=120)["value"]["sessionId"]

    def _call(self, method, path, body=None, timeout=60):
        data = json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise WebDriverError("%s %s: %s" % (method, path, e.read().decode(errors="replace")[:500]))

    def cmd(self, method, path, body=None, timeout=60):
        return self._call(method, "/session/%s%s" % (self.session, path), body, timeout)["value"]

    def get(self, url):
        self.cmd("POST", "/url", {"url": url})

    def find(self, css):
        v = self.cmd("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(v.values()))

    def find_all(self, css):
        return [next(iter(v.values())) for v in
                self.cmd("POST", "/elements", {"using": "css selector", "value": css})]

    def click(self, el):
        self.cmd("POST", "/element/%s/click" % el)

    def type(self, el, text):
        self.cmd("POST", "/element/%s/value" % el, {"text": text})

    def js(self, script, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def set_size(self, w, h):
        self.cmd("POST", "/window/rect", {"width": w, "height": h})

    def screenshot(self):
        return base64.b64decode(self.cmd("GET", "/screenshot", timeout=120))

    def close(self):
        try:
            self.cmd("DELETE", "")
        except (OSError, WebDriverError):
            pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.unlink(self.log.name)


# ---------------------------------------------------------------------------------------------
# PNG -> grey levels (8-bit RGB/RGBA, non-interlaced: what Chromium writes), stdlib only.

def png_grey(png):
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, hdr = 8, [], None
    while pos < len(png):
        n, kind = struct.unpack(">I4s", png[pos:pos + 8])
        chunk = png[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
        elif kind == b"IEND":
            break
    w, h, depth, ctype, _, _, interlace = hdr
    if depth != 8 or ctype not in (2, 6) or interlace:
        raise ValueError("unsupported PNG (depth %d, colour type %d, interlace %d)" % (depth, ctype, interlace))
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = w * bpp
    prev = bytearray(stride)
    grey, colours = [], set()
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif f == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev))
        elif f == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif f == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        prev = line
        for x in range(0, stride, bpp * 2):  # every other pixel is plenty for the statistics
            r, g, b = line[x], line[x + 1], line[x + 2]
            grey.append((299 * r + 587 * g + 114 * b) // 1000)
            colours.add((r, g, b))
    return w, h, grey, len(colours)


def check_not_blank(png, path, what):
    with open(path, "wb") as f:
        f.write(png)
    w, h, grey, n_colours = png_grey(png)
    mean = sum(grey) / len(grey)
    var = sum((g - mean) ** 2 for g in grey) / len(grey)
    print("%s: %s %dx%d, grey mean %.1f, variance %.1f, %d colours" % (what, path, w, h, mean, var, n_colours))
    # A blank page is one colour (variance 0); text and bubbles on it give hundreds of shades.
    if var < 20 or n_colours < 16:
        raise AssertionError("%s screenshot looks blank (variance %.1f, %d colours)" % (what, var, n_colours))
    return w, h


# ---------------------------------------------------------------------------------------------

THROTTLE_FETCH = """
const realFetch = window.fetch;
window.fetch = async (url, opts) => {
  const resp = await realFetch(url, opts);
  if (!String(url).includes('/chat/completions') || !resp.ok) return resp;
  const reader = resp.body.getReader();
  let pending = new Uint8Array(0);
  let ctrlRef = null;
  const slow = new ReadableStream({
    start(ctrl) { ctrlRef = ctrl; },
    async pull(ctrl) {
      await new Promise((r) => setTimeout(r, 100));
      if (pending.length === 0) {
        const { value, done } = await reader.read();
        if (done) { ctrl.close(); return; }
        pending = value;
      }
      ctrl.enqueue(pending.slice(0, 16));
      pending = pending.slice(16);
    },
    cancel(reason) { return reader.cancel(reason); }
  });
  // As a real fetch body does: an abort errors the stream with an AbortError.
  opts.signal.addEventListener('abort', () => {
    try { ctrlRef.error(new DOMException('The user aborted a request.', 'AbortError')); } catch (e) {}
    reader.cancel().catch(() => {});
  });
  return new Response(slow, { status: resp.status, headers: resp.headers });
};
"""


def dump_page(b, out):
    """On a failure: what the page showed, for the log, and a screenshot."""
    try:
        state = b.js("return {status: document.getElementById('status').textContent, messages: Array.from("
                     "document.querySelectorAll('.msg')).map(m => [m.className, m.dataset.done || '',"
                     " m.querySelector('.body').textContent.slice(0, 80)])};")
        print("page at the failure: " + json.dumps(state, ensure_ascii=False))
        with open(os.path.join(out, "failure.png"), "wb") as f:
            f.write(b.screenshot())
        print("failure screenshot: " + os.path.join(out, "failure.png"))
    except Exception as e:  # noqa: BLE001 - best effort while reporting another failure
        print("could not read the page: %s" % e)


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out after %d s waiting for %s" % (timeout, what))


def send_and_wait(b, text):
    """Types text + Enter; returns the finished reply's text."""
    n_done = len(b.find_all(".msg.assistant[data-done='1']"))
    n_user = len(b.find_all(".msg.user"))
    b.type(b.find("#input"), text + "\ue007")  # \ue007 = the Enter key
    wait_for(lambda: len(b.find_all(".msg.user")) == n_user + 1, 10, "the user's message to appear")
    user_text = b.js("const m = document.querySelectorAll('.msg.user .body'); return m[m.length-1].textContent;")
    assert user_text == text, "the user bubble shows %r, typed %r" % (user_text, text)
    wait_for(lambda: len(b.find_all(".msg.assistant[data-done='1']")) == n_done + 1, 60, "the streamed reply")
    errors = b.js("return Array.from(document.querySelectorAll('.msg.error .body')).map(e => e.textContent);")
    assert not errors, "the page shows an error: %s" % errors
    reply = b.js("const m = document.querySelectorAll('.msg.assistant .body'); return m[m.length-1].textContent;")
    status = b.js("return document.getElementById('status').textContent;")
    print("sent %r -> reply %r (status: %s)" % (text, reply[:60], status))
    assert reply, "the reply element is empty"
    assert "finish:" in status, "the status line does not report how the reply ended: %r" % status
    return reply


def api_key_flow(chromedriver, chromium, model_dir, out):
    """A server with --api-key: without the key the page shows the 401; with the key typed into
    Settings (kept in localStorage), Regenerate gets the reply."""
    with serve_util.Server(model_dir, extra_args=["--api-key", "page-key"]) as srv:
        b = Browser(chromedriver, chromium, 1280, 900)
        try:
            b.get(srv.base + "/")
            b.js("localStorage.clear(); document.getElementById('max_tokens').value = '16';")
            b.type(b.find("#input"), "hello\ue007")
            wait_for(lambda: b.find_all(".msg.error"), 30, "the 401 error on the page")
            err = b.js("return document.querySelector('.msg.error .body').textContent;")
            print("without the key the page shows: %r" % err)
            assert "401" in err, "the error does not say 401: %r" % err
            b.click(b.find("#toggle"))
            b.type(b.find("#apikey"), "page-key")
            b.js("document.getElementById('apikey').dispatchEvent(new Event('change'));")
            assert b.js("return localStorage.getItem('aji.apikey');") == "page-key", "the key is not kept"
            b.click(b.find("#regen"))
            wait_for(lambda: b.find_all(".msg.assistant[data-done='1']"), 60, "the reply with the key")
            reply = b.js("return document.querySelector('.msg.assistant .body').textContent;")
            assert reply and not b.find_all(".msg.assistant + .msg.error"), "no reply with the key"
            print("with the key: reply %r" % reply[:40])
            check_not_blank(b.screenshot(), os.path.join(out, "chat_api_key.png"), "api key")
        finally:
            b.close()
        rc = srv.stop()
        assert rc == 0, "aji serve --api-key exited with %d on SIGTERM" % rc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-url", help="test this running server instead of starting build/aji serve")
    ap.add_argument("--out", help="directory for the screenshots (default: a new temporary one)")
    args = ap.parse_args()

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        serve_util.skip("headless browser test needs chromium and chromedriver (Debian: apt-get install chromium "
                        "chromium-driver; scripts/install-deps lists both)")
    out = args.out or tempfile.mkdtemp(prefix="aji-browser-test-")
    os.makedirs(out, exist_ok=True)

    server = None
    tmp = tempfile.mkdtemp(prefix="aji-browser-model-")
    try:
        if args.base_url:
            base = args.base_url.rstrip("/")
        else:
            server = serve_util.Server(serve_util.make_tiny_model(os.path.join(tmp, "model")))
            base = server.base
        b = Browser(chromedriver, chromium, 1280, 900)
        try:
            b.get(base + "/")
            title = b.js("return document.title;")
            assert "aji" in title, "unexpected page title %r" % title
            # Short, reproducible replies: settings are plain inputs that the page reads at send time.
            b.js("document.getElementById('max_tokens').value = '24';"
                 "document.getElementById('temperature').value = '0.8';")

            # Enter during an IME composition must not send (a Korean syllable is still being built).
            b.type(b.find("#input"), "안")
            b.js("document.getElementById('input').dispatchEvent(new KeyboardEvent('keydown',"
                 "{key: 'Enter', isComposing: true, bubbles: true, cancelable: true}));")
            time.sleep(0.3)
            assert not b.find_all(".msg.user"), "Enter while composing sent the message"
            b.js("document.getElementById('input').value = '';")

            send_and_wait(b, "Hello, who are you?")
            send_and_wait(b, "안녕하세요! 한국어로 대답해 주세요.")
            # Regenerate replaces the last reply: still two assistant bubbles afterwards.
            n_done = len(b.find_all(".msg.assistant[data-done='1']"))
            b.click(b.find("#regen"))
            wait_for(lambda: len(b.find_all(".msg.assistant[data-done='1']")) == n_done, 60, "the regenerated reply")
            wait_for(lambda: b.js("return !document.getElementById('send').disabled;"), 60, "regenerate to end")
            n_assistant = len(b.find_all(".msg.assistant"))
            assert n_assistant == 2, "after Regenerate there are %d assistant replies, expected 2" % n_assistant
            reply = b.js("const m = document.querySelectorAll('.msg.assistant .body'); return m[m.length-1].textContent;")
            assert reply, "the regenerated reply is empty"

            check_not_blank(b.screenshot(), os.path.join(out, "chat_desktop.png"), "desktop")

            # Phone size: the same conversation, no sideways scrolling, the Send button on screen.
            b.set_size(390, 844)
            time.sleep(0.5)
            inner = b.js("return [window.innerWidth, document.documentElement.scrollWidth,"
                         " document.getElementById('send').getBoundingClientRect().right];")
            print("phone: innerWidth %d, scrollWidth %d, send button right edge %.0f" % tuple(inner))
            assert inner[1] <= inner[0], "the page scrolls sideways on a phone (%d > %d)" % (inner[1], inner[0])
            assert inner[2] <= inner[0], "the Send button is off screen on a phone"
            check_not_blank(b.screenshot(), os.path.join(out, "chat_phone.png"), "phone")

            # New chat empties the conversation.
            b.click(b.find("#newchat"))
            assert not b.find_all(".msg"), "New chat left messages on the page"
            b.set_size(1280, 900)

            # Stop. A tiny model writes a whole reply in milliseconds, faster than a WebDriver click,
            # so the page's fetch is wrapped to hand the reply on in 16-byte pieces, 100 ms apart
            # (client side only: the request, the AbortController and the server are the real ones).
            b.js(THROTTLE_FETCH)
            b.js("document.getElementById('max_tokens').value = '400';")
            b.type(b.find("#input"), "Write a long story.\ue007")
            wait_for(lambda: b.js("const m = document.querySelector('.msg.assistant.streaming .body');"
                                  " return m && m.textContent.length > 0;"), 30, "the reply to start streaming")
            b.click(b.find("#stop"))
            wait_for(lambda: b.find_all(".msg.assistant[data-done='1']"), 30, "the stopped reply")
            status = b.js("return document.getElementById('status').textContent;")
            print("stop: status after Stop: %s" % status)
            assert "stopped" in status, "Stop did not stop the reply (status %r)" % status
            assert b.js("return !document.getElementById('send').disabled && "
                        "document.getElementById('stop').disabled;"), "the buttons did not return after Stop"
            kept = b.js("const m = document.querySelectorAll('.msg.assistant .body'); return m[m.length-1].textContent;")
            assert kept, "the part of the reply received before Stop was not kept"
            b.click(b.find("#newchat"))
        except Exception:
            dump_page(b, out)
            raise
        finally:
            b.close()
        if server:
            rc = server.stop()
            assert rc == 0, "aji serve exited with %d on SIGTERM:\n%s" % (rc, server.log_text())
            api_key_flow(chromedriver, chromium, os.path.join(tmp, "model"), out)
    except Exception:
        if server:
            print("--- aji serve log ---\n" + server.log_text())
        raise
    finally:
        if server:
            server.__exit__(None, None, None)
        shutil.rmtree(tmp, ignore_errors=True)
    print("browser test passed; screenshots in " + out)


if __name__ == "__main__":
    main()
