// The web chat page served at `/`: one self-contained HTML document (no build step, no
// CDN, no external font or script, so it works offline), compiled into the binary.
//
// It talks to the server's own OpenAI API: POST /v1/chat/completions with stream:true, read
// with fetch + ReadableStream as server-sent events (`data: {chunk}` lines, `data: [DONE]`,
// `data: {"error":...}` for a failure after the stream started). Multi-turn history, a
// system prompt, temperature / top-p / max-tokens, stop (AbortController) and regenerate,
// new chat, an API key field (kept in localStorage, sent as `Authorization: Bearer`), errors
// shown in the conversation. Text is inserted with textContent (never parsed as HTML); the
// TextDecoder runs in stream mode so a UTF-8 character split across network chunks (Korean
// is 3 bytes a syllable) is decoded whole; Enter sends, Shift+Enter is a newline, and Enter
// while an IME is composing (Korean, Japanese, Chinese input) does nothing.
//
// Element ids used by tests/serve/browser_test.py: #input, #send, #stop, #regen, #newchat,
// #messages (children .msg.user / .msg.assistant / .msg.error, text in .body), #status.
#pragma once

#include <string_view>

namespace aji::serve {

inline std::string_view chat_page_html() {
  return R"AJIPAGE(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>aji chat</title>
<style>
:root { --bg:#fafafa; --fg:#1d1d1f; --muted:#6b6b70; --line:#dcdce0; --user:#e3ecff; --bot:#fff;
        --err:#fde8e8; --errfg:#9b1c1c; --accent:#2f5bd3; }
@media (prefers-color-scheme: dark) {
  :root { --bg:#17171a; --fg:#ececf0; --muted:#9a9aa3; --line:#33333a; --user:#263453; --bot:#212126;
          --err:#4a1f1f; --errfg:#ffb4b4; --accent:#7fa2ff; }
}
* { box-sizing: border-box; }
html, body { height: 100%; margin: 0; }
body { background: var(--bg); color: var(--fg); display: flex; flex-direction: column;
       font: 16px/1.5 system-ui, -apple-system, "Segoe UI", "Noto Sans", "Noto Sans CJK KR",
       "Apple SD Gothic Neo", "Malgun Gothic", sans-serif; }
header { display: flex; align-items: center; gap: 8px; padding: 8px 12px; border-bottom: 1px solid var(--line); }
header h1 { font-size: 18px; margin: 0; flex: 1; }
button { font: inherit; padding: 6px 12px; border: 1px solid var(--line); border-radius: 8px;
         background: var(--bot); color: var(--fg); cursor: pointer; }
button:disabled { opacity: .45; cursor: default; }
button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
#settings { display: none; padding: 8px 12px; border-bottom: 1px solid var(--line);
            grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 8px 12px; }
#settings.open { display: grid; }
#settings label { display: flex; flex-direction: column; font-size: 13px; color: var(--muted); }
#settings .wide { grid-column: 1 / -1; }
input, textarea { font: inherit; color: var(--fg); background: var(--bot); border: 1px solid var(--line);
                  border-radius: 8px; padding: 6px 8px; width: 100%; }
#messages { flex: 1; overflow-y: auto; padding: 12px; display: flex; flex-direction: column; gap: 10px; }
.msg { max-width: min(760px, 92%); padding: 8px 12px; border-radius: 12px; border: 1px solid var(--line);
       white-space: pre-wrap; overflow-wrap: anywhere; }
.msg .role { font-size: 12px; color: var(--muted); }
.msg.user { align-self: flex-end; background: var(--user); }
.msg.assistant { align-self: flex-start; background: var(--bot); }
.msg.assistant.streaming .body::after { content: "\258D"; color: var(--muted); }
.msg.error { align-self: stretch; max-width: none; background: var(--err); color: var(--errfg); }
#empty { color: var(--muted); text-align: center; margin: auto; }
footer { border-top: 1px solid var(--line); padding: 8px 12px; }
#row { display: flex; gap: 8px; align-items: flex-end; }
#input { resize: none; min-height: 44px; max-height: 40vh; }
#status { font-size: 12px; color: var(--muted); min-height: 1.2em; padding-top: 2px; }
@media (max-width: 520px) {
  body { font-size: 15px; }
  header, footer, #messages { padding-left: 8px; padding-right: 8px; }
  .msg { max-width: 100%; }
  button { padding: 6px 9px; }
  #row { flex-wrap: wrap; }
  #input { flex: 1 0 100%; }
  #send { flex: 1; }
}
</style>
</head>
<body>
<header>
  <h1>aji</h1>
  <button id="newchat" title="Start a new conversation">New chat</button>
  <button id="toggle" title="Settings" aria-expanded="false">Settings</button>
</header>
<section id="settings">
  <label class="wide">System prompt<textarea id="system" rows="2" placeholder="(none)"></textarea></label>
  <label>Temperature<input id="temperature" type="number" min="0" max="2" step="0.1" value="0.7"></label>
  <label>Top-p<input id="top_p" type="number" min="0" max="1" step="0.05" value="0.95"></label>
  <label>Max tokens<input id="max_tokens" type="number" min="1" step="1" value="256"></label>
  <label>Model<input id="model" type="text" value=""></label>
  <label class="wide">API key (servers started with --api-key; kept in this browser only)
    <input id="apikey" type="password" autocomplete="off" placeholder="(none)"></label>
</section>
<main id="messages" aria-live="polite"><p id="empty">Say something. 한국어도 됩니다.</p></main>
<footer>
  <div id="row">
    <textarea id="input" rows="1" placeholder="Message (Enter to send, Shift+Enter for a new line)"></textarea>
    <button id="send" class="primary">Send</button>
    <button id="stop" disabled>Stop</button>
    <button id="regen" disabled title="Generate the last reply again">Regenerate</button>
  </div>
  <div id="status"></div>
</footer>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const fields = ["system", "temperature", "top_p", "max_tokens", "model", "apikey"];
let history = [];          // [{role, content}] sent to the server (finished turns only)
let controller = null;     // AbortController of the request in flight

for (const f of fields) {  // settings survive a reload
  const v = localStorage.getItem("aji." + f);
  if (v !== null) $(f).value = v;
  $(f).addEventListener("change", () => localStorage.setItem("aji." + f, $(f).value));
}
$("toggle").onclick = () => {
  const open = $("settings").classList.toggle("open");
  $("toggle").setAttribute("aria-expanded", String(open));
};
if (!$("model").value) {
  fetch("/v1/models", { headers: authHeaders() }).then((r) => r.ok ? r.json() : null)
    .then((j) => { if (j && j.data && j.data.length && !$("model").value) $("model").value = j.data[0].id; })
    .catch(() => {});
}

function authHeaders() {
  const h = {};
  const key = $("apikey").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function addMessage(role, text) {
  const empty = $("empty");
  if (empty) empty.remove();
  const div = document.createElement("div");
  div.className = "msg " + role;
  const label = document.createElement("div");
  label.className = "role";
  label.textContent = role === "error" ? "error" : role;
  const body = document.createElement("div");
  body.className = "body";
  body.textContent = text;
  div.append(label, body);
  $("messages").append(div);
  scrollDown();
  return div;
}
function scrollDown() { const m = $("messages"); m.scrollTop = m.scrollHeight; }
function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
  $("regen").disabled = busy || history.length === 0;
}
function num(id, parse) {
  const v = parse($(id).value);
  return Number.isFinite(v) ? v : undefined;
}

// Streams one reply to the current history into a new assistant message.
async function complete() {
  const messages = [];
  const sys = $("system").value.trim();
  if (sys) messages.push({ role: "system", content: sys });
  messages.push(...history);
  const body = { model: $("model").value || "aji", messages, stream: true,
                 stream_options: { include_usage: true },
                 temperature: num("temperature", parseFloat), top_p: num("top_p", parseFloat),
                 max_tokens: num("max_tokens", (s) => parseInt(s, 10)) };
  const div = addMessage("assistant", "");
  div.classList.add("streaming");
  const out = div.querySelector(".body");
  let text = "", finish = null, usage = null, failed = false;
  const t0 = performance.now();
  controller = new AbortController();
  setBusy(true);
  $("status").textContent = "waiting for the model…";
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST", signal: controller.signal,
      headers: Object.assign({ "Content-Type": "application/json" }, authHeaders()),
      body: JSON.stringify(body) });
    if (!resp.ok) {
      let msg = resp.status + " " + resp.statusText;
      try { const j = await resp.json(); if (j.error && j.error.message) msg = resp.status + ": " + j.error.message; }
      catch (e) {}
      if (resp.status === 401) msg += " (set the API key in Settings)";
      throw new Error(msg);
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder("utf-8");
    let buf = "", done = false;
    while (!done) {
      const { value, done: eof } = await reader.read();
      if (eof) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, cut).replace(/\r$/, "");
        buf = buf.slice(cut + 1);
        if (!line.startsWith("data:")) continue;  // blank separators, ": ping" comments
        const data = line.slice(5).trim();
        if (data === "[DONE]") { done = true; break; }
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message || JSON.stringify(chunk.error));
        if (chunk.usage) usage = chunk.usage;
        for (const c of chunk.choices || []) {
          if (c.index !== 0) continue;
          if (c.delta && c.delta.content) { text += c.delta.content; out.textContent = text; scrollDown(); }
          if (c.finish_reason) finish = c.finish_reason;
        }
        if (text) $("status").textContent = "generating…";
      }
    }
  } catch (e) {
    failed = true;
    if (e.name === "AbortError") finish = "stopped";
    else addMessage("error", e.message || String(e));
  } finally {
    controller = null;
    div.classList.remove("streaming");
    if (text || !failed) history.push({ role: "assistant", content: text });
    else div.remove();  // nothing came: the user turn stays last, Regenerate asks again
    if (!text && !failed) out.textContent = "(empty reply)";
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    let s = finish ? "finish: " + finish + " · " : "";
    if (usage) s += usage.completion_tokens + " tokens · ";
    $("status").textContent = failed && finish !== "stopped" ? "failed after " + secs + " s" : s + secs + " s";
    setBusy(false);
    div.dataset.done = "1";
  }
}

function send() {
  const text = $("input").value;
  if (!text.trim() || controller) return;
  $("input").value = "";
  autosize();
  history.push({ role: "user", content: text });
  addMessage("user", text);
  complete();
}

$("send").onclick = send;
$("stop").onclick = () => { if (controller) controller.abort(); };
$("regen").onclick = () => {
  if (controller || history.length === 0) return;
  if (history[history.length - 1].role === "assistant") {  // drop the last reply and its bubble
    history.pop();
    const bubbles = $("messages").querySelectorAll(".msg.assistant");
    if (bubbles.length) bubbles[bubbles.length - 1].remove();
  }
  complete();  // the history now ends with the user's turn: ask again
};
$("newchat").onclick = () => {
  if (controller) controller.abort();
  history = [];
  $("messages").replaceChildren();
  const p = document.createElement("p");
  p.id = "empty";
  p.textContent = "New conversation.";
  $("messages").append(p);
  $("status").textContent = "";
  setBusy(false);
  $("input").focus();
};
function autosize() { const t = $("input"); t.style.height = "auto"; t.style.height = t.scrollHeight + 2 + "px"; }
$("input").addEventListener("input", autosize);
$("input").addEventListener("keydown", (e) => {
  // keyCode 229: some browsers end an IME composition with a keydown that is not flagged isComposing.
  if (e.key !== "Enter" || e.shiftKey || e.isComposing || e.keyCode === 229) return;
  e.preventDefault();
  send();
});
$("input").focus();
</script>
</body>
</html>
)AJIPAGE";
}

}  // namespace aji::serve
