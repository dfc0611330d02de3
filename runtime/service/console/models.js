// Models: the catalog as this machine sees it (device and execution provider per variant, the
// variant picked here and why), cached/loaded state, download with live progress (the
// /openai/download line stream), load with a TTL, unload.
import { getJSON, lines, postJSON, request } from "./api.js";
import { bytes, clear, h, seconds } from "./dom.js";

const $ = (id) => document.getElementById(id);
const ORT = { cpu: "CPUExecutionProvider", cuda: "CUDAExecutionProvider", dml: "DmlExecutionProvider", qnn: "QNNExecutionProvider", webgpu: "WebGpuExecutionProvider" };
const downloads = new Map(); // id -> {percent, text} while a download runs (survives redraws)

let ps = new Map();

export async function showModels() {
  const [catalog, running] = await Promise.all([getJSON("/foundry/catalog"), getJSON("/foundry/ps")]);
  ps = new Map(running.models.map((m) => [m.model, m]));
  const hw = catalog.hardware;
  $("hardware-summary").textContent =
    `This machine: providers ${hw.providers.join(", ")} · devices ${hw.devices.join(", ")} · memory ${bytes(hw.memory_bytes)}`;
  const body = clear($("models-body"));
  if (catalog.local.length) body.append(localCard(catalog.local));
  // Aliases with something cached come first; the rest keep the catalog's order.
  const cachedFirst = [...catalog.aliases].sort((a, b) => hasCached(b) - hasCached(a));
  for (const alias of cachedFirst) body.append(aliasCard(alias));
  if (!catalog.aliases.length && !catalog.local.length) body.append(h("div", { class: "empty card" }, "The catalog is empty."));
}

function hasCached(alias) {
  return alias.variants.some((v) => v.cached) ? 1 : 0;
}

function aliasCard(alias) {
  const picked = alias.variants.find((v) => v.id === alias.picked);
  return h("section", { class: "card model-card", dataset: { alias: alias.alias } },
    h("header", {},
      h("h2", {}, alias.display_name || alias.alias),
      h("code", { class: "muted" }, alias.alias),
      h("span", { class: "pill" }, alias.task),
      h("span", { class: "muted" }, `${alias.publisher} · ${alias.license}`),
      picked ? h("span", { class: "pill accent" }, `runs here as ${picked.device}/${picked.provider}`) : h("span", { class: "pill warn" }, "no variant runs here"),
    ),
    h("div", { class: "table-wrap" },
      h("table", {},
        h("thead", {}, h("tr", {},
          h("th", {}, "Variant"), h("th", {}, "Device"), h("th", {}, "Execution provider"),
          h("th", {}, "Precision"), h("th", { class: "num" }, "Size"), h("th", {}, "Why"), h("th", {}, "State"), h("th", {}),
        )),
        h("tbody", {}, alias.variants.map((v) => variantRow(v, v.id === alias.picked))),
      ),
    ),
  );
}

function variantRow(v, isPicked) {
  return h("tr", { class: isPicked ? "picked" : null, dataset: { variant: v.id } },
    h("td", {}, h("code", {}, v.id), v.prebuilt ? null : h("div", { class: "note" }, "compiled from its checkpoint on download")),
    h("td", {}, v.device.toUpperCase()),
    h("td", {}, h("code", {}, ORT[v.provider] || v.provider)),
    h("td", {}, v.precision),
    h("td", { class: "num" }, bytes(v.size)),
    h("td", { class: "reason" }, v.reason),
    h("td", {}, state(v.id, v.cached, v.loaded)),
    h("td", {}, actions(v.id, v.cached, v.loaded, v.runs_here)),
  );
}

function localCard(models) {
  return h("section", { class: "card model-card", dataset: { alias: "local" } },
    h("header", {}, h("h2", {}, "Local builds"), h("span", { class: "muted" }, "cached models the catalog does not list")),
    h("div", { class: "table-wrap" },
      h("table", {},
        h("thead", {}, h("tr", {},
          h("th", {}, "Model"), h("th", {}, "Task"), h("th", {}, "Device"), h("th", {}, "Execution provider"),
          h("th", {}, "Precision"), h("th", { class: "num" }, "Size"), h("th", {}, "State"), h("th", {}),
        )),
        h("tbody", {}, models.map((m) =>
          h("tr", { dataset: { variant: m.id } },
            h("td", {}, h("code", {}, m.id)),
            h("td", {}, m.task || "–"),
            h("td", {}, (m.device || "cpu").toUpperCase()),
            h("td", {}, h("code", {}, ORT[m.provider || "cpu"] || m.provider)),
            h("td", {}, m.precision || "–"),
            h("td", { class: "num" }, bytes(m.size)),
            h("td", {}, state(m.id, true, m.loaded)),
            h("td", {}, actions(m.id, true, m.loaded, true)),
          ))),
      ),
    ),
  );
}

function state(id, cached, loaded) {
  const pills = [];
  if (loaded) {
    const row = ps.get(id);
    const ttl = row && row.expires_in !== null ? ` · unloads in ${seconds(row.expires_in)}` : row ? " · stays loaded" : "";
    pills.push(h("span", { class: "pill ok" }, `loaded${ttl}`));
  } else if (cached) {
    pills.push(h("span", { class: "pill accent" }, "cached"));
  } else {
    pills.push(h("span", { class: "pill" }, "not cached"));
  }
  return h("div", { class: "state" }, pills);
}

function actions(id, cached, loaded, runsHere) {
  const box = h("div", { class: "variant-actions" });
  const running = downloads.get(id);
  if (running) {
    box.append(progressView(running));
    if (!running.done) return box; // a finished download keeps its full bar beside the buttons
  }
  if (!cached) {
    box.append(h("button", { type: "button", class: "small primary", disabled: !runsHere, onclick: () => download(id, box) }, "Download"));
  } else if (loaded) {
    box.append(h("button", { type: "button", class: "small", onclick: () => act(box, `/openai/unload/${encodeURIComponent(id)}`) }, "Unload"));
  } else {
    const ttl = h("input", { type: "number", min: "0", step: "60", placeholder: "TTL s", title: "Seconds idle before it unloads (empty: the service's default; 0: stay loaded)", "aria-label": "TTL in seconds" });
    box.append(ttl, h("button", { type: "button", class: "small", onclick: () => load(id, ttl.value, box) }, "Load"));
  }
  return box;
}

function progressView(progress) {
  const bar = h("progress", { max: "100", value: String(progress.percent), "aria-label": "download progress" });
  const text = h("span", { class: "progress-text" }, progress.text);
  progress.bar = bar;
  progress.label = text;
  return h("div", { class: "progress", role: "status" }, bar, text);
}

async function download(id, box) {
  const progress = { percent: 0, text: "starting…" };
  downloads.set(id, progress);
  box.replaceChildren(progressView(progress));
  let verdict = null;
  try {
    const response = await postJSON("/openai/download", { model: id });
    for await (const line of lines(response)) {
      if (line.startsWith("{")) {
        verdict = JSON.parse(line);
        continue;
      }
      const match = line.match(/^Total\s+([\d.]+)%\s*(.*)$/);
      if (!match) continue;
      progress.percent = Math.max(progress.percent, Number(match[1]));
      progress.text = `${progress.percent.toFixed(0)}% ${match[2]}`;
      progress.bar.value = progress.percent;
      progress.label.textContent = progress.text;
    }
    if (!verdict || !verdict.success) throw new Error(verdict?.errorMessage || "the download ended without a verdict");
    Object.assign(progress, { percent: 100, text: "downloaded", done: true });
  } catch (error) {
    downloads.delete(id);
    box.replaceChildren(h("span", { class: "error" }, error.message));
    return;
  }
  await refresh();
}

async function load(id, ttl, box) {
  const query = ttl === "" ? "" : Number(ttl) === 0 ? "?unload=false" : `?ttl=${encodeURIComponent(ttl)}`;
  await act(box, `/openai/load/${encodeURIComponent(id)}${query}`, "loading…");
}

async function act(box, path, busy = "…") {
  box.replaceChildren(h("span", { class: "muted" }, busy));
  try {
    await request(path);
  } catch (error) {
    box.replaceChildren(h("span", { class: "error" }, error.message));
    return;
  }
  await refresh();
}

async function refresh() {
  await showModels();
  document.dispatchEvent(new CustomEvent("models-changed"));
}
