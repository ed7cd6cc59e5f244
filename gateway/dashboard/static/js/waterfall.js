// A trace's spans as a waterfall: one row per span in tree order (children under their parent,
// siblings by start time), a bar from start to end on a shared time axis, coloured by service.
import { s, h, clear, fmtDuration } from "./core.js";

const ROW_H = 22;
const LABEL_W = 300;
const W = 1000;
const PALETTE = ["#3257d6", "#1f9d55", "#b35fd6", "#e08a1e", "#0f9bb3", "#c2457a", "#6b7d2f"];

/** Spans in display order with their depth: [{span, depth}]. Pure. */
export function orderSpans(spans) {
  const ids = new Set(spans.map((sp) => sp.span_id));
  const children = new Map();
  const roots = [];
  for (const sp of spans) {
    if (sp.parent_span_id && ids.has(sp.parent_span_id)) {
      if (!children.has(sp.parent_span_id)) children.set(sp.parent_span_id, []);
      children.get(sp.parent_span_id).push(sp);
    } else {
      roots.push(sp);
    }
  }
  const byStart = (a, b) => (Number(a.start_time) || 0) - (Number(b.start_time) || 0);
  const out = [];
  const seen = new Set();
  const walk = (sp, depth) => {
    if (seen.has(sp.span_id)) return;
    seen.add(sp.span_id);
    out.push({ span: sp, depth });
    for (const child of (children.get(sp.span_id) || []).sort(byStart)) walk(child, depth + 1);
  };
  roots.sort(byStart).forEach((sp) => walk(sp, 0));
  return out;
}

function spanLabel(span) {
  const a = span.attributes || {};
  let name = span.name || "span";
  const fanOut = ["map", "parallel"].includes(a["flow.step.type"]);
  if (a["flow.map.index"] !== undefined && a["flow.map.index"] !== null && (fanOut || a["flow.map.index"] > 0)) {
    name += ` #${a["flow.map.index"]}`;
  }
  if (a["flow.attempt"] > 1) name += ` (attempt ${a["flow.attempt"]})`;
  if (a["flow.pool.hit"] === true) name += " · warm";
  else if (a["flow.pool.hit"] === false) name += " · cold";
  return `${name} · ${span.service || "?"}`;
}

function isError(sp) {
  const status = sp.status;
  const code = typeof status === "object" && status ? status.code || status.status_code : status;
  return String(code || "").toLowerCase().includes("error");
}

/** Render into `container`; `spans` as GET /v1/workflows/{id}/spans items. */
export function renderWaterfall(container, spans) {
  clear(container);
  const valid = (spans || []).filter((sp) => Number.isFinite(Number(sp.start_time)));
  if (!valid.length) {
    container.append(h("p", { class: "empty", id: "no-spans", text: "no spans recorded" }));
    return;
  }
  const rows = orderSpans(valid);
  const t0 = Math.min(...valid.map((sp) => Number(sp.start_time)));
  const t1 = Math.max(...valid.map((sp) => Number(sp.end_time ?? sp.start_time)));
  const total = Math.max(t1 - t0, 1e-6);
  const plotW = W - LABEL_W - 70;
  const services = [...new Set(valid.map((sp) => sp.service || "?"))];
  const colour = (service) => PALETTE[services.indexOf(service) % PALETTE.length];
  const height = rows.length * ROW_H + 24;
  const svg = s("svg", { class: "waterfall", viewBox: `0 0 ${W} ${height}`, role: "img", "aria-label": "span waterfall" });
  for (let i = 0; i <= 4; i++) {
    const x = LABEL_W + (plotW * i) / 4;
    svg.append(
      s("line", { x1: x, x2: x, y1: 0, y2: height - 18, stroke: "#eef0f5" }),
      s("text", { class: "dur", x, y: height - 4, "text-anchor": "middle", text: fmtDuration((total * i) / 4) }),
    );
  }
  rows.forEach(({ span, depth }, i) => {
    const start = Number(span.start_time);
    const end = Number(span.end_time ?? span.start_time);
    const x = LABEL_W + ((start - t0) / total) * plotW;
    const width = Math.max(2, ((end - start) / total) * plotW);
    const y = i * ROW_H;
    const attrs = Object.entries(span.attributes || {}).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`);
    const fill = isError(span) ? "#d93b3b" : colour(span.service || "?");
    const label = spanLabel(span);
    svg.append(s("g", { class: "row", dataset: { spanId: span.span_id || "" } },
      s("rect", { class: "bg", x: 0, y, width: W, height: ROW_H, fill: "transparent" }),
      s("text", { x: 6 + depth * 14, y: y + 15, text: label.length > 44 - depth * 2 ? label.slice(0, 43 - depth * 2) + "…" : label }),
      s("rect", { x, y: y + 5, width, height: ROW_H - 10, rx: 3, fill }),
      s("text", { class: "dur", x: Math.min(x + width + 6, W - 60), y: y + 15, text: fmtDuration(end - start) }),
      s("title", { text: [label, fmtDuration(end - start), span.status_message || "", ...attrs].filter(Boolean).join("\n") }),
    ));
  });
  container.append(svg);
  container.append(h("p", { class: "muted small" },
    services.map((name) => h("span", { style: { color: colour(name), marginRight: "14px" }, text: `■ ${name}` }))));
}
