// A small Markdown renderer that builds DOM nodes (never an HTML string), so a reply can hold
// `<script>` or `<img onerror>` and it shows as text. Covers what chat models write: fenced
// code (also while a fence is still open mid-stream), headings, lists, quotes, paragraphs,
// `code`, **bold**, *italic*, and links (http/https only, opened without a referrer).
import { h } from "./dom.js";

const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*([^*]+)\*\*|__([^_]+)__|\*([^*\s][^*]*)\*|_([^_\s][^_]*)_|\[([^\]]+)\]\(([^)\s]+)\)/g;

function inline(text) {
  const out = [];
  let last = 0;
  for (const match of text.matchAll(INLINE)) {
    if (match.index > last) out.push(text.slice(last, match.index));
    const [whole, , code, bold1, bold2, em1, em2, label, url] = match;
    if (code !== undefined) out.push(h("code", {}, code.trim()));
    else if (bold1 || bold2) out.push(h("strong", {}, inline(bold1 || bold2)));
    else if (em1 || em2) out.push(h("em", {}, inline(em1 || em2)));
    else if (label) out.push(link(label, url) || whole);
    last = match.index + whole.length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

function link(label, url) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return null;
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") return null;
  return h("a", { href: parsed.href, target: "_blank", rel: "noopener noreferrer" }, inline(label));
}

function codeBlock(lang, lines) {
  return h(
    "div",
    { class: "code-block" },
    lang ? h("span", { class: "code-lang" }, lang) : null,
    h("pre", {}, h("code", { class: lang ? `language-${lang}` : null }, lines.join("\n"))),
  );
}

function paragraph(lines) {
  const parts = [];
  lines.forEach((line, i) => {
    if (i) parts.push(h("br"));
    parts.push(inline(line));
  });
  return h("p", {}, parts);
}

const LIST_ITEM = /^\s*([-*+]|\d+[.)])\s+(.*)$/;

/** Render `text` as a DocumentFragment of safe nodes. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^\s*(```+|~~~+)\s*([\w+#.-]*)/);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i += 1; // the closing fence (or the end of a reply still streaming)
      fragment.append(codeBlock(fence[2], body));
      continue;
    }
    if (!line.trim()) {
      i += 1;
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      fragment.append(h(`h${Math.min(heading[1].length + 1, 6)}`, {}, inline(heading[2])));
      i += 1;
      continue;
    }
    if (line.startsWith(">")) {
      const quoted = [];
      while (i < lines.length && lines[i].startsWith(">")) quoted.push(lines[i++].replace(/^>\s?/, ""));
      fragment.append(h("blockquote", {}, renderMarkdown(quoted.join("\n"))));
      continue;
    }
    const item = line.match(LIST_ITEM);
    if (item) {
      const ordered = /\d/.test(item[1]);
      const list = h(ordered ? "ol" : "ul");
      while (i < lines.length) {
        const next = lines[i].match(LIST_ITEM);
        if (!next) break;
        list.append(h("li", {}, inline(next[2])));
        i += 1;
      }
      fragment.append(list);
      continue;
    }
    const para = [];
    while (
      i < lines.length &&
      lines[i].trim() &&
      !LIST_ITEM.test(lines[i]) &&
      !/^(#{1,6}\s|>|\s*```|\s*~~~)/.test(lines[i])
    ) {
      para.push(lines[i++]);
    }
    fragment.append(paragraph(para));
  }
  return fragment;
}
