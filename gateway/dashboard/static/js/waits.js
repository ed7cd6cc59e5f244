// Durable waits on the workflow page (ADR 012): what a waiting step waits for, the approve / reject
// buttons of an approval step (POST through the session, with its CSRF token, like cancel and retry),
// and the links between a parent run and its child.
import { api, h, fmtTime, fmtJson, toast, errorText } from "./core.js";

export const WAIT_TYPES = new Set(["sleep", "wait_for_event", "approval", "workflow"]);

const link = (wfId) => h("a", { class: "mono", href: `/ui/workflows/${encodeURIComponent(wfId)}`, text: wfId });

// The parent of a child run, for the page header.
export function parentLink(origin) {
  if (!origin || !origin.parent_id) return "";
  return [" · child of ", link(origin.parent_id), origin.parent_step ? ` (step ${origin.parent_step})` : ""];
}

// Comments being typed, by workflow and step: the panel is redrawn on every live update, and a redraw
// must not wipe what the user is writing.
const drafts = new Map();

// The panel of a wait step: its facts, and for a waiting approval the decision form.
export function waitPanel(wfId, st, onDone) {
  const wait = st.wait;
  if (!WAIT_TYPES.has(st.type) || !wait) return "";
  const facts = [["waits for", st.type]];
  if (wait.due_at) facts.push(["until", fmtTime(wait.due_at)]);
  if (wait.timeout_at) facts.push(["times out", fmtTime(wait.timeout_at)]);
  if (wait.event_type) facts.push(["event type", wait.event_type], ["filter", fmtJson(wait.filter || {})]);
  if (wait.message) facts.push(["message", wait.message]);
  const box = h("div", { class: "wait-box", id: "wait-box" },
    h("dl", { class: "kv" }, facts.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { class: "mono", text: String(v) })])));
  if (wait.child_id) {
    box.append(h("p", {}, "child run ", link(wait.child_id), wait.attempt > 1 ? ` (attempt ${wait.attempt})` : ""));
  }
  if (st.type === "approval" && st.status === "running") {
    const draftKey = `${wfId}/${st.id}`;
    const comment = h("input", { id: "approval-comment", type: "text", maxlength: "2000", placeholder: "comment (optional)" });
    comment.value = drafts.get(draftKey) || "";
    comment.addEventListener("input", () => drafts.set(draftKey, comment.value));
    const decide = (verb) => async () => {
      for (const b of box.querySelectorAll("button")) b.disabled = true;
      try {
        const body = comment.value ? { comment: comment.value } : {};
        await api(`/v1/workflows/${encodeURIComponent(wfId)}/steps/${encodeURIComponent(st.id)}/${verb}`, { method: "POST", body });
        drafts.delete(draftKey);
        toast(`${st.id} ${verb === "approve" ? "approved" : "rejected"}`);
      } catch (err) {
        toast(`${verb} failed: ${errorText(err)}`, "error");
        for (const b of box.querySelectorAll("button")) b.disabled = false;
      }
      onDone();
    };
    box.append(h("div", { class: "page-head" }, comment,
      h("button", { id: "approve-btn", type: "button", text: "Approve", onclick: decide("approve") }),
      h("button", { id: "reject-btn", class: "danger", type: "button", text: "Reject", onclick: decide("reject") })));
  } else if (st.type === "approval" && st.output && st.output.decision) {
    const o = st.output;
    box.append(h("p", { id: "approval-decision", text: `${o.decision}d by ${o.by} at ${fmtTime(o.at)}${o.comment ? `: ${o.comment}` : ""}` }));
  }
  return box;
}
