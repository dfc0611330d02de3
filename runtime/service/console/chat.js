// Chat: streams through the service's own /v1/chat/completions (SSE). Stop aborts the fetch,
// which closes the connection, which cancels the sequence in the service. Conversations
// live in this browser's localStorage; nothing is sent anywhere but this service.
import { events, getJSON, postJSON } from "./api.js";
import { clear, h } from "./dom.js";
import { renderMarkdown } from "./markdown.js";

const STORE = "foundry.conversations";
const CURRENT = "foundry.currentConversation";
const $ = (id) => document.getElementById(id);

let conversations = load();
let current = null;
let running = null; // { controller } while a reply streams

function load() {
  try {
    const list = JSON.parse(localStorage.getItem(STORE) || "[]");
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

function save() {
  localStorage.setItem(STORE, JSON.stringify(conversations.slice(0, 100)));
  if (current) localStorage.setItem(CURRENT, current.id);
}

function newConversation() {
  const conversation = {
    id: crypto.randomUUID(),
    title: "New chat",
    messages: [],
    updated: Date.now(),
  };
  conversations.unshift(conversation);
  return conversation;
}

// --- the conversation list ------------------------------------------------------------------
function renderList() {
  const list = clear($("conversation-list"));
  for (const conversation of conversations) {
    const item = h(
      "li",
      { class: conversation === current ? "current" : null },
      h("button", { type: "button", class: "open", title: conversation.title, onclick: () => open(conversation) }, conversation.title),
      h("button", { type: "button", class: "delete", title: "Delete", "aria-label": "Delete conversation", onclick: () => remove(conversation) }, "×"),
    );
    list.append(item);
  }
}

function open(conversation) {
  if (running) return;
  current = conversation;
  if (conversation.system !== undefined) $("system-prompt").value = conversation.system;
  if (conversation.model && [...$("chat-model").options].some((o) => o.value === conversation.model)) {
    $("chat-model").value = conversation.model;
  }
  save();
  renderList();
  renderMessages();
}

function remove(conversation) {
  if (running && conversation === current) return;
  conversations = conversations.filter((c) => c !== conversation);
  if (conversation === current) current = conversations[0] || newConversation();
  save();
  renderList();
  renderMessages();
}

// --- messages ----------------------------------------------------------------------------------
function renderMessages() {
  const box = clear($("messages"));
  if (!current.messages.length) {
    box.append(
      h("div", { class: "chat-empty" },
        h("h2", {}, "Chat with a local model"),
        h("p", {}, "Replies stream from this service's /v1/chat/completions. Conversations stay in this browser."),
      ),
    );
    return;
  }
  for (const message of current.messages) box.append(messageView(message).root);
  box.scrollTop = box.scrollHeight;
}

function messageView(message) {
  const content = h("div", { class: "content md" });
  const reasoningText = h("div", { class: "reasoning-text" });
  const reasoning = h("details", { class: "reasoning", hidden: true }, h("summary", {}, "Reasoning"), reasoningText);
  const tools = h("div", { class: "tools" });
  const stats = h("div", { class: "stats" });
  const body = h("div", { class: "body" }, reasoning, content, tools);
  const who = message.role === "user" ? "You" : message.role === "error" ? "Error" : message.model || "Assistant";
  const root = h("div", { class: `message ${message.role}` }, h("div", { class: "who" }, who), body, stats);
  const view = { root, content, reasoning, reasoningText, tools, stats };
  fill(view, message);
  return view;
}

function fill(view, message) {
  if (message.role === "user" || message.role === "error") {
    view.content.textContent = message.content;
  } else {
    view.content.replaceChildren(renderMarkdown(message.content || ""));
  }
  if (message.reasoning) {
    view.reasoning.hidden = false;
    view.reasoningText.textContent = message.reasoning;
  }
  view.tools.replaceChildren(
    ...(message.tool_calls || []).map((call) =>
      h("div", { class: "tool-call" },
        h("div", { class: "tool-name" }, `tool call: ${call.name || "?"}`),
        h("pre", {}, h("code", {}, prettyArguments(call.arguments))),
      ),
    ),
  );
  view.stats.replaceChildren(...statsOf(message.stats));
  if (message.stats && message.stats.tokPerSec) view.stats.dataset.tokPerSec = String(message.stats.tokPerSec);
}

function prettyArguments(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text || "";
  }
}

function statsOf(stats) {
  if (!stats) return [];
  const parts = [];
  if (stats.stopped) parts.push(h("span", { class: "pill warn" }, "stopped"));
  if (stats.finish && !stats.stopped) parts.push(h("span", {}, `finish: ${stats.finish}`));
  if (stats.promptTokens !== undefined) parts.push(h("span", {}, `prompt ${stats.promptTokens} tok`));
  if (stats.completionTokens !== undefined) {
    const counted = stats.counted ? " (chunks seen)" : "";
    parts.push(h("span", { class: "completion-tokens" }, `reply ${stats.completionTokens} tok${counted}`));
  }
  if (stats.tokPerSec) parts.push(h("span", { class: "tok-s" }, `${stats.tokPerSec.toFixed(1)} tok/s`));
  if (stats.ttft !== undefined) parts.push(h("span", {}, `first token ${Math.round(stats.ttft * 1000)} ms`));
  return parts;
}

// --- sending --------------------------------------------------------------------------------
function wireMessages() {
  const system = $("system-prompt").value.trim();
  const history = current.messages
    .filter((m) => m.role === "user" || m.role === "assistant")
    .map((m) => ({ role: m.role, content: m.content || "" }));
  return system ? [{ role: "system", content: system }, ...history] : history;
}

function numberOr(input, fallback) {
  const value = Number(input.value);
  return input.value !== "" && Number.isFinite(value) ? value : fallback;
}

async function send(text) {
  const model = $("chat-model").value;
  if (!model || running) return;
  current.messages.push({ role: "user", content: text });
  if (current.title === "New chat") current.title = text.slice(0, 60);
  current.model = model;
  current.system = $("system-prompt").value;
  current.updated = Date.now();
  const reply = { role: "assistant", model, content: "", reasoning: "", tool_calls: [] };
  const body = {
    model,
    messages: wireMessages(),
    stream: true,
    stream_options: { include_usage: true },
    temperature: numberOr($("temperature"), 0.7),
    max_tokens: Math.round(numberOr($("max-tokens"), 512)),
  };
  current.messages.push(reply);
  renderList();
  renderMessages();
  const box = $("messages");
  const view = messageView(reply);
  box.lastElementChild.replaceWith(view.root);
  view.root.classList.add("streaming");
  const controller = new AbortController();
  running = { controller };
  setRunning(true);
  const started = performance.now();
  let first = null;
  let last = null;
  let chunks = 0;
  let pending = false;
  const redraw = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      fill(view, reply);
      box.scrollTop = box.scrollHeight;
    });
  };
  const stats = {};
  try {
    const response = await postJSON("/v1/chat/completions", body, { signal: controller.signal });
    for await (const event of events(response)) {
      if (event.error) throw new Error(event.error.message || "the stream failed");
      if (event.usage) {
        stats.promptTokens = event.usage.prompt_tokens;
        stats.completionTokens = event.usage.completion_tokens;
      }
      for (const choice of event.choices || []) {
        const delta = choice.delta || {};
        const got = delta.content || delta.reasoning_content || delta.tool_calls;
        if (got) {
          first ??= performance.now();
          last = performance.now();
          chunks += 1;
        }
        if (delta.content) reply.content += delta.content;
        if (delta.reasoning_content) reply.reasoning += delta.reasoning_content;
        for (const call of delta.tool_calls || []) {
          const slot = (reply.tool_calls[call.index ?? 0] ??= { name: "", arguments: "" });
          if (call.function?.name) slot.name += call.function.name;
          if (call.function?.arguments) slot.arguments += call.function.arguments;
        }
        if (choice.finish_reason) stats.finish = choice.finish_reason;
      }
      redraw();
    }
  } catch (error) {
    if (error.name === "AbortError") {
      stats.stopped = true;
    } else {
      current.messages.push({ role: "error", content: error.message });
    }
  } finally {
    running = null;
    setRunning(false);
    if (stats.completionTokens === undefined) Object.assign(stats, { completionTokens: chunks, counted: true });
    if (first !== null) stats.ttft = (first - started) / 1000;
    if (first !== null && last > first && stats.completionTokens > 1) {
      stats.tokPerSec = (stats.completionTokens - 1) / ((last - first) / 1000);
    }
    reply.stats = stats;
    reply.tool_calls = reply.tool_calls.filter(Boolean);
    current.updated = Date.now();
    save();
    renderMessages();
  }
}

function setRunning(isRunning) {
  $("send").hidden = isRunning;
  $("stop").hidden = !isRunning;
  $("chat-model").disabled = isRunning;
}

// --- models -----------------------------------------------------------------------------------
export async function refreshModels() {
  const select = $("chat-model");
  const catalog = await getJSON("/foundry/catalog");
  const chat = [];
  for (const alias of catalog.aliases) {
    for (const v of alias.variants) if (v.task === "chat" && v.cached) chat.push({ id: v.id, loaded: v.loaded });
  }
  for (const m of catalog.local) if ((m.task || "chat") === "chat") chat.push({ id: m.id, loaded: m.loaded });
  chat.sort((a, b) => Number(b.loaded) - Number(a.loaded) || a.id.localeCompare(b.id));
  const previous = select.value || current?.model;
  select.replaceChildren(
    ...chat.map((m) => h("option", { value: m.id }, m.loaded ? `${m.id} · loaded` : m.id)),
  );
  if (!chat.length) select.append(h("option", { value: "" }, "no chat model cached: see Models"));
  if (chat.some((m) => m.id === previous)) select.value = previous;
}

export function initChat() {
  const currentId = localStorage.getItem(CURRENT);
  current = conversations.find((c) => c.id === currentId) || conversations[0] || newConversation();
  renderList();
  renderMessages();
  if (current.system) $("system-prompt").value = current.system;
  $("new-chat").addEventListener("click", () => {
    if (running) return;
    current = current.messages.length ? newConversation() : current;
    save();
    renderList();
    renderMessages();
    $("prompt").focus();
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || running) return;
    $("prompt").value = "";
    send(text);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => running?.controller.abort());
}
