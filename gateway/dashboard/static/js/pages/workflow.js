// One workflow: its DAG with live step statuses (per-workflow SSE, polling as a fallback), the steps,
// a selected step's logs / output / error / tasks / env, the workflow state, the span waterfall, and
// the cancel and retry buttons.
import {
  api, h, clear, badge, fmtTime, fmtDuration, fmtJson, shortId, maskEnv, envList, liveStream, throttle, toast,
  errorText, confirmAction, ApiError, FINISHED, reasonBadge,
} from "../core.js";
import { renderDag } from "../dag.js";
import { renderWaterfall } from "../waterfall.js";
import { keptPanel } from "../kept.js";
import { WAIT_TYPES, parentLink, waitPanel } from "../waits.js";

const RANK = { pending: 0, queued: 0.5, running: 1 };
const rank = (status) => (status in RANK ? RANK[status] : 2);
// Live events and re-reads race: a status never moves back (pending -> running -> finished).
const advance = (old, next) => (!old || rank(next) >= rank(old) ? next : old);
const TABS = ["logs", "output", "error", "tasks", "env"];
const CONTROL_TYPES = new Set(["branch", "decision", ...WAIT_TYPES]);

export function render(main, { id }) {
  const view = { wf: null, dag: null, selected: null, tab: "logs", log: { step: null, next: null, lines: [] }, statuses: new Map() };
  const title = h("h1", { id: "wf-name", text: "…" });
  const statusSlot = h("span", { id: "wf-status" });
  const sub = h("div", { class: "sub", id: "wf-sub" });
  const cancelBtn = h("button", { id: "cancel-btn", class: "danger", type: "button", text: "Cancel run", disabled: true });
  const retryBtn = h("button", { id: "retry-btn", type: "button", text: "Retry", disabled: true });
  const dagBox = h("div", { class: "dag-wrap", id: "dag" });
  const stepsBody = h("tbody", { id: "steps-body" });
  const detail = h("div", { id: "step-detail" }, h("p", { class: "muted", text: "Select a step in the graph." }));
  const statePre = h("pre", { class: "block light", id: "wf-state", text: "…" });
  const waterfall = h("div", { id: "waterfall" }, h("p", { class: "muted", text: "…" }));
  const runInfo = h("div", { id: "wf-info" });
  const kept = keptPanel(id);  // containers kept by a cleanup policy (ADR 014)
  clear(main).append(
    h("div", { class: "page-head" },
      h("div", {}, h("div", { class: "page-head" }, title, statusSlot), sub),
      h("span", { class: "spacer" }), cancelBtn, retryBtn),
    h("section", { class: "panel" }, h("h2", { text: "Graph" }), dagBox),
    h("div", { class: "grid-2" },
      h("div", { class: "stack" },
        h("section", { class: "panel" }, h("h2", { text: "Steps" }), h("table", { id: "steps-table" },
          h("thead", {}, h("tr", {}, ["Step", "Type", "Status", "Attempts", "Tasks", "Since ready", "Ran"].map((t) => h("th", { text: t })))),
          stepsBody)),
        h("section", { class: "panel" }, h("h2", { text: "State" }), statePre)),
      h("div", { class: "stack" },
        h("section", { class: "panel", id: "step-panel" }, h("h2", { text: "Step" }), detail))),
    h("section", { class: "panel", style: { marginTop: "16px" } }, h("h2", { text: "Trace" }), waterfall),
    h("section", { class: "panel" }, h("h2", { text: "Run" }), runInfo),
    kept.element,
  );

  const stepOf = (stepId) => (view.wf ? view.wf.steps.find((st) => st.id === stepId) : null);
  const defOf = (stepId) => (view.wf ? (view.wf.definition.steps || []).find((st) => st.id === stepId) : null);

  // ---- header, steps, DAG --------------------------------------------------------------------
  function setWorkflowStatus(status) {
    const current = advance(view.wf && view.wf.status, status);
    if (view.wf) view.wf.status = current;
    clear(statusSlot).append(...[badge(current, "big"), reasonBadge(view.wf && view.wf.queued_reason)].filter(Boolean));
    statusSlot.dataset.status = current;
    cancelBtn.disabled = FINISHED.has(current);
    retryBtn.disabled = !FINISHED.has(current);
  }

  function setStepStatus(stepId, status, step) {
    const current = advance(view.statuses.get(stepId), status);
    view.statuses.set(stepId, current);
    if (view.dag) view.dag.setStatus(stepId, current, step);
    const row = stepsBody.querySelector(`tr[data-step-id="${CSS.escape(stepId)}"]`);
    if (row) {
      row.dataset.status = current;
      const waiting = step ? step.waiting_on : (stepOf(stepId) || {}).waiting_on;
      clear(row.children[2]).append(badge(current), waitingOn(waiting));
    }
  }

  function renderHeader(wf) {
    title.textContent = wf.name || "(unnamed)";
    document.title = `${wf.name || wf.id} · Agentainer Flow`;
    setWorkflowStatus(wf.status);
    const origin = wf.origin || {};
    const parts = [
      h("span", { class: "mono", text: wf.id }), " · created ", fmtTime(wf.created_at),
      wf.duration_s !== null && wf.duration_s !== undefined ? ` · ${fmtDuration(wf.duration_s)}` : "",
      " · origin ", origin.kind || "api",
      origin.template_id
        ? [" of ", h("a", { href: `/ui/workflows/${encodeURIComponent(origin.template_id)}`, text: shortId(origin.template_id, 16) })]
        : "",
      parentLink(origin),
      wf.error ? [" · ", h("span", { class: "error-text", text: wf.error })] : "",
    ];
    // Node.append takes nodes and strings only: nested lists flattened, absent parts dropped.
    clear(sub).append(...parts.flat(2).filter((part) => part !== null && part !== undefined && part !== ""));
  }

  // A task waiting for a slot of its step's concurrency key says so (ADR 019); "" when it does not wait.
  function waitingOn(reason) {
    return reason ? h("span", { class: "muted small waiting-on", title: reason, text: ` ${reason}` }) : "";
  }

  function renderSteps(wf) {
    clear(stepsBody);
    for (const st of wf.steps) {
      const status = advance(view.statuses.get(st.id), st.status);
      const tasks = st.total ? `${st.succeeded || 0}/${st.total}${st.failed ? ` (${st.failed} failed)` : ""}` : (st.tasks || []).length || "";
      const row = h("tr", { class: `clickable${st.id === view.selected ? " selected" : ""}`, dataset: { stepId: st.id, status },
        onclick: () => selectStep(st.id) },
      h("td", { class: "mono", text: st.id }), h("td", { text: st.type }), h("td", {}, badge(status), waitingOn(st.waiting_on)),
      h("td", { class: "num", text: String(st.attempts || 0) }), h("td", { class: "num", text: String(tasks) }),
      h("td", { class: "num", text: fmtDuration(st.duration_s), title: "from when the step became ready" }),
      h("td", { class: "num", text: fmtDuration(st.run_duration_s), title: "from when its first task started" }));
      stepsBody.append(row);
    }
  }

  const runFacts = h("div", { id: "wf-facts" });
  function renderRunFacts(wf) {
    clear(runFacts).append(
      h("dl", { class: "kv" },
        h("dt", { text: "started" }), h("dd", { text: fmtTime(wf.started_at) }),
        h("dt", { text: "finished" }), h("dd", { text: fmtTime(wf.finished_at) }),
        h("dt", { text: "max_parallel" }), h("dd", { text: String((wf.config || {}).max_parallel ?? "—") }),
        h("dt", { text: "failure_strategy" }), h("dd", { text: String((wf.config || {}).failure_strategy ?? "—") }),
        h("dt", { text: "labels" }), h("dd", { class: "mono", text: JSON.stringify(wf.labels || {}) })));
  }

  function renderRunInfo(wf) {
    const definition = { ...wf.definition, steps: (wf.definition.steps || []).map((st) => (st.env ? { ...st, env: maskEnv(st.env) } : st)) };
    clear(runInfo).append(
      runFacts,
      h("details", {}, h("summary", { text: "input" }), h("pre", { class: "block light", text: fmtJson(wf.input) })),
      h("details", {}, h("summary", { text: "definition (env secrets masked)" }),
        h("pre", { class: "block light", id: "wf-definition", text: fmtJson(definition) })),
    );
  }

  // ---- the selected step ---------------------------------------------------------------------
  function selectStep(stepId) {
    view.selected = stepId;
    if (view.dag) view.dag.select(stepId);
    for (const row of stepsBody.querySelectorAll("tr")) row.classList.toggle("selected", row.dataset.stepId === stepId);
    renderDetail();
    if (view.tab === "logs") loadLogs(true);
  }

  function renderDetail() {
    const st = stepOf(view.selected);
    if (!st) return;
    // Someone is typing an approval comment: a live redraw would replace the field under their cursor
    // (the text survives in waits.js's drafts, the focus and the caret would not). The next live update
    // after they leave the field redraws (a click on Approve or Reject reloads at once).
    const typing = document.activeElement;
    if (typing && typing.id === "approval-comment" && detail.contains(typing) && st.status === "running") return;
    const tabs = h("div", { class: "tabs", role: "tablist" }, TABS.map((tab) => h("button", {
      type: "button", class: tab === view.tab ? "active" : "", id: `tab-${tab}`, role: "tab", text: tab,
      onclick: () => { view.tab = tab; renderDetail(); if (tab === "logs") loadLogs(true); },
    })));
    const body = h("div", { id: "step-tab-content" });
    clear(detail).append(
      h("div", { class: "page-head" }, h("strong", { class: "mono", id: "selected-step", text: st.id }), badge(advance(view.statuses.get(st.id), st.status)),
        h("span", { class: "muted", text: st.type })),
      waitPanel(id, st, () => reload()),
      tabs, body);
    fillTab(body, st);
  }

  function fillTab(body, st) {
    const def = defOf(st.id) || {};
    if (view.tab === "logs") {
      if (CONTROL_TYPES.has(st.type)) {
        const what = WAIT_TYPES.has(st.type) ? "it waits in Redis" : `chosen ${JSON.stringify(st.chosen || [])}`;
        body.append(h("p", { class: "muted", text: `a ${st.type} step runs no container: ${what}` }));
        return;
      }
      body.append(h("pre", { class: "block", id: "log-view" }, view.log.step === st.id ? logNodes() : "loading…"));
    } else if (view.tab === "output") {
      body.append(h("pre", { class: "block light", id: "step-output", text: st.output === null || st.output === undefined ? "(no output)" : fmtJson(st.output) }));
    } else if (view.tab === "error") {
      const taskErrors = (st.tasks || []).filter((t) => t.error).map((t) => `[#${t.index} attempt ${t.attempt}] ${t.error.kind || ""}: ${t.error.message || JSON.stringify(t.error)}`);
      const lines = [st.error && `error: ${typeof st.error === "string" ? st.error : JSON.stringify(st.error)}`, st.reason && `reason: ${st.reason}`, ...taskErrors,
        ...(st.failures || []).map((f) => `failure: ${JSON.stringify(f)}`)].filter(Boolean);
      body.append(h("pre", { class: lines.length ? "block light error-text" : "block light", id: "step-error", text: lines.length ? lines.join("\n") : "(no error)" }));
    } else if (view.tab === "tasks") {
      const tasks = st.tasks || [];
      if (!tasks.length) { body.append(h("p", { class: "muted", text: "no tasks yet" })); return; }
      body.append(h("table", { id: "tasks-table" }, h("thead", {}, h("tr", {},
        ["#", "Status", "Attempt", "Mode", "Pooled", "Container", "Exit", "Acquire", "Exec", "Duration"].map((t) => h("th", { text: t })))),
      h("tbody", {}, tasks.map((t) => h("tr", {},
        h("td", { text: String(t.index) }), h("td", {}, badge(t.status), waitingOn(t.waiting_on)), h("td", { class: "num", text: String(t.attempt) }),
        h("td", { text: t.mode || "—" }), h("td", { text: t.pooled === null || t.pooled === undefined ? "—" : t.pooled ? "warm pool" : "no" }),
        h("td", { class: "mono small", title: t.container_id || "", text: shortId(t.container_id || "—", 12) }),
        h("td", { class: "num", text: t.exit_code ?? "—" }),
        h("td", { class: "num", text: t.acquire_ms === null || t.acquire_ms === undefined ? "—" : `${Number(t.acquire_ms).toFixed(1)} ms` }),
        h("td", { class: "num", text: t.exec_ms === null || t.exec_ms === undefined ? "—" : `${Number(t.exec_ms).toFixed(1)} ms` }),
        h("td", { class: "num", text: fmtDuration(t.duration_s) }))))));
    } else if (view.tab === "env") {
      body.append(
        h("dl", { class: "kv", style: { marginBottom: "10px" } },
          h("dt", { text: "image" }), h("dd", { class: "mono", text: def.image || "—" }),
          h("dt", { text: "command" }), h("dd", { class: "mono", text: def.command ? JSON.stringify(def.command) : def.function || "—" })),
        h("div", { id: "step-env" }, envList(def.env || {})));
    }
  }

  // ---- logs ------------------------------------------------------------------------------------
  function logNodes() {
    if (!view.log.lines.length) return [h("span", { class: "muted", text: view.log.note || "(no log lines yet)" })];
    const many = (stepOf(view.log.step) || {}).type !== "sequential" && (stepOf(view.log.step) || {}).type !== "reduce";
    return view.log.lines.map((item) => h("div", { class: `log-line ${item.stream || ""}` },
      many || item.attempt > 1 ? h("span", { class: "log-src", text: `[#${item.index ?? 0}${item.attempt > 1 ? ` a${item.attempt}` : ""}] ` }) : "",
      item.line));
  }

  function redrawLogs() {
    const pre = detail.querySelector("#log-view");
    if (pre && view.log.step === view.selected) {
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      clear(pre).append(...logNodes());
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    }
  }

  function tailFallback(st, note) {
    view.log.lines = (st.tasks || []).filter((t) => t.log_tail).flatMap((t) => String(t.log_tail).replace(/\n$/, "").split("\n")
      .map((line) => ({ index: t.index, attempt: t.attempt, stream: "", line })));
    view.log.note = note;
  }

  let logsBusy = false;
  async function loadLogs(reset) {
    const st = stepOf(view.selected);
    if (!st || CONTROL_TYPES.has(st.type)) return;
    if (reset) view.log = { step: st.id, next: null, lines: [], note: "" };
    if (logsBusy) { view.log.again = true; return; }
    logsBusy = true;
    try {
      do {
        view.log.again = false;
        const page = await api(`/v1/workflows/${encodeURIComponent(id)}/logs`, { query: { step: st.id, since: view.log.next, limit: 1000 } });
        if (view.log.step !== st.id) return;
        view.log.lines.push(...(page.items || []));
        view.log.next = page.next || view.log.next;
        if (!view.log.lines.length && (st.tasks || []).some((t) => t.log_tail)) tailFallback(st, "");
      } while (view.log.again);
    } catch (err) {
      if (view.log.step === st.id) tailFallback(st, `(no log stream: ${errorText(err)})`);
    } finally {
      logsBusy = false;
    }
    redrawLogs();
  }
  const logsSoon = throttle(() => loadLogs(false), 400);

  // ---- loading -------------------------------------------------------------------------------
  async function loadState() {
    try {
      const answer = await api(`/v1/workflows/${encodeURIComponent(id)}/state`);
      statePre.textContent = Object.keys(answer.state || {}).length ? fmtJson(answer.state) : "(empty)";
    } catch (err) {
      statePre.textContent = `(state unavailable: ${errorText(err)})`;
    }
  }

  async function loadSpans() {
    try {
      const answer = await api(`/v1/workflows/${encodeURIComponent(id)}/spans`);
      renderWaterfall(waterfall, (answer && answer.items) || []);
    } catch (err) {
      if (err instanceof ApiError && (err.status === 404 || err.status === 501)) renderWaterfall(waterfall, []);
      else clear(waterfall).append(h("p", { class: "error-text", text: `spans unavailable: ${errorText(err)}` }));
    }
  }
  const spansSoon = throttle(loadSpans, 3000);
  const keptSoon = throttle(kept.load, 3000);

  async function load() {
    let wf;
    try {
      wf = await api(`/v1/workflows/${encodeURIComponent(id)}`);
    } catch (err) {
      if (!view.wf && !view.gone) clear(main).append(h("p", { class: "error-text", id: "wf-error", text: `cannot load workflow ${id}: ${errorText(err)}` }));
      if (err instanceof ApiError && err.status === 404) view.gone = true;
      return;
    }
    const first = !view.wf;
    view.wf = wf;
    if (first) {
      view.dag = renderDag(dagBox, wf.definition, wf.graph, wf.steps, { onSelect: selectStep });
      renderRunInfo(wf);
    }
    renderHeader(wf);
    renderRunFacts(wf);
    renderSteps(wf);
    for (const st of wf.steps) setStepStatus(st.id, st.status, st);
    if (first) {
      const interesting = wf.steps.find((st) => st.status === "running") || wf.steps.find((st) => st.status === "failed") || wf.steps[0];
      if (interesting) selectStep(interesting.id);
    } else if (view.selected) {
      const pre = detail.querySelector("#log-view");
      const scroll = pre ? pre.scrollTop : 0;
      renderDetail();
      const again = detail.querySelector("#log-view");
      if (again) again.scrollTop = scroll;
    }
    loadState();
    spansSoon();
    keptSoon();
  }
  const reload = throttle(load, 700);

  cancelBtn.addEventListener("click", async () => {
    if (!(await confirmAction(`Cancel workflow ${view.wf ? view.wf.name : id}? Its running tasks are killed.`, "Cancel run"))) return;
    cancelBtn.disabled = true;
    try {
      const answer = await api(`/v1/workflows/${encodeURIComponent(id)}/cancel`, { method: "POST" });
      setWorkflowStatus(answer.status);
      toast(`workflow ${answer.status}`);
    } catch (err) {
      toast(`cancel failed: ${errorText(err)}`, "error");
    }
    reload();
  });
  retryBtn.addEventListener("click", async () => {
    retryBtn.disabled = true;
    try {
      const answer = await api(`/v1/workflows/${encodeURIComponent(id)}/retry`, { method: "POST" });
      location.assign(`/ui/workflows/${encodeURIComponent(answer.workflow_id)}`);
    } catch (err) {
      toast(`retry failed: ${errorText(err)}`, "error");
      retryBtn.disabled = false;
    }
  });

  load().then(loadSpans);
  const live = liveStream(`/v1/workflows/${encodeURIComponent(id)}/events`, {
    types: ["snapshot", "workflow", "step", "task", "log"],
    onEvent(type, data) {
      if ((type === "workflow" || type === "snapshot") && data.status) setWorkflowStatus(data.status);
      if (type === "step" && data.step_id && data.status) setStepStatus(data.step_id, data.status);
      if (type === "log") {
        if (data.step_id === view.selected && view.tab === "logs") logsSoon();
        return;
      }
      reload();
    },
    onEnd() {
      load();
      loadSpans();
      if (view.tab === "logs") logsSoon();
    },
    poll() {
      reload();
      if (view.tab === "logs") logsSoon();
      if (view.gone || (view.wf && FINISHED.has(view.wf.status))) live.close();
    },
    pollMs: 2000,
  });
  return () => live.close();
}
