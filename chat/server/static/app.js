// The web chat: keeps the conversation in the page, sends it to
// /v1/chat/completions as a stream, and renders each reply as Markdown.
// Model text reaches the page only through DOMPurify (or as plain text).
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "llamabin.apiKey";
const SYSTEM_STORE = "llamabin.system";

const chat = {
  messages: [], // {role, content} sent with every request
  controller: null, // aborts the reply being streamed
};

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

function renderMarkdown(el, text) {
  el.innerHTML = DOMPurify.sanitize(marked.parse(text));
}

function addMessage(role, text) {
  $("empty").hidden = true;
  const el = document.createElement("div");
  el.className = `message ${role}`;
  const body = document.createElement("div");
  body.className = "body";
  if (role === "assistant") renderMarkdown(body, text);
  else body.textContent = text;
  el.append(body);
  $("messages").append(el);
  el.scrollIntoView({ block: "end" });
  return el;
}

function showError(el, message) {
  el.classList.add("error");
  const note = document.createElement("p");
  note.className = "error-text";
  note.textContent = message;
  el.append(note);
  el.scrollIntoView({ block: "end" });
}

// Follow a growing reply, unless the reader has scrolled up to read.
function follow(el) {
  const bottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
  if (bottom) el.scrollIntoView({ block: "end" });
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
  document.body.classList.toggle("busy", busy);
}

async function errorMessage(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const data = await response.json();
    if (data && data.error && data.error.message) message = data.error.message;
  } catch (_) {
    // not JSON: keep the status line
  }
  if (response.status === 401) {
    $("settings").open = true;
    message += " (enter the server's API key in the settings above)";
  }
  return message;
}

// Server-sent events: yields the text after each "data: ".
async function* sseData(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (line.startsWith("data: ")) yield line.slice(6);
      }
    }
  }
}

function requestBody() {
  const system = $("system").value.trim();
  const messages = system ? [{ role: "system", content: system }, ...chat.messages] : chat.messages;
  const body = { messages, stream: true };
  const temperature = parseFloat($("temperature").value);
  if (!Number.isNaN(temperature)) body.temperature = temperature;
  return JSON.stringify(body);
}

async function streamReply(el, signal) {
  const body = el.querySelector(".body");
  let reply = "";
  let pending = false;
  const response = await fetch("/v1/chat/completions", {
    method: "POST", headers: headers(), body: requestBody(), signal,
  });
  if (!response.ok) throw new Error(await errorMessage(response));
  try {
    for await (const data of sseData(response.body)) {
      if (data === "[DONE]") break;
      const event = JSON.parse(data);
      if (event.error) throw new Error(event.error.message);
      const piece = event.choices && event.choices[0] && event.choices[0].delta.content;
      if (!piece) continue;
      reply += piece;
      if (!pending) { // re-render at most once a frame, however fast tokens come
        pending = true;
        requestAnimationFrame(() => { pending = false; renderMarkdown(body, reply); follow(el); });
      }
    }
  } finally {
    renderMarkdown(body, reply);
    el.dataset.done = "true";
    // A stopped or failed reply keeps what was written so far.
    if (reply) chat.messages.push({ role: "assistant", content: reply });
  }
}

async function send(text) {
  chat.messages.push({ role: "user", content: text });
  addMessage("user", text);
  const el = addMessage("assistant", "");
  el.classList.add("streaming");
  chat.controller = new AbortController();
  setBusy(true);
  try {
    await streamReply(el, chat.controller.signal);
  } catch (err) {
    if (err.name === "AbortError") {
      el.classList.add("stopped");
    } else {
      showError(el, err.message || String(err));
      if (chat.messages[chat.messages.length - 1].role === "user") chat.messages.pop();
    }
  } finally {
    el.classList.remove("streaming");
    chat.controller = null;
    setBusy(false);
    $("prompt").focus();
  }
}

function submit(event) {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || chat.controller) return;
  $("prompt").value = "";
  send(text);
}

async function showModel() {
  try {
    const response = await fetch("/v1/models", { headers: headers() });
    if (response.ok) $("model").textContent = (await response.json()).data[0].id;
  } catch (_) {
    // the name is a nicety; the chat works without it
  }
}

function setup() {
  marked.use({ gfm: true, breaks: true });
  DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A") { node.target = "_blank"; node.rel = "noopener noreferrer"; }
  });
  $("api-key").value = localStorage.getItem(KEY_STORE) || "";
  $("system").value = localStorage.getItem(SYSTEM_STORE) || "";
  $("api-key").addEventListener("change", (e) => { localStorage.setItem(KEY_STORE, e.target.value.trim()); showModel(); });
  $("system").addEventListener("change", (e) => localStorage.setItem(SYSTEM_STORE, e.target.value));
  $("composer").addEventListener("submit", submit);
  $("settings-form").addEventListener("submit", (e) => e.preventDefault());
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) submit(e);
  });
  $("stop").addEventListener("click", () => chat.controller && chat.controller.abort());
  $("new-chat").addEventListener("click", () => {
    if (chat.controller) chat.controller.abort();
    chat.messages = [];
    for (const el of document.querySelectorAll(".message")) el.remove();
    $("empty").hidden = false;
  });
  showModel();
  $("prompt").focus();
}

document.addEventListener("DOMContentLoaded", setup);
