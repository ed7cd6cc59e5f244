// The workflow's DAG as SVG: layers by the server's edges (every dependency the engine schedules by),
// ordered inside a layer by the mean position of their parents (barycentre), drawn left to right. Node statuses change in place (setStatus), so live updates never re-layout.
import { s, clear } from "./core.js";

const NODE_W = 168;
const NODE_H = 50;
const GAP_X = 70;
const GAP_Y = 20;
const PAD = 16;
const STATE_LABEL = {
  pending: "pending", running: "running…", succeeded: "✓ succeeded", failed: "✗ failed",
  skipped: "skipped", cancelled: "cancelled",
};

/** The edges to draw: the server's (GET /v1/workflows/{id} answers graph.edges, the dependencies the
 * engine schedules by: depends_on, branch/decision choices, and results read through $path inputs, map
 * items and conditions). Only edges between known steps are kept. */
export function edgesOf(definition, graph) {
  const ids = new Set(((definition && definition.steps) || []).map((st) => st.id));
  return ((graph && graph.edges) || []).filter((e) => ids.has(e.from) && ids.has(e.to));
}

/** Layers (arrays of step ids) and each node's {x, y}. Pure: exported for reuse and reasoning. */
export function layout(definition, graph) {
  const steps = (definition && definition.steps) || [];
  const order = steps.map((st) => st.id);
  const edges = edgesOf(definition, graph);
  const parents = new Map(order.map((id) => [id, []]));
  for (const e of edges) parents.get(e.to).push(e.from);
  const layerOf = new Map();
  const visiting = new Set();
  const depth = (id) => {
    if (layerOf.has(id)) return layerOf.get(id);
    if (visiting.has(id)) return 0; // a cycle cannot be submitted; stay safe anyway
    visiting.add(id);
    const ps = parents.get(id) || [];
    const value = ps.length ? 1 + Math.max(...ps.map(depth)) : 0;
    visiting.delete(id);
    layerOf.set(id, value);
    return value;
  };
  order.forEach(depth);
  const layers = [];
  for (const id of order) {
    const l = layerOf.get(id);
    (layers[l] = layers[l] || []).push(id);
  }
  const position = new Map();
  layers.forEach((layer, li) => {
    if (li > 0) {
      const score = (id) => {
        const ps = parents.get(id).filter((p) => position.has(p));
        return ps.length ? ps.reduce((sum, p) => sum + position.get(p), 0) / ps.length : Infinity;
      };
      const scored = layer.map((id, i) => [score(id), i, id]);
      scored.sort((a, b) => (a[0] - b[0]) || (a[1] - b[1]));
      layers[li] = scored.map((x) => x[2]);
    }
    layers[li].forEach((id, i) => position.set(id, i));
  });
  const tallest = Math.max(1, ...layers.map((l) => l.length));
  const height = PAD * 2 + tallest * NODE_H + (tallest - 1) * GAP_Y;
  const width = PAD * 2 + layers.length * NODE_W + Math.max(0, layers.length - 1) * GAP_X;
  const nodes = new Map();
  layers.forEach((layer, li) => {
    const column = layer.length * NODE_H + (layer.length - 1) * GAP_Y;
    const top = (height - column) / 2;
    layer.forEach((id, i) => nodes.set(id, { x: PAD + li * (NODE_W + GAP_X), y: top + i * (NODE_H + GAP_Y) }));
  });
  return { layers, nodes, edges, width, height };
}

function truncate(text, max) {
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

/**
 * Draw the DAG into `container`. `steps` are the API's step views (status, total, succeeded...).
 * Returns {setStatus(stepId, status, step?), select(stepId)}.
 */
export function renderDag(container, definition, graph, steps, { onSelect } = {}) {
  clear(container);
  const { nodes, edges, width, height } = layout(definition, graph);
  const types = new Map(((definition && definition.steps) || []).map((st) => [st.id, st.type || "sequential"]));
  // Shrinks to the panel's width down to about half size; a larger graph scrolls instead.
  const svg = s("svg", {
    class: "dag", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "workflow graph",
    style: { minWidth: `${Math.round(width * 0.55)}px` },
  });
  svg.append(s("defs", {}, s("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse",
  }, s("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#9aa3b5" }))));
  const edgeLayer = s("g", { class: "edges" });
  for (const e of edges) {
    const a = nodes.get(e.from);
    const b = nodes.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + NODE_W;
    const y1 = a.y + NODE_H / 2;
    const x2 = b.x - 2;
    const y2 = b.y + NODE_H / 2;
    const mx = (x1 + x2) / 2;
    edgeLayer.append(s("path", {
      class: `dag-edge ${e.kind}`, d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`, "marker-end": "url(#arrow)",
      dataset: { from: e.from, to: e.to },
    }));
    if (e.label) {
      edgeLayer.append(s("text", { class: "dag-edge-label", x: mx, y: (y1 + y2) / 2 - 4, "text-anchor": "middle", text: e.label }));
    }
  }
  svg.append(edgeLayer);
  const byId = new Map((steps || []).map((st) => [st.id, st]));
  const views = new Map();
  const nodeLayer = s("g", { class: "nodes" });
  for (const [id, pos] of nodes) {
    const g = s("g", {
      class: "dag-node status-pending", transform: `translate(${pos.x} ${pos.y})`, tabindex: 0,
      role: "button", "aria-label": `step ${id}`, dataset: { stepId: id, status: "pending" },
    });
    const title = s("title", { text: id });
    g.append(
      title,
      s("rect", { width: NODE_W, height: NODE_H, rx: 8, ry: 8 }),
      s("rect", { class: "bar", x: 0, y: 8, width: 4, height: NODE_H - 16, rx: 2 }),
      s("text", { x: 12, y: 19, text: truncate(id, 21) }),
      s("text", { class: "type", x: 12, y: 37, text: types.get(id) }),
    );
    const state = s("text", { class: "state", x: NODE_W - 10, y: 37, "text-anchor": "end", text: "pending" });
    g.append(state);
    const pick = () => onSelect && onSelect(id);
    g.addEventListener("click", pick);
    g.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); pick(); } });
    nodeLayer.append(g);
    views.set(id, { g, state, title });
  }
  svg.append(nodeLayer);
  container.append(svg);

  const setStatus = (id, status, step) => {
    const view = views.get(id);
    if (!view || !status) return;
    const selected = view.g.classList.contains("selected");
    view.g.setAttribute("class", `dag-node status-${status}${selected ? " selected" : ""}`);
    view.g.dataset.status = status;
    let label = STATE_LABEL[status] || status;
    if (step && step.total && ["parallel", "map"].includes(step.type)) {
      label = `${label.replace("…", "")} ${step.succeeded || 0}/${step.total}`;
    }
    view.state.textContent = label;
    view.title.textContent = `${id} (${types.get(id)}): ${status}`;
  };
  const select = (id) => {
    for (const [sid, view] of views) view.g.classList.toggle("selected", sid === id);
  };
  for (const [id] of nodes) {
    const st = byId.get(id);
    setStatus(id, (st && st.status) || "pending", st);
  }
  return { setStatus, select };
}
