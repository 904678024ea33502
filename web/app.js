// calpaca chat page: multi-turn chat over POST /v1/chat/completions with SSE streaming.
// Plain browser JavaScript, no build step; compiled into the server binary (web/embed.cmake).
"use strict";

const $ = (id) => document.getElementById(id);
const SLIDERS = ["max_tokens", "top_p", "temperature", "top_k", "repetition_penalty"];
// the original Chinese-LLaMA-Alpaca-2 gradio demo's defaults
const DEFAULTS = { max_tokens: 512, top_p: 0.9, temperature: 0.2, top_k: 40, repetition_penalty: 1.1 };
let defaultSystem = "You are a helpful assistant. 你是一个乐于助人的助手。";

const state = {
  history: [],          // [{role, content}] of the current conversation
  system: null,         // the system prompt this conversation started with
  controller: null,     // AbortController of the running request
};

// ------------------------------------------------------------------ rendering

function esc(s) {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function inline(s) {
  return esc(s)
    .replace(/`([^`\n]+)`/g, "<code>$1</code>")
    .replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^*])\*([^*\n]+)\*/g, "$1<em>$2</em>");
}

function blocks(text) {
  let html = "";
  for (const para of text.split(/\n{2,}/)) {
    if (!para.trim()) continue;
    const lines = para.split("\n");
    const h = /^(#{1,6})\s+(.*)$/.exec(lines[0]);
    if (h && lines.length === 1) {
      html += `<h${h[1].length + 2}>${inline(h[2])}</h${h[1].length + 2}>`;
    } else if (lines.every((l) => /^\s*([-*+]|\d+[.)])\s+/.test(l))) {
      const ordered = /^\s*\d/.test(lines[0]);
      const items = lines.map((l) => `<li>${inline(l.replace(/^\s*([-*+]|\d+[.)])\s+/, ""))}</li>`).join("");
      html += ordered ? `<ol>${items}</ol>` : `<ul>${items}</ul>`;
    } else {
      html += `<p>${lines.map(inline).join("<br>")}</p>`;
    }
  }
  return html;
}

// Markdown subset: fenced code blocks (also while still open during streaming), inline code,
// bold, italics, headings, lists, paragraphs. Everything is escaped first: model output is text.
function renderMarkdown(src) {
  const parts = src.split("```");
  let html = "";
  parts.forEach((part, i) => {
    if (i % 2 === 0) {
      html += blocks(part);
      return;
    }
    let lang = "";
    let code = part;
    const nl = part.indexOf("\n");
    if (nl >= 0 && /^[\w+#.-]*$/.test(part.slice(0, nl).trim())) {
      lang = part.slice(0, nl).trim();
      code = part.slice(nl + 1);
    }
    html += `<pre><code${lang ? ` class="language-${esc(lang)}"` : ""}>${esc(code.replace(/\n$/, ""))}</code></pre>`;
  });
  return html;
}

function addMessage(role, text) {
  const el = document.createElement("div");
  el.className = `msg ${role}`;
  const head = document.createElement("div");
  head.className = "role";
  head.textContent = role === "user" ? "你 You" : "助手 Assistant";
  const content = document.createElement("div");
  content.className = "content";
  el.append(head, content);
  if (role === "assistant") {
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy";
    copy.textContent = "复制 Copy";
    copy.addEventListener("click", () => copyText(el.dataset.raw || "", copy));
    head.append(copy);
  }
  setContent(el, text);
  $("messages").append(el);
  scrollDown();
  return el;
}

function setContent(el, text) {
  el.dataset.raw = text;
  const content = el.querySelector(".content");
  if (el.classList.contains("user")) content.textContent = text;
  else content.innerHTML = renderMarkdown(text);
}

function scrollDown() {
  const m = $("messages");
  m.scrollTop = m.scrollHeight;
}

// Streaming re-renders at most once per frame: tokens can arrive faster than a page can lay out.
let renderPending = null;
function renderSoon(el, text) {
  const first = renderPending === null;
  renderPending = { el, text };
  if (!first) return;
  requestAnimationFrame(() => {
    if (!renderPending) return;  // the stream ended and rendered its final text already
    const { el: e, text: t } = renderPending;
    renderPending = null;
    const m = $("messages");
    const atBottom = m.scrollHeight - m.scrollTop - m.clientHeight < 40;
    setContent(e, t);
    if (atBottom) scrollDown();
  });
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (e) {
    const ta = document.createElement("textarea");
    ta.value = text;
    document.body.append(ta);
    ta.select();
    document.execCommand("copy");
    ta.remove();
  }
  const old = button.textContent;
  button.textContent = "已复制 Copied";
  setTimeout(() => (button.textContent = old), 1200);
}

function status(text) {
  $("status").textContent = text;
}

// ------------------------------------------------------------------ settings

function settings() {
  const s = {};
  for (const k of SLIDERS) s[k] = Number($(k).value);
  return s;
}

function showSliders() {
  for (const k of SLIDERS) $(`${k}_v`).textContent = $(k).value;
}

function save() {
  const s = settings();
  s.system = $("system").value;
  localStorage.setItem("calpaca.settings", JSON.stringify(s));
  localStorage.setItem("calpaca.api_key", $("api_key").value);
  localStorage.setItem("calpaca.history", JSON.stringify({ history: state.history, system: state.system }));
}

function load() {
  let s = {};
  try {
    s = JSON.parse(localStorage.getItem("calpaca.settings") || "{}");
  } catch (e) { s = {}; }
  for (const k of SLIDERS) $(k).value = s[k] ?? DEFAULTS[k];
  $("system").value = s.system ?? defaultSystem;
  $("api_key").value = localStorage.getItem("calpaca.api_key") || "";
  try {
    const h = JSON.parse(localStorage.getItem("calpaca.history") || "{}");
    state.history = Array.isArray(h.history) ? h.history : [];
    state.system = h.system ?? null;
  } catch (e) { state.history = []; }
  for (const m of state.history) addMessage(m.role, m.content);
  showSliders();
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api_key").value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function fetchProps() {
  try {
    const r = await fetch("/props", { headers: headers() });
    if (r.status === 401) {
      status("需要 API key — this server needs an API key (settings panel).");
      return;
    }
    const p = await r.json();
    $("model").textContent = `${p.model} · ${p.chat_template || "no chat template"} · ${p.total_slots} slots × ${p.n_ctx} tokens`;
    if (p.default_system_prompt) {
      const stored = JSON.parse(localStorage.getItem("calpaca.settings") || "{}");
      defaultSystem = p.default_system_prompt;
      if (stored.system === undefined) $("system").value = defaultSystem;
    }
  } catch (e) {
    status(`cannot reach the server: ${e.message}`);
  }
}

// ------------------------------------------------------------------ chat

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
  $("clear").disabled = busy;
}

async function send() {
  const text = $("input").value.trim();
  if (!text || state.controller) return;
  $("input").value = "";
  if (state.history.length === 0) state.system = $("system").value;
  state.history.push({ role: "user", content: text });
  addMessage("user", text);
  save();

  const messages = [];
  if (state.system) messages.push({ role: "system", content: state.system });
  messages.push(...state.history);
  const s = settings();
  const body = {
    messages, stream: true, stream_options: { include_usage: true },
    max_tokens: s.max_tokens, temperature: s.temperature, top_p: s.top_p, top_k: s.top_k,
    repetition_penalty: s.repetition_penalty,
  };
  const el = addMessage("assistant", "");
  el.classList.add("streaming");
  state.controller = new AbortController();
  setBusy(true);
  status("生成中 generating…");
  let answer = "";
  let usage = null;
  let finish = null;
  let firstAt = 0;
  const t0 = performance.now();
  try {
    const res = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: state.controller.signal,
    });
    if (!res.ok) {
      const j = await res.json().catch(() => null);
      throw new Error(j && j.error ? j.error.message : `HTTP ${res.status}`);
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder("utf-8");  // stream mode: a character split across reads is kept whole
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          if (chunk.usage) usage = chunk.usage;
          for (const c of chunk.choices || []) {
            if (c.delta && c.delta.content) {
              if (!firstAt) firstAt = performance.now();
              answer += c.delta.content;
              renderSoon(el, answer);
            }
            if (c.finish_reason) finish = c.finish_reason;
          }
        }
      }
    }
    const secs = (performance.now() - (firstAt || t0)) / 1000;
    const n = usage ? usage.completion_tokens : 0;
    status(`${n} tokens, ${secs > 0 ? (n / secs).toFixed(1) : "-"} tokens/s` +
           (finish === "length" ? " — 达到长度上限 (max tokens reached)" : ""));
  } catch (e) {
    if (e.name === "AbortError") {
      status("已停止 stopped");
    } else {
      el.classList.add("error");
      if (!answer) setContent(el, `错误 Error: ${e.message}`);
      status(`错误 Error: ${e.message}`);
      if (!answer) state.history.pop();  // the question got no answer: let the user resend it
    }
  } finally {
    renderPending = null;
    if (answer) setContent(el, answer);
    scrollDown();
    el.classList.remove("streaming");
    if (answer) state.history.push({ role: "assistant", content: answer });
    else if (state.history.length && state.history[state.history.length - 1].role === "user" && !el.classList.contains("error"))
      state.history.push({ role: "assistant", content: "" });
    state.controller = null;
    setBusy(false);
    save();
  }
}

function clearHistory() {
  state.history = [];
  state.system = null;
  $("messages").textContent = "";
  status("");
  save();
}

// ------------------------------------------------------------------ wiring

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  send();
});
$("input").addEventListener("keydown", (e) => {
  // Enter sends, Shift+Enter adds a line; never while an IME (Chinese input) is composing
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
    e.preventDefault();
    send();
  }
});
$("stop").addEventListener("click", () => state.controller && state.controller.abort());
$("clear").addEventListener("click", clearHistory);
$("reset_settings").addEventListener("click", () => {
  for (const k of SLIDERS) $(k).value = DEFAULTS[k];
  $("system").value = defaultSystem;
  showSliders();
  save();
});
for (const k of SLIDERS) $(k).addEventListener("input", () => { showSliders(); save(); });
$("system").addEventListener("change", save);
$("api_key").addEventListener("change", () => { save(); fetchProps(); });

load();
fetchProps();
