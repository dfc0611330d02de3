// The console's entry point: hash routing between the four pages, the API-key prompt, and the
// service indicator in the top bar. Loaded as a module from this origin (CSP: script-src 'self').
import { getJSON, onKeyNeeded, storedKey, storeKey } from "./api.js";
import { initChat, refreshModels } from "./chat.js";
import { showBuilds } from "./builds.js";
import { startHealth, stopHealth } from "./health.js";
import { showModels } from "./models.js";
import { h } from "./dom.js";

const $ = (id) => document.getElementById(id);
const PAGES = {
  chat: () => refreshModels(),
  models: () => showModels(),
  builds: () => showBuilds(),
  health: () => startHealth(),
};

// --- the API key prompt: one dialog, shared by every call that got a 401 -------------------------
let waiting = null;

function askForKey(error) {
  if (waiting) return waiting;
  const dialog = $("key-dialog");
  $("key-error").textContent = storedKey() ? error.message : "";
  $("key-input").value = "";
  waiting = new Promise((resolve) => {
    const submit = (event) => {
      event.preventDefault();
      const key = $("key-input").value.trim();
      if (!key) return;
      storeKey(key);
      $("key-form").removeEventListener("submit", submit);
      dialog.close();
      waiting = null;
      resolve();
    };
    $("key-form").addEventListener("submit", submit);
  });
  dialog.addEventListener("cancel", (event) => event.preventDefault(), { once: true });
  if (!dialog.open) dialog.showModal();
  $("key-input").focus();
  return waiting;
}

// --- pages ------------------------------------------------------------------------------------------
function pageName() {
  const name = location.hash.replace(/^#/, "");
  return name in PAGES ? name : "chat";
}

async function show() {
  const name = pageName();
  for (const link of document.querySelectorAll(".tabs a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  for (const page of Object.keys(PAGES)) $(`page-${page}`).hidden = page !== name;
  if (name !== "health") stopHealth();
  document.title = `${name[0].toUpperCase()}${name.slice(1)} · Foundry console`;
  try {
    await PAGES[name]();
    document.body.dataset.ready = name;
  } catch (error) {
    const body = $(`page-${name}`);
    body.querySelector(".load-error")?.remove();
    body.prepend(h("p", { class: "error load-error card" }, `Could not load this page: ${error.message}`));
  }
}

async function connect() {
  const state = $("service-state");
  try {
    const status = await getJSON("/openai/status");
    state.textContent = `v${status.version} · ${status.providers.join(", ")} · ${location.host}`;
    state.className = "service-state up";
  } catch (error) {
    state.textContent = `not connected: ${error.message}`;
    state.className = "service-state down";
    throw error;
  }
}

async function main() {
  onKeyNeeded(askForKey);
  initChat();
  document.addEventListener("models-changed", () => refreshModels().catch(() => {}));
  window.addEventListener("hashchange", show);
  await connect();
  await show();
}

main().catch((error) => console.warn("console:", error.message));
