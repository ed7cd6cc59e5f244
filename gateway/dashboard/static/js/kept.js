// The workflow page's "Kept containers" panel: task containers a cleanup policy kept for inspection
// (GET /v1/kept?workflow_id=, forwarded to the pool service; ADR 014). Read-only: removing one is
// `flow kept rm ID` (admin).
import { api, h, clear, badge, fmtTime, errorText, ApiError } from "./core.js";

export function keptPanel(workflowId) {
  const body = h("tbody", { id: "kept-body" });
  const note = h("p", { class: "muted", id: "kept-note", text: "…" });
  const table = h("table", { id: "kept-table" },
    h("thead", {}, h("tr", {}, ["Container", "Step", "Attempt", "Outcome", "Status", "Expires", "Reason"].map((t) => h("th", { text: t })))),
    body);
  const element = h("section", { class: "panel", id: "kept-panel" }, h("h2", { text: "Kept containers" }), note, table);

  async function load() {
    let items;
    try {
      const answer = await api("/v1/kept", { query: { workflow_id: workflowId } });
      items = (answer && answer.kept) || [];
    } catch (err) {
      // A gateway whose pool service is down (503) or a token that may not read pools: say so, quietly.
      note.textContent = err instanceof ApiError ? `(kept containers unavailable: ${errorText(err)})` : String(err);
      clear(body);
      return;
    }
    note.textContent = items.length
      ? "Frozen for inspection: flow inspect WORKFLOW STEP --copy PATH DEST reads them, flow kept rm ID removes one."
      : "None: this workflow's task containers were returned to their pool or removed.";
    clear(body).append(...items.map((k) => h("tr", { "data-container": k.container_id },
      h("td", { class: "mono", text: k.container_id.slice(0, 12) }),
      h("td", { text: `${k.step_id}#${k.index}` }),
      h("td", { text: String(k.attempt) }),
      h("td", {}, badge(k.outcome)),
      h("td", { text: k.status }),
      h("td", { text: fmtTime(k.expires_at) }),
      h("td", { class: "reason", text: k.reason }),
    )));
  }
  return { element, load };
}
