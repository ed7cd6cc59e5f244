// The workflows page: counts per status (live), a status filter (server side) and a name filter
// (over the newest LIMIT workflows of that status), updated from /v1/events or by polling.
import {
  api, h, clear, badge, fmtAgo, fmtDuration, fmtTime, shortId, liveStream, throttle, errorText, WORKFLOW_STATUSES,
  reasonBadge,
} from "../core.js";

const LIMIT = 200;

export function render(main) {
  const params = new URLSearchParams(location.search);
  const filter = { status: params.get("status") || "", name: params.get("name") || "" };
  const counts = h("div", { class: "chips", id: "status-counts" });
  const statusSelect = h("select", { id: "status-filter", "aria-label": "status" },
    h("option", { value: "", text: "all statuses" }),
    WORKFLOW_STATUSES.map((st) => h("option", { value: st, text: st })));
  statusSelect.value = filter.status;
  const nameInput = h("input", { id: "name-filter", type: "search", placeholder: "filter by name or id", value: filter.name });
  const tbody = h("tbody", { id: "workflows-body" });
  const note = h("p", { class: "muted small", id: "workflows-note" });
  clear(main).append(
    h("div", { class: "page-head" }, h("h1", { text: "Workflows" })),
    counts,
    h("div", { class: "filters" }, statusSelect, nameInput, note),
    h("div", { class: "panel" }, h("table", { id: "workflows-table" },
      h("thead", {}, h("tr", {},
        ["Name", "Id", "Status", "Steps", "Origin", "Created", "Duration"].map((t) => h("th", { text: t })))),
      tbody)),
  );

  const syncUrl = () => {
    const q = new URLSearchParams();
    if (filter.status) q.set("status", filter.status);
    if (filter.name) q.set("name", filter.name);
    history.replaceState(null, "", `/ui/${q.toString() ? "?" + q : ""}`);
  };

  const loadCounts = async () => {
    const keys = ["", ...WORKFLOW_STATUSES];
    const answers = await Promise.all(keys.map((st) =>
      api("/v1/workflows", { query: { status: st, limit: 1 } }).then((r) => r.total).catch(() => null)));
    clear(counts);
    keys.forEach((st, i) => {
      const chip = h("button", {
        type: "button", class: `chip${filter.status === st ? " active" : ""}`, dataset: { status: st || "all" },
        id: `count-${st || "all"}`,
        onclick: () => { filter.status = st; statusSelect.value = st; syncUrl(); refresh(); },
      }, st || "all", h("span", { class: "count", text: answers[i] === null ? "?" : String(answers[i]) }));
      counts.append(chip);
    });
  };

  const row = (wf) => {
    const origin = wf.origin || {};
    const originCell = origin.kind === "retry" && origin.template_id
      ? h("span", {}, "retry of ", h("a", { href: `/ui/workflows/${encodeURIComponent(origin.template_id)}`, text: shortId(origin.template_id) }))
      : origin.kind || "api";
    return h("tr", { dataset: { workflowId: wf.id, status: wf.status } },
      h("td", {}, h("a", { class: "wf-link", href: `/ui/workflows/${encodeURIComponent(wf.id)}`, text: wf.name || "(unnamed)" })),
      h("td", { class: "mono small", title: wf.id, text: shortId(wf.id, 16) }),
      h("td", {}, badge(wf.status), " ", reasonBadge(wf.queued_reason)),
      h("td", { class: "num", text: String(wf.step_count ?? "") }),
      h("td", { class: "small" }, originCell),
      h("td", { title: fmtTime(wf.created_at), text: fmtAgo(wf.created_at) }),
      h("td", { class: "num", text: fmtDuration(wf.duration_s) }),
    );
  };

  const loadList = async () => {
    let page;
    try {
      page = await api("/v1/workflows", { query: { status: filter.status, limit: LIMIT } });
    } catch (err) {
      clear(tbody).append(h("tr", {}, h("td", { colspan: 7, class: "error-text", text: errorText(err) })));
      return;
    }
    const needle = filter.name.trim().toLowerCase();
    const items = (page.items || []).filter((wf) => !needle
      || (wf.name || "").toLowerCase().includes(needle) || wf.id.toLowerCase().includes(needle));
    clear(tbody);
    if (!items.length) {
      tbody.append(h("tr", {}, h("td", { colspan: 7, class: "empty", text: "no workflows match" })));
    } else {
      tbody.append(...items.map(row));
    }
    note.textContent = page.total > LIMIT
      ? `showing the newest ${LIMIT} of ${page.total}${needle ? " (the name filter searches those)" : ""}`
      : "";
  };

  const refresh = throttle(() => { loadCounts(); loadList(); }, 1000);
  statusSelect.addEventListener("change", () => { filter.status = statusSelect.value; syncUrl(); refresh(); });
  nameInput.addEventListener("input", throttle(() => { filter.name = nameInput.value; syncUrl(); loadList(); }, 250));
  loadCounts();
  loadList();
  const live = liveStream("/v1/events", {
    types: ["workflow"],
    onEvent: () => refresh(),
    poll: refresh,
    pollMs: 5000,
  });
  return () => live.close();
}
