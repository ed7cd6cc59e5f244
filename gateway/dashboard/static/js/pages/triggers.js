// Triggers: schedule, event, webhook and manual triggers with their next and last run, run and skip
// counts, and enable / disable buttons (POSTs with the CSRF header).
import { api, h, clear, fmtAgo, fmtTime, fmtNumber, shortId, errorText, toast, setLive } from "../core.js";

const REFRESH_MS = 10000;

function when(iso) {
  return iso ? h("span", { title: fmtTime(iso), text: fmtAgo(iso) }) : h("span", { class: "muted", text: "—" });
}

export function render(main) {
  const body = h("tbody", { id: "triggers-body" });
  const note = h("p", { class: "muted small" });
  clear(main).append(
    h("div", { class: "page-head" }, h("h1", { text: "Triggers" })),
    h("section", { class: "panel" }, h("table", { id: "triggers-table" },
      h("thead", {}, h("tr", {}, ["Name", "Type", "Template", "Schedule", "Enabled", "Next run", "Last run", "Runs",
        "Skipped", ""].map((t) => h("th", { text: t })))),
      body), note),
  );

  async function toggle(trigger, button) {
    button.disabled = true;
    const action = trigger.enabled ? "disable" : "enable";
    try {
      await api(`/v1/triggers/${encodeURIComponent(trigger.id)}/${action}`, { method: "POST" });
      toast(`trigger ${trigger.name || trigger.id} ${action}d`);
    } catch (err) {
      toast(`${action} failed: ${errorText(err)}`, "error");
    }
    load();
  }

  function row(t) {
    const skipped = t.skipped || {};
    const breakdown = Object.entries(skipped).map(([reason, n]) => `${reason}: ${n}`).join(", ");
    const schedule = t.type === "schedule" ? `${t.cron_expression || ""}${t.timezone ? ` (${t.timezone})` : ""}` : t.webhook_url || "—";
    const button = h("button", {
      type: "button", class: `small toggle-trigger${t.enabled ? " ghost" : ""}`, dataset: { action: t.enabled ? "disable" : "enable" },
      text: t.enabled ? "Disable" : "Enable",
    });
    button.addEventListener("click", () => toggle(t, button));
    return h("tr", { dataset: { triggerId: t.id, enabled: String(t.enabled) } },
      h("td", {}, h("div", { text: t.name || "(unnamed)" }), h("div", { class: "mono small muted", text: t.id })),
      h("td", { text: t.type }),
      h("td", {}, h("a", { href: `/ui/workflows/${encodeURIComponent(t.workflow_id)}`, class: "mono small", text: shortId(t.workflow_id, 16) })),
      h("td", { class: "mono small", text: schedule }),
      h("td", { text: t.enabled ? "yes" : "no" }),
      h("td", { class: "next-run" }, t.enabled ? when(t.next_run) : h("span", { class: "muted", text: "disabled" })),
      h("td", {}, when(t.last_run), t.last_workflow_id
        ? h("div", {}, h("a", { class: "small", href: `/ui/workflows/${encodeURIComponent(t.last_workflow_id)}`, text: shortId(t.last_workflow_id, 14) }))
        : ""),
      h("td", { class: "num", text: fmtNumber(t.run_count) }),
      h("td", { class: "num skipped", title: breakdown || "none", text: `${fmtNumber(t.skipped_count || 0)}${breakdown ? ` (${breakdown})` : ""}` }),
      h("td", {}, button));
  }

  async function load() {
    let page;
    try {
      page = await api("/v1/triggers", { query: { limit: 500 } });
    } catch (err) {
      clear(body).append(h("tr", {}, h("td", { colspan: 10, class: "error-text", text: errorText(err) })));
      return;
    }
    clear(body);
    const items = page.items || [];
    if (!items.length) body.append(h("tr", {}, h("td", { colspan: 10, class: "empty", text: "no triggers" })));
    else body.append(...items.map(row));
    note.textContent = page.total > items.length ? `showing ${items.length} of ${page.total}` : "";
  }

  load();
  setLive("poll");
  const timer = setInterval(load, REFRESH_MS);
  return () => clearInterval(timer);
}
