// Shared helpers of the dashboard: the API client, DOM builders, formatting, masking, live updates.
// Everything renders through textContent / attributes (never innerHTML), so data cannot inject markup.

export const SVG_NS = "http://www.w3.org/2000/svg";
export const WORKFLOW_STATUSES = ["pending", "queued", "running", "completed", "failed", "cancelled"];

/** Flow control (ADR 013): a badge saying why a run waits or was refused (its first word), the reason as title. */
export function reasonBadge(reason) {
  if (!reason) return null;
  const word = (reason.split(":")[0] || "queued").trim();
  return h("span", { class: `badge reason reason-${word}`, title: reason, text: word });
}
export const FINISHED = new Set(["completed", "failed", "cancelled"]);
// The same rule as gateway/dashboard/masking.py: the server masks, this masks again when rendering.
export const SECRET_NAME = /token|secret|passw|pwd|passphrase|key|credential|auth|private|cookie|session|signature|cert|dsn|salt/i;
export const MASK = "••••••••";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)flow_csrf=([^;]*)/);
  return match ? decodeURIComponent(match[1]) : "";
}

export function goLogin() {
  location.assign("/ui/login?next=" + encodeURIComponent(location.pathname + location.search));
}

/** Call the JSON API with the session cookie; POSTs carry the CSRF token. Throws ApiError. */
export async function api(path, { method = "GET", body, query } = {}) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, String(value));
  }
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-Flow-CSRF"] = csrfToken();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = { message: text.slice(0, 300) }; }
  }
  if (response.status === 401) {
    goLogin();
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") el.textContent = String(value);
    else if (key === "class") el.setAttribute("class", value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") Object.assign(el.style, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

function appendAll(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: h("a", {href, class, text, onclick}, ...children). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

/** An SVG element, same signature as h(). */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function badge(status, extra = "") {
  return h("span", { class: `badge status-${status || "pending"} ${extra}`, text: status || "pending" });
}

export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtAgo(iso) {
  if (!iso) return "—";
  const seconds = (Date.now() - new Date(iso).getTime()) / 1000;
  if (!Number.isFinite(seconds)) return "—";
  const future = seconds < 0;
  const abs = Math.abs(seconds);
  const text = abs < 60 ? `${Math.round(abs)}s` : abs < 3600 ? `${Math.round(abs / 60)}m`
    : abs < 86400 ? `${(abs / 3600).toFixed(1)}h` : `${(abs / 86400).toFixed(1)}d`;
  return future ? `in ${text}` : `${text} ago`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(Number(seconds))) return "—";
  const v = Number(seconds);
  if (v < 1) return `${Math.round(v * 1000)} ms`;
  if (v < 60) return `${v.toFixed(v < 10 ? 2 : 1)} s`;
  if (v < 3600) return `${Math.floor(v / 60)}m ${Math.round(v % 60)}s`;
  return `${Math.floor(v / 3600)}h ${Math.round((v % 3600) / 60)}m`;
}

export function fmtNumber(value, digits = 0) {
  if (value === null || value === undefined || !Number.isFinite(Number(value))) return "—";
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

export function fmtJson(value) {
  return value === undefined ? "" : JSON.stringify(value, null, 2);
}

export function shortId(id, n = 12) {
  return id && id.length > n ? id.slice(0, n) + "…" : id || "";
}

/** An env mapping (or ["NAME=value"] list) with secret-looking values masked. */
export function maskEnv(env) {
  if (Array.isArray(env)) {
    return env.map((item) => {
      if (typeof item !== "string" || !item.includes("=")) return item;
      const [name, ...rest] = item.split("=");
      return SECRET_NAME.test(name) && rest.join("=") ? `${name}=${MASK}` : item;
    });
  }
  const out = {};
  for (const [name, value] of Object.entries(env || {})) {
    out[name] = SECRET_NAME.test(name) && value !== "" && value !== null ? MASK : value;
  }
  return out;
}

/** A <dl> of env variables, secret values masked. */
export function envList(env) {
  const masked = maskEnv(env || {});
  const entries = Array.isArray(masked) ? masked.map((item) => String(item).split(/=(.*)/s).slice(0, 2)) : Object.entries(masked);
  if (!entries.length) return h("p", { class: "muted", text: "no env" });
  return h("dl", { class: "kv env" }, entries.map(([name, value]) => [
    h("dt", { class: "mono", text: name }),
    h("dd", { class: value === MASK ? "mono masked" : "mono", text: String(value ?? "") }),
  ]));
}

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  if (!box) return;
  const el = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status", text: message });
  box.append(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
}

export function errorText(err) {
  if (err instanceof ApiError) {
    const field = err.body && err.body.field ? ` (${err.body.field})` : "";
    return `${err.status}: ${err.message}${field}`;
  }
  return String(err && err.message ? err.message : err);
}

/** Ask before a destructive action; resolves true when confirmed. */
export function confirmAction(text, okLabel = "Confirm") {
  const dialog = document.getElementById("confirm-dialog");
  if (!dialog || typeof dialog.showModal !== "function") return Promise.resolve(window.confirm(text));
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-yes").textContent = okLabel;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.showModal();
  });
}

export function setLive(mode) {
  const el = document.getElementById("live-indicator");
  if (!el) return;
  el.dataset.live = mode;
  el.textContent = mode === "sse" ? "live" : mode === "poll" ? "polling" : "idle";
}

/** Run fn at most once per `ms`, trailing call kept. */
export function throttle(fn, ms) {
  let timer = null;
  let last = 0;
  return (...args) => {
    const wait = Math.max(0, last + ms - Date.now());
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      last = Date.now();
      fn(...args);
    }, wait);
  };
}

/**
 * Server-sent events with a polling fallback. `types` are the event names to listen to; onEvent(type, data).
 * When the stream cannot be opened or is closed for good, `poll` runs every `pollMs` instead.
 */
export function liveStream(url, { types, onEvent, onEnd, poll, pollMs = 3000 }) {
  let closed = false;
  let timer = null;
  let source = null;
  const startPolling = () => {
    if (closed || timer || !poll) return;
    setLive("poll");
    timer = setInterval(() => { if (!closed) poll(); }, pollMs);
  };
  if (typeof EventSource === "undefined") {
    startPolling();
  } else {
    source = new EventSource(url, { withCredentials: true });
    source.onopen = () => setLive("sse");
    for (const type of types) {
      source.addEventListener(type, (event) => {
        let data;
        try { data = JSON.parse(event.data); } catch { return; }
        onEvent(type, data);
      });
    }
    source.addEventListener("end", (event) => {
      source.close();
      setLive("idle");
      let data = {};
      try { data = JSON.parse(event.data); } catch { /* ended anyway */ }
      if (onEnd) onEnd(data);
    });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        startPolling();
      }
    };
  }
  return {
    close() {
      closed = true;
      if (source) source.close();
      if (timer) clearInterval(timer);
    },
    polling: () => timer !== null,
  };
}
