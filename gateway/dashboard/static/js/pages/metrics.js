// Metrics: the aggregate of a window (/v1/metrics/aggregate) and charts over time.
// Throughput, durations and success rate come bucketed from the server (/v1/metrics/series), with the
// aggregate's definitions. Pool efficiency per bucket comes from nested trailing aggregates:
// the dispatches of (now - k·b, now - (k-1)·b] are the difference of two aggregates' counters.
import { api, h, clear, fmtNumber, fmtDuration, errorText, setLive } from "../core.js";
import { barChart, lineChart, makeBuckets } from "../charts.js";

const WINDOWS = [["1h", 3600], ["6h", 21600], ["24h", 86400], ["7d", 604800]];
const BUCKETS = 24;
const POOL_BUCKETS = 8;
const REFRESH_MS = 30000;

function card(label, value, id) {
  return h("div", { class: "card", id }, h("div", { class: "value", text: value }), h("div", { class: "label", text: label }));
}

const pct = (v) => (v === null || v === undefined ? "—" : `${fmtNumber(v, 1)}%`);

function chartPanel(id, title) {
  const box = h("div", { id });
  return [h("section", { class: "panel" }, h("h2", { text: title }), box), box];
}

/** Chart series from /v1/metrics/series: the server computes every number (nearest-rank p95, as the
 * aggregate card); this only turns its buckets into what the charts take. Pure. */
export function seriesFromServer(answer) {
  const rows = answer.buckets || [];
  const buckets = rows.map((b) => ({ t0: Date.parse(b.from_time) / 1000, t1: Date.parse(b.to_time) / 1000 }));
  const pick = (key) => rows.map((b) => b.created[key]);
  const created = { completed: pick("completed"), failed: pick("failed"), cancelled: pick("cancelled"), active: pick("active") };
  return {
    buckets,
    created,
    success: rows.map((b) => b.success_rate),
    avg: rows.map((b) => b.avg_duration),
    p95: rows.map((b) => b.p95_duration),
  };
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

  async function loadSeries() {
    let answer;
    try {
      answer = await api("/v1/metrics/series", { query: { duration: windowName, buckets: BUCKETS } });
    } catch (err) {
      for (const box of [throughputBox, durationBox, successBox]) clear(box).append(h("p", { class: "error-text", text: errorText(err) }));
      return "";
    }
    const series = seriesFromServer(answer);
    const buckets = series.buckets;
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
    return answer.truncated ? `the charts cover the newest ${answer.scanned} workflows of this window only. ` : "";
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
    const notes = await Promise.all([loadAggregate(), loadSeries(), loadPoolSeries(seconds)]);
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
