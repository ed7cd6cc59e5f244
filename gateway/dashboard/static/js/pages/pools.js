// Pools: the pool service's warm pools per key (warm/busy containers, hits, misses, queue waits) and
// its long-running agents (env secrets masked). Polled: pool counters change with every task.
import { api, h, clear, fmtNumber, shortId, envList, errorText, setLive, badge } from "../core.js";

const REFRESH_MS = 5000;

function card(label, value, id) {
  return h("div", { class: "card", id }, h("div", { class: "value", text: value }), h("div", { class: "label", text: label }));
}

function meter(busy, idle) {
  const total = busy + idle;
  const bar = h("span", { class: "meter", title: `${busy} busy, ${idle} idle` });
  if (total > 0) {
    bar.append(
      h("span", { class: "busy", style: { width: `${(busy / total) * 100}%` } }),
      h("span", { class: "idle", style: { width: `${(idle / total) * 100}%` } }),
    );
  }
  return bar;
}

function pct(ratio) {
  return ratio === null || ratio === undefined ? "—" : `${fmtNumber(Number(ratio) * 100, 1)}%`;
}

export function render(main) {
  const overall = h("div", { class: "cards", id: "pool-overall" });
  const poolsBody = h("tbody", { id: "pools-body" });
  const agentsBox = h("div", { id: "agents" });
  const service = h("span", { class: "sub", id: "pool-service" });
  clear(main).append(
    h("div", { class: "page-head" }, h("h1", { text: "Pools" }), service),
    overall,
    h("section", { class: "panel" }, h("h2", { text: "Warm pools by key" }), h("table", { id: "pools-table" },
      h("thead", {}, h("tr", {}, ["Image", "Kind", "Network", "Limits", "Containers (busy / idle)", "Warm hits",
        "Misses (cold starts)", "Queue waits", "Hit ratio", "Acquire p50 / p95"].map((t) => h("th", { text: t })))),
      poolsBody)),
    h("section", { class: "panel" }, h("h2", { text: "Agents" }), agentsBox),
  );

  async function loadPools() {
    let report;
    try {
      report = await api("/v1/pools");
    } catch (err) {
      clear(overall).append(h("p", { class: "error-text", text: `pool service: ${errorText(err)}` }));
      return;
    }
    service.textContent = report.service_id ? `service ${report.service_id}` : "";
    const o = report.overall || {};
    clear(overall).append(
      card("warm hits", fmtNumber(o.warm_hits), "pool-warm-hits"),
      card("cold starts (misses)", fmtNumber(o.cold_starts), "pool-cold-starts"),
      card("queue waits", fmtNumber(o.queue_waits), "pool-queue-waits"),
      card("hit ratio", pct(o.hit_ratio), "pool-hit-ratio"),
      card("busy / idle", `${fmtNumber(o.busy)} / ${fmtNumber(o.idle)}`, "pool-busy-idle"),
      card("tasks", fmtNumber(o.tasks), "pool-tasks"),
      card("failures", fmtNumber(o.failures), "pool-failures"),
    );
    const pools = report.pools || [];
    clear(poolsBody);
    if (!pools.length) {
      poolsBody.append(h("tr", {}, h("td", { colspan: 10, class: "empty", text: "no warm pools yet: they appear with the first pooled task" })));
      return;
    }
    for (const p of pools) {
      const spec = p.spec || {};
      const limits = [spec.cpu && `${spec.cpu} cpu`, spec.memory_mb && `${spec.memory_mb} MB`, spec.pids && `${spec.pids} pids`].filter(Boolean).join(", ") || "—";
      poolsBody.append(h("tr", { dataset: { key: p.key || "" } },
        h("td", { class: "mono small", title: p.key || "", text: spec.image || p.key }),
        h("td", { text: spec.kind || "—" }), h("td", { text: spec.network || "—" }), h("td", { class: "small", text: limits }),
        h("td", {}, meter(p.busy || 0, p.idle || 0), ` ${p.busy || 0} / ${p.idle || 0}`,
          p.config ? h("span", { class: "muted small", text: ` (max ${p.config.max_size})` }) : ""),
        h("td", { class: "num", text: fmtNumber(p.warm_hits) }), h("td", { class: "num", text: fmtNumber(p.cold_starts) }),
        h("td", { class: "num", text: fmtNumber(p.queue_waits) }), h("td", { class: "num", text: pct(p.hit_ratio) }),
        h("td", { class: "num", text: `${fmtNumber(p.acquire_ms_p50, 1)} / ${fmtNumber(p.acquire_ms_p95, 1)} ms` })));
    }
  }

  async function loadAgents() {
    let answer;
    try {
      answer = await api("/v1/agents");
    } catch (err) {
      clear(agentsBox).append(h("p", { class: "muted", text: `agents unavailable: ${errorText(err)}` }));
      return;
    }
    const items = Array.isArray(answer) ? answer : answer.agents || answer.items || [];
    clear(agentsBox);
    if (!items.length) {
      agentsBox.append(h("p", { class: "empty", text: "no agents deployed" }));
      return;
    }
    agentsBox.append(h("table", { id: "agents-table" },
      h("thead", {}, h("tr", {}, ["Name", "Status", "Image", "Container", "Env"].map((t) => h("th", { text: t })))),
      h("tbody", {}, items.map((a) => h("tr", { dataset: { agentId: a.id || "" } },
        h("td", { text: a.name || a.id }), h("td", {}, badge(a.status === "running" ? "running" : a.status || "pending")),
        h("td", { class: "mono small", text: a.image || "—" }),
        h("td", { class: "mono small", text: shortId(a.container_id || "—") }),
        h("td", {}, envList(a.env || {})))))));
  }

  const refresh = () => { loadPools(); loadAgents(); };
  refresh();
  setLive("poll");
  const timer = setInterval(refresh, REFRESH_MS);
  return () => clearInterval(timer);
}
