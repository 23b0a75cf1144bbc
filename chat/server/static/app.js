// The web chat: keeps the conversation in the page, sends it to
// /v1/chat/completions as a stream, and renders each reply as Markdown.
// Model text reaches the page only through DOMPurify (or as plain text).
// With tools given in the settings, a reply's tool calls are shown as the
// function's name and its arguments, and the next messages typed are sent
// as their results, one a call.
"use strict";

// The page's own elements, looked up once at start-up, before any reply is
// on the page: a later lookup by id could find an element a reply put there.
let ui = null;

function findElements() {
  const byId = (id) => document.getElementById(id);
  return Object.freeze({
    apiKey: byId("api-key"), composer: byId("composer"), empty: byId("empty"),
    messages: byId("messages"), model: byId("model"), newChat: byId("new-chat"),
    prompt: byId("prompt"), send: byId("send"), settings: byId("settings"),
    settingsForm: byId("settings-form"), stop: byId("stop"), system: byId("system"),
    temperature: byId("temperature"), toolChoice: byId("tool-choice"), tools: byId("tools"),
    toolsError: byId("tools-error"),
  });
}

// A reply may format text, not imitate the page: no form or control a
// reader could mistake for ours (or that would post to another site), and
// no id or name that could shadow one of our elements (DOM clobbering).
const PURIFY = {
  FORBID_TAGS: [
    "form", "input", "textarea", "select", "option", "optgroup", "datalist",
    "button", "fieldset", "legend", "label", "output", "dialog",
  ],
  FORBID_ATTR: ["id", "name", "form", "formaction"],
  SANITIZE_DOM: true, // the default, relied on: no id or name that shadows a document property
};

const KEY_STORE = "llamabin.apiKey";
const SYSTEM_STORE = "llamabin.system";
const TOOLS_STORE = "llamabin.tools";

const chat = {
  messages: [], // {role, content, tool_calls?, tool_call_id?} sent with every request
  controller: null, // aborts the reply being streamed
  pending: [], // the last reply's tool calls still waiting for their results
};

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = ui.apiKey.value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

function renderMarkdown(el, text) {
  el.innerHTML = DOMPurify.sanitize(marked.parse(text), PURIFY);
}

function addMessage(role, text) {
  ui.empty.hidden = true;
  const el = document.createElement("div");
  el.className = `message ${role}`;
  const body = document.createElement("div");
  body.className = "body";
  if (role === "assistant") renderMarkdown(body, text);
  else body.textContent = text;
  el.append(body);
  ui.messages.append(el);
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
  ui.send.disabled = busy;
  ui.stop.disabled = !busy;
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
    ui.settings.open = true;
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

// The tools typed in the settings: a list, or null for none; a mistake is
// shown beside them and stops the send.
function tools() {
  const text = ui.tools.value.trim();
  ui.toolsError.hidden = true;
  if (!text) return null;
  let value;
  try {
    value = JSON.parse(text);
  } catch (err) {
    ui.settings.open = true;
    ui.toolsError.textContent = `Tools: not valid JSON (${err.message})`;
    ui.toolsError.hidden = false;
    throw new Error("The tools in the settings are not valid JSON");
  }
  return Array.isArray(value) ? value : [value];
}

function requestBody() {
  const system = ui.system.value.trim();
  const messages = system ? [{ role: "system", content: system }, ...chat.messages] : chat.messages;
  const body = { messages, stream: true };
  const temperature = parseFloat(ui.temperature.value);
  if (!Number.isNaN(temperature)) body.temperature = temperature;
  const given = tools();
  if (given) Object.assign(body, { tools: given, tool_choice: ui.toolChoice.value });
  return JSON.stringify(body);
}

// Streamed calls come in pieces, joined by their index: the id and name
// first, then the arguments' text.
function addCallDeltas(calls, deltas) {
  for (const d of deltas) {
    const call = calls[d.index] || (calls[d.index] = { id: "", type: "function", function: { name: "", arguments: "" } });
    if (d.id) call.id = d.id;
    if (d.function && d.function.name) call.function.name += d.function.name;
    if (d.function && d.function.arguments) call.function.arguments += d.function.arguments;
  }
}

function prettyJson(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch (_) {
    return text;
  }
}

// Each call as its function's name and its arguments, as plain text.
function showCalls(el, calls) {
  for (const call of calls) {
    const box = document.createElement("div");
    box.className = "tool-call";
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = `\u2192 ${call.function.name}()`;
    const args = document.createElement("pre");
    args.textContent = prettyJson(call.function.arguments);
    box.append(name, args);
    el.append(box);
  }
  const hint = document.createElement("p");
  hint.className = "tool-hint";
  hint.textContent = calls.length === 1
    ? "Type the function's result as your next message."
    : `Type the ${calls.length} results as your next messages, in this order.`;
  el.append(hint);
  el.scrollIntoView({ block: "end" });
}

function promptPlaceholder() {
  const next = chat.pending[0];
  ui.prompt.placeholder = next
    ? `Result of ${next.function.name} (Enter sends)`
    : "Message (Enter sends, Shift+Enter for a new line)";
}

async function streamReply(el, signal) {
  const body = el.querySelector(".body"); // before any reply text is inside it
  let reply = "";
  let pending = false;
  const calls = [];
  const response = await fetch("/v1/chat/completions", {
    method: "POST", headers: headers(), body: requestBody(), signal,
  });
  if (!response.ok) throw new Error(await errorMessage(response));
  try {
    for await (const data of sseData(response.body)) {
      if (data === "[DONE]") break;
      const event = JSON.parse(data);
      if (event.error) throw new Error(event.error.message);
      const delta = event.choices && event.choices[0] && event.choices[0].delta;
      if (delta && delta.tool_calls) addCallDeltas(calls, delta.tool_calls);
      const piece = delta && delta.content;
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
    const called = calls.filter(Boolean);
    if (called.length) {
      showCalls(el, called);
      chat.messages.push({ role: "assistant", content: reply || null, tool_calls: called });
      chat.pending = [...called];
      promptPlaceholder();
    } else if (reply) {
      chat.messages.push({ role: "assistant", content: reply });
    }
  }
}

// A typed result of the first call waiting for one; the reply is asked for
// once every call has its result.
function addResult(text) {
  const call = chat.pending.shift();
  chat.messages.push({ role: "tool", tool_call_id: call.id, content: text });
  const el = addMessage("tool", "");
  const body = el.querySelector(".body");
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = `${call.function.name} returned`;
  const result = document.createElement("pre");
  result.textContent = text;
  body.append(name, result);
  promptPlaceholder();
  return chat.pending.length === 0;
}

async function send(text) {
  if (chat.pending.length) {
    if (!addResult(text)) return;
  } else {
    chat.messages.push({ role: "user", content: text });
    addMessage("user", text);
  }
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
    ui.prompt.focus();
  }
}

function submit(event) {
  event.preventDefault();
  const text = ui.prompt.value.trim();
  if (!text || chat.controller) return;
  ui.prompt.value = "";
  send(text);
}

async function showModel() {
  try {
    const response = await fetch("/v1/models", { headers: headers() });
    if (response.ok) ui.model.textContent = (await response.json()).data[0].id;
  } catch (_) {
    // the name is a nicety; the chat works without it
  }
}

function setup() {
  ui = findElements();
  // A task list's boxes as characters: an <input> would be removed (PURIFY).
  const checkbox = ({ checked }) => (checked ? "\u2611 " : "\u2610 ");
  marked.use({ gfm: true, breaks: true, renderer: { checkbox } });
  DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A") { node.target = "_blank"; node.rel = "noopener noreferrer"; }
  });
  ui.apiKey.value = localStorage.getItem(KEY_STORE) || "";
  ui.system.value = localStorage.getItem(SYSTEM_STORE) || "";
  ui.tools.value = localStorage.getItem(TOOLS_STORE) || "";
  ui.tools.addEventListener("change", (e) => localStorage.setItem(TOOLS_STORE, e.target.value));
  ui.apiKey.addEventListener("change", (e) => { localStorage.setItem(KEY_STORE, e.target.value.trim()); showModel(); });
  ui.system.addEventListener("change", (e) => localStorage.setItem(SYSTEM_STORE, e.target.value));
  ui.composer.addEventListener("submit", submit);
  ui.settingsForm.addEventListener("submit", (e) => e.preventDefault());
  ui.prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) submit(e);
  });
  ui.stop.addEventListener("click", () => chat.controller && chat.controller.abort());
  ui.newChat.addEventListener("click", () => {
    if (chat.controller) chat.controller.abort();
    chat.messages = [];
    chat.pending = [];
    promptPlaceholder();
    for (const el of ui.messages.querySelectorAll(":scope > .message")) el.remove();
    ui.empty.hidden = false;
  });
  showModel();
  ui.prompt.focus();
}

document.addEventListener("DOMContentLoaded", setup);
