// Small SVG charts over time buckets: a line chart (gaps where a bucket has no value) and a stacked
// bar chart. Both take buckets [{t0, t1, ...}] and draw a time axis with a few labels.
import { s, clear } from "./core.js";

const W = 640;
const H = 220;
const M = { left: 48, right: 14, top: 26, bottom: 28 };

function niceMax(value) {
  if (!(value > 0)) return 1;
  const exp = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * exp) return step * exp;
  }
  return 10 * exp;
}

function timeLabel(t, spanS) {
  const d = new Date(t * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  if (spanS > 2 * 86400) return `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}h`;
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function frame(svg, buckets, yMax, yFormat) {
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const t0 = buckets[0].t0;
  const t1 = buckets[buckets.length - 1].t1;
  const x = (t) => M.left + ((t - t0) / (t1 - t0 || 1)) * plotW;
  const y = (v) => M.top + plotH - (v / yMax) * plotH;
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    svg.append(
      s("line", { class: "grid", x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }),
      s("text", { x: M.left - 6, y: y(v) + 3, "text-anchor": "end", text: yFormat(v) }),
    );
  }
  svg.append(
    s("line", { class: "axis", x1: M.left, x2: W - M.right, y1: y(0), y2: y(0) }),
    s("line", { class: "axis", x1: M.left, x2: M.left, y1: M.top, y2: y(0) }),
  );
  const labels = 5;
  for (let i = 0; i <= labels; i++) {
    const t = t0 + ((t1 - t0) * i) / labels;
    svg.append(s("text", {
      x: x(t), y: H - 8, "text-anchor": i === 0 ? "start" : i === labels ? "end" : "middle", text: timeLabel(t, t1 - t0),
    }));
  }
  return { x, y, plotW, plotH };
}

function legend(svg, series) {
  const g = s("g", { class: "legend" });
  let offset = M.left;
  for (const item of series) {
    g.append(
      s("rect", { x: offset, y: 8, width: 10, height: 10, rx: 2, fill: item.color }),
      s("text", { x: offset + 14, y: 17, text: item.name }),
    );
    offset += 24 + item.name.length * 6.2;
  }
  svg.append(g);
}

function emptyNote(svg, text) {
  svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", text }));
}

/** series: [{name, color, values: [number|null per bucket]}] */
export function lineChart(container, buckets, series, { yMax, yFormat = (v) => String(Math.round(v)), title = "" } = {}) {
  clear(container);
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  const all = series.flatMap((item) => item.values).filter((v) => v !== null && v !== undefined && Number.isFinite(v));
  const top = yMax !== undefined ? yMax : niceMax(Math.max(0, ...all) * 1.1);
  const { x, y } = frame(svg, buckets, top, yFormat);
  for (const item of series) {
    let d = "";
    let pen = false;
    item.values.forEach((v, i) => {
      if (v === null || v === undefined || !Number.isFinite(v)) {
        pen = false;
        return;
      }
      const b = buckets[i];
      const px = x((b.t0 + b.t1) / 2);
      const py = y(Math.min(v, top));
      d += `${pen ? "L" : "M"} ${px.toFixed(1)} ${py.toFixed(1)} `;
      pen = true;
      svg.append(s("circle", { cx: px, cy: py, r: 2.6, fill: item.color },
        s("title", { text: `${item.name}: ${yFormat(v)}` })));
    });
    if (d) svg.append(s("path", { class: "line", d, stroke: item.color }));
  }
  legend(svg, series);
  if (!all.length) emptyNote(svg, "no data in this window");
  container.append(svg);
}

/** stacks: [{name, color, values: [number per bucket]}], drawn bottom-up in this order. */
export function barChart(container, buckets, stacks, { yFormat = (v) => String(Math.round(v)), title = "" } = {}) {
  clear(container);
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  const totals = buckets.map((_, i) => stacks.reduce((sum, st) => sum + (st.values[i] || 0), 0));
  const top = niceMax(Math.max(0, ...totals) * 1.1);
  const { x, y } = frame(svg, buckets, top, yFormat);
  buckets.forEach((b, i) => {
    const left = x(b.t0) + 1;
    const width = Math.max(1, x(b.t1) - x(b.t0) - 2);
    let base = 0;
    for (const st of stacks) {
      const v = st.values[i] || 0;
      if (v > 0) {
        svg.append(s("rect", { x: left, y: y(base + v), width, height: y(base) - y(base + v), fill: st.color },
          s("title", { text: `${st.name}: ${yFormat(v)}` })));
      }
      base += v;
    }
  });
  legend(svg, stacks);
  if (!totals.some((v) => v > 0)) emptyNote(svg, "no workflows in this window");
  container.append(svg);
}

/** Equal time buckets covering [now - windowS, now]. */
export function makeBuckets(windowS, count, nowS = Date.now() / 1000) {
  const size = windowS / count;
  const start = nowS - windowS;
  return Array.from({ length: count }, (_, i) => ({ t0: start + i * size, t1: start + (i + 1) * size }));
}
