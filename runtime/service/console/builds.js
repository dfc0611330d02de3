// Builds: each cached artifact's build.json (source and revision, recipe, tools, validation,
// wall time, peak memory) as a readable card, with the raw JSON one click away.
import { getJSON } from "./api.js";
import { bytes, clear, h, seconds } from "./dom.js";

const $ = (id) => document.getElementById(id);

export async function showBuilds() {
  const rows = await getJSON("/foundry/builds");
  const body = clear($("builds-body"));
  if (!rows.length) body.append(h("div", { class: "empty card" }, "Nothing is cached yet. Build one with foundry-build MODEL --target cpu-int4, or download one from Models."));
  for (const row of rows) body.append(card(row));
}

function fact(label, ...value) {
  return h("div", {}, h("dt", {}, label), h("dd", {}, value));
}

function short(digest) {
  return digest ? String(digest).replace(/^sha256:/, "").slice(0, 12) : "–";
}

function card(row) {
  const b = row.build;
  const head = h("header", {},
    h("h2", {}, row.id),
    b ? h("span", { class: "pill accent" }, b.target_name) : h("span", { class: "pill" }, "no build record"),
    b && b.synthetic ? h("span", { class: "pill warn" }, "synthetic weights") : null,
    h("span", { class: "muted" }, bytes(row.size)),
  );
  if (!b) {
    return h("section", { class: "card build-card", dataset: { model: row.id } }, head,
      h("p", { class: "muted" }, `Downloaded as a prebuilt artifact${row.metadata.source ? ` from ${row.metadata.source}` : ""}; it carries no build.json.`),
      raw("Manifest metadata", row.metadata),
    );
  }
  return h("section", { class: "card build-card", dataset: { model: row.id } }, head,
    h("dl", { class: "facts" },
      fact("Source", h("code", {}, b.source)),
      fact("Revision", b.revision ? h("code", {}, b.revision) : "– (local folder)"),
      fact("Source digest", h("code", { title: b.source_digest }, short(b.source_digest))),
      fact("Recipe", `${b.recipe} `, h("span", { class: "muted" }, `(${b.recipe_file})`)),
      fact("Recipe digest", h("code", { title: b.recipe_digest }, short(b.recipe_digest))),
      fact("Backend", b.backend?.backend || b.backend?.name || "–", b.backend?.olive_passes ? h("div", { class: "muted" }, b.backend.olive_passes.join(" → ")) : null),
      fact("Build key", h("code", { title: b.build_key }, short(b.build_key))),
      fact("Wall time", seconds(b.seconds)),
      fact("Peak memory", bytes(b.peak_rss_bytes)),
    ),
    h("h3", {}, "Validation"),
    validation(b.validation || {}),
    h("h3", {}, "Tool versions"),
    h("dl", { class: "facts" }, Object.entries(b.tools || {}).map(([name, version]) => fact(name, h("code", {}, version)))),
    raw("Raw build.json", b),
  );
}

function flatten(value, prefix = "", out = []) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    for (const [key, inner] of Object.entries(value)) flatten(inner, prefix ? `${prefix}.${key}` : key, out);
  } else {
    out.push([prefix, value]);
  }
  return out;
}

function shown(value) {
  if (typeof value === "number") {
    if (Number.isInteger(value)) return String(value);
    return Math.abs(value) < 1e-3 ? value.toExponential(3) : String(Number(value.toPrecision(6)));
  }
  if (Array.isArray(value)) return value.length > 8 ? `[${value.slice(0, 8).join(", ")}, … ${value.length} items]` : `[${value.join(", ")}]`;
  if (value === null || value === undefined) return "–";
  return String(value);
}

function validation(record) {
  const rows = flatten(record);
  if (!rows.length) return h("p", { class: "muted" }, "No validation figures recorded.");
  return h("dl", { class: "facts validation" }, rows.map(([key, value]) => fact(key, h("span", { class: "mono" }, shown(value)))));
}

function raw(label, value) {
  return h("details", { class: "raw" }, h("summary", {}, label), h("pre", {}, h("code", {}, JSON.stringify(value, null, 2))));
}
