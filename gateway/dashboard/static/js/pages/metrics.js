// Metrics: the aggregate of a window (/v1/metrics/aggregate) and charts over time.
// Throughput, durations and success rate come from the window's workflows (/v1/metrics/history),
// bucketed by creation time. Pool efficiency per bucket comes from nested trailing aggregates:
// the dispatches of (now - k·b, now - (k-1)·b] are the difference of two aggregates' counters.
import { api, h, clear, fmtNumber, fmtDuration, errorText, setLive } from "../core.js";
import { barChart, lineChart, makeBuckets, bucketIndex, percentile } from "../charts.js";

const WINDOWS = [["1h", 3600], ["6h", 21600], ["24h", 86400], ["7d", 604800]];
const BUCKETS = 24;
const POOL_BUCKETS = 8;
const REFRESH_MS = 30000;
const FINISHED = new Set(["completed", "failed", "cancelled"]);

function card(label, value, id) {
  return h("div", { class: "card", id }, h("div", { class: "value", text: value }), h("div", { class: "label", text: label }));
}

const pct = (v) => (v === null || v === undefined ? "—" : `${fmtNumber(v, 1)}%`);

function chartPanel(id, title) {
  const box = h("div", { id });
  return [h("section", { class: "panel" }, h("h2", { text: title }), box), box];
}

/** Per-bucket series from history items. Pure. */
export function seriesFromHistory(items, buckets) {
  const n = buckets.length;
  const created = { completed: Array(n).fill(0), failed: Array(n).fill(0), cancelled: Array(n).fill(0), active: Array(n).fill(0) };
  const durations = Array.from({ length: n }, () => []);
  for (const item of items) {
    const t = Date.parse(item.created_time || item.start_time) / 1000;
    const i = bucketIndex(buckets, t);
    if (i < 0) continue;
    const key = FINISHED.has(item.status) ? item.status : "active";
    created[key][i] += 1;
    if (FINISHED.has(item.status) && Number.isFinite(item.duration)) durations[i].push(item.duration);
  }
  const success = buckets.map((_, i) => {
    const done = created.completed[i] + created.failed[i] + created.cancelled[i];
    return done ? (created.completed[i] / done) * 100 : null;
  });
  const avg = durations.map((d) => (d.length ? d.reduce((a, b) => a + b, 0) / d.length : null));
  const p95 = durations.map((d) => percentile(d, 95));
  return { created, success, avg, p95 };
}

export function render(main) {
  const params = new URLSearchParams(location.search);
  let windowName = params.get("window") || "24h";
  if (!WINDOWS.some(([name]) => name === windowName)) windowName = "24h";
  const select = h("select", { id: "metrics-window", "aria-label": "window" }, WINDOWS.map(([name]) => h("option", { value: name, text: `last ${name}` })));
  select.value = windowName;
  const cards = h("div", { class: "cards", id: "metrics-cards" });
  const note = h("p", { class: "muted small", id: "metrics-note" });
  const [throughputPanel, throughputBox] = chartPanel("chart-throughput", "Throughput (workflows created per bucket)");
  const [durationPanel, durationBox] = chartPanel("chart-duration", "Duration of finished workflows");
  const [successPanel, successBox] = chartPanel("chart-success", "Success rate");
  const [poolPanel, poolBox] = chartPanel("chart-pool", "Pool efficiency (warm dispatches)");
  clear(main).append(
    h("div", { class: "page-head" }, h("h1", { text: "Metrics" }), select),
    cards,
    h("div", { class: "charts" }, throughputPanel, durationPanel, successPanel, poolPanel),
    note,
  );

  async function loadAggregate() {
    try {
      const agg = await api("/v1/metrics/aggregate", { query: { duration: windowName } });
      clear(cards).append(
        card("workflows", fmtNumber(agg.total_workflows), "metric-total"),
        card("success rate", pct(agg.success_rate), "metric-success"),
        card("avg duration", fmtDuration(agg.avg_duration), "metric-avg"),
        card("p50 / p95", `${fmtDuration(agg.p50_duration)} / ${fmtDuration(agg.p95_duration)}`, "metric-p95"),
        card("pool efficiency", pct(agg.pool_efficiency), "metric-pool"),
        card("throughput", `${fmtNumber(agg.throughput_per_min, 2)}/min`, "metric-throughput"),
        card("running", fmtNumber((agg.by_status || {}).running ?? agg.running), "metric-running"),
        card("failed", fmtNumber((agg.by_status || {}).failed ?? agg.failed), "metric-failed"),
      );
      return agg;
    } catch (err) {
      clear(cards).append(h("p", { class: "error-text", text: `aggregate unavailable: ${errorText(err)}` }));
      return null;
    }
  }

  async function loadHistory(seconds) {
    const buckets = makeBuckets(seconds, BUCKETS);
    let answer;
    try {
      answer = await api("/v1/metrics/history", { query: { duration: windowName, limit: 1000 } });
    } catch (err) {
      for (const box of [throughputBox, durationBox, successBox]) clear(box).append(h("p", { class: "error-text", text: errorText(err) }));
      return "";
    }
    const series = seriesFromHistory(answer.items || [], buckets);
    barChart(throughputBox, buckets, [
      { name: "completed", color: "#1f9d55", values: series.created.completed },
      { name: "failed", color: "#d93b3b", values: series.created.failed },
      { name: "cancelled", color: "#e08a1e", values: series.created.cancelled },
      { name: "pending/running", color: "#2f6fe0", values: series.created.active },
    ], { title: "throughput" });
    lineChart(durationBox, buckets, [
      { name: "average", color: "#3257d6", values: series.avg },
      { name: "p95", color: "#b35fd6", values: series.p95 },
    ], { yFormat: (v) => fmtDuration(v), title: "durations" });
    lineChart(successBox, buckets, [{ name: "success rate", color: "#1f9d55", values: series.success }],
      { yMax: 100, yFormat: (v) => `${Math.round(v)}%`, title: "success rate" });
    return answer.truncated ? `the history holds the newest ${(answer.items || []).length} workflows of this window only. ` : "";
  }

  async function loadPoolSeries(seconds) {
    const step = seconds / POOL_BUCKETS;
    const buckets = makeBuckets(seconds, POOL_BUCKETS);
    let aggs;
    try {
      aggs = await Promise.all(Array.from({ length: POOL_BUCKETS }, (_, k) =>
        api("/v1/metrics/aggregate", { query: { duration: String(Math.round(step * (k + 1))) } })));
    } catch (err) {
      clear(poolBox).append(h("p", { class: "error-text", text: errorText(err) }));
      return "";
    }
    // aggs[k] covers the last (k+1) steps; bucket index counts from the oldest.
    const values = Array(POOL_BUCKETS).fill(null);
    for (let k = 0; k < POOL_BUCKETS; k++) {
      const total = (aggs[k].dispatches || 0) - (k ? aggs[k - 1].dispatches || 0 : 0);
      const warm = (aggs[k].warm_dispatches || 0) - (k ? aggs[k - 1].warm_dispatches || 0 : 0);
      values[POOL_BUCKETS - 1 - k] = total > 0 ? Math.min(100, Math.max(0, (warm / total) * 100)) : null;
    }
    lineChart(poolBox, buckets, [{ name: "warm / all dispatches", color: "#0f9bb3", values }],
      { yMax: 100, yFormat: (v) => `${Math.round(v)}%`, title: "pool efficiency" });
    return aggs.some((a) => a.truncated) ? "Pool efficiency is approximate: a window held more workflows than an aggregate reads. " : "";
  }

  async function refresh() {
    const seconds = WINDOWS.find(([name]) => name === windowName)[1];
    const notes = await Promise.all([loadAggregate(), loadHistory(seconds), loadPoolSeries(seconds)]);
    note.textContent = notes.slice(1).join("");
  }

  select.addEventListener("change", () => {
    windowName = select.value;
    history.replaceState(null, "", `/ui/metrics?window=${encodeURIComponent(windowName)}`);
    refresh();
  });
  refresh();
  setLive("poll");
  const timer = setInterval(refresh, REFRESH_MS);
  return () => clearInterval(timer);
}
