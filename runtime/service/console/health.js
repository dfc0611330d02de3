// Health: providers, memory, loaded models, queue depth, tokens/s and time-to-first-token,
// last warnings. Samples /foundry/stats (the registry /metrics renders) every 2 s while the
// page is open; rates are differences between successive samples.
import { getJSON } from "./api.js";
import { bytes, clear, h, seconds, when } from "./dom.js";

const $ = (id) => document.getElementById(id);
const PERIOD_MS = 2000;
const KEEP = 90; // samples: three minutes
const history = []; // {t, tokPerSec, ttft}
let previous = null;
let timer = null;
let lastStats = null;

// Canvas colours come from the stylesheet: draw again when the system switches light/dark.
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
  if (lastStats && timer !== null) render(lastStats);
});

/** Draw the first sample (its failure is the page's), then sample every PERIOD_MS. */
export async function startHealth() {
  stopHealth();
  timer = 0;
  await sample();
  schedule();
}

function schedule() {
  if (timer === null) return; // the page was left meanwhile
  timer = setTimeout(async () => {
    try {
      await sample();
    } catch (error) {
      console.warn("health:", error.message);
    } finally {
      schedule();
    }
  }, PERIOD_MS);
}

export function stopHealth() {
  if (timer) clearTimeout(timer);
  timer = null;
}

async function sample() {
  const stats = await getJSON("/foundry/stats");
  const totals = stats.totals;
  if (previous) {
    const dt = stats.time - previous.time;
    const tokens = totals.completion_tokens - previous.totals.completion_tokens;
    const firsts = totals.ttft_count - previous.totals.ttft_count;
    const ttftSum = totals.ttft_seconds_sum - previous.totals.ttft_seconds_sum;
    history.push({ t: stats.time, tokPerSec: dt > 0 ? tokens / dt : 0, ttft: firsts > 0 ? ttftSum / firsts : null });
    if (history.length > KEEP) history.shift();
  }
  previous = stats;
  lastStats = stats;
  render(stats);
}

function tile(label, value, sub, key) {
  return h("div", { class: "card tile", dataset: { tile: key } },
    h("div", { class: "label" }, label), h("div", { class: "value" }, value), h("div", { class: "sub" }, sub || ""));
}

function render(stats) {
  const memory = stats.memory;
  const used = memory.total_bytes - memory.available_bytes;
  const last = history.at(-1);
  const body = $("health-body");
  const charts = body.querySelector(".charts") || h("div", { class: "charts" },
    chartCard("tokens", "Tokens per second", "generated, all models"),
    chartCard("ttft", "Time to first token", "mean over each 2 s window"),
  );
  clear(body);
  body.append(
    h("div", { class: "tiles" },
      tile("Service", `v${stats.version}`, `providers: ${stats.hardware.providers.join(", ")}`, "service"),
      tile("Memory", memory.total_bytes ? `${Math.round((100 * used) / memory.total_bytes)}%` : "–", `${bytes(used)} of ${bytes(memory.total_bytes)} · service ${bytes(memory.process_rss_bytes)}`, "memory"),
      tile("Loaded models", String(stats.loaded.length), stats.loaded.map((m) => m.model).join(", ") || "none", "loaded"),
      tile("Queue depth", String(stats.queue_depth), `${stats.generating} generating now`, "queue"),
      tile("Requests", String(Math.round(stats.totals.requests)), `${Math.round(stats.totals.failed_requests)} answered 4xx/5xx`, "requests"),
      tile("Tokens generated", String(Math.round(stats.totals.completion_tokens)), `${Math.round(stats.totals.prompt_tokens)} prompt tokens read`, "tokens"),
    ),
    charts,
    h("div", { class: "health-grid" },
      h("div", { class: "card" }, h("h2", {}, "Loaded models"), loadedTable(stats.loaded)),
      h("div", { class: "card" }, h("h2", {}, "Last warnings and errors"), errorList(stats.errors)),
    ),
  );
  drawChart(charts.querySelector('[data-chart="tokens"]'), history.map((s) => s.tokPerSec), (v) => `${v.toFixed(1)} tok/s`, last ? last.tokPerSec : null);
  drawChart(charts.querySelector('[data-chart="ttft"]'), history.map((s) => s.ttft), (v) => seconds(v), lastValue(history.map((s) => s.ttft)));
}

function lastValue(values) {
  for (let i = values.length - 1; i >= 0; i -= 1) if (values[i] !== null) return values[i];
  return null;
}

function loadedTable(models) {
  if (!models.length) return h("p", { class: "muted" }, "No model is loaded. Load one from Models, or send a chat message.");
  return h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "Model"), h("th", { class: "num" }, "Size"), h("th", { class: "num" }, "Idle"), h("th", { class: "num" }, "Unloads in"), h("th", { class: "num" }, "Active"))),
    h("tbody", {}, models.map((m) => h("tr", {},
      h("td", {}, h("code", {}, m.model)),
      h("td", { class: "num" }, bytes(m.size)),
      h("td", { class: "num" }, seconds(m.idle_seconds)),
      h("td", { class: "num" }, m.expires_in === null ? "never" : seconds(m.expires_in)),
      h("td", { class: "num" }, String(m.active_requests)),
    ))),
  );
}

function errorList(errors) {
  if (!errors.length) return h("p", { class: "muted" }, "Nothing logged at warning level or above since the service started.");
  return h("ul", { class: "log" }, errors.map((e) =>
    h("li", { class: `lvl-${e.level}` }, `${when(e.time)} ${e.level} ${e.logger}: ${e.message}`)));
}

function chartCard(key, title, sub) {
  return h("div", { class: "card chart", dataset: { chart: key } },
    h("div", { class: "chart-head" }, h("h2", {}, title), h("span", { class: "now" }, "–")),
    h("div", { class: "muted" }, sub),
    h("canvas", { width: "600", height: "140", "aria-label": title, role: "img" }),
  );
}

function drawChart(card, values, format, now) {
  card.dataset.samples = String(values.filter((v) => v !== null).length);
  card.querySelector(".now").textContent = now === null || now === undefined ? "–" : format(now);
  const canvas = card.querySelector("canvas");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 600;
  const height = canvas.clientHeight || 140;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  const style = getComputedStyle(document.documentElement);
  const accent = style.getPropertyValue("--accent").trim();
  const grid = style.getPropertyValue("--border").trim();
  const muted = style.getPropertyValue("--muted").trim();
  ctx.clearRect(0, 0, width, height);
  const present = values.filter((v) => v !== null);
  const top = Math.max(...present, 0) * 1.15 || 1;
  const left = 4;
  const bottom = height - 16;
  ctx.strokeStyle = grid;
  ctx.lineWidth = 1;
  ctx.fillStyle = muted;
  ctx.font = "11px system-ui, sans-serif";
  for (const fraction of [0, 0.5, 1]) {
    const y = bottom - fraction * (bottom - 20);
    ctx.beginPath();
    ctx.moveTo(left, y + 0.5);
    ctx.lineTo(width, y + 0.5);
    ctx.stroke();
    if (fraction) ctx.fillText(format(top * fraction), left + 2, y - 3);
  }
  ctx.fillText(`last ${Math.round((KEEP * PERIOD_MS) / 60000)} min`, left + 2, height - 3);
  if (!present.length) return;
  const step = (width - left) / Math.max(KEEP - 1, 1);
  const x0 = width - (values.length - 1) * step;
  ctx.strokeStyle = accent;
  ctx.lineWidth = 2;
  ctx.fillStyle = accent;
  ctx.beginPath();
  let drawing = false;
  const points = [];
  values.forEach((v, i) => {
    if (v === null) {
      drawing = false;
      return;
    }
    const x = x0 + i * step;
    const y = bottom - (v / top) * (bottom - 20);
    if (drawing) ctx.lineTo(x, y);
    else ctx.moveTo(x, y);
    drawing = true;
    points.push([x, y]);
  });
  ctx.stroke();
  for (const [x, y] of points.length < 20 ? points : points.slice(-1)) {
    ctx.beginPath();
    ctx.arc(x, y, 2.5, 0, 2 * Math.PI);
    ctx.fill();
  }
}
