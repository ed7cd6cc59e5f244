// The dashboard's entry point: picks the page from the path, wires the nav and logout.
import { h, clear } from "./core.js";
import * as workflows from "./pages/workflows.js";
import * as workflow from "./pages/workflow.js";
import * as pools from "./pages/pools.js";
import * as triggers from "./pages/triggers.js";
import * as metrics from "./pages/metrics.js";

const ROUTES = [
  [/^\/ui\/?$/, "workflows", () => workflows.render],
  [/^\/ui\/workflows\/?$/, "workflows", () => workflows.render],
  [/^\/ui\/workflows\/([^/]+)\/?$/, "workflows", () => workflow.render, (m) => ({ id: decodeURIComponent(m[1]) })],
  [/^\/ui\/pools\/?$/, "pools", () => pools.render],
  [/^\/ui\/triggers\/?$/, "triggers", () => triggers.render],
  [/^\/ui\/metrics\/?$/, "metrics", () => metrics.render],
];

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)flow_csrf=([^;]*)/);
  return match ? decodeURIComponent(match[1]) : "";
}

async function logout() {
  try {
    await fetch("/ui/logout", { method: "POST", headers: { "X-Flow-CSRF": csrfToken() }, credentials: "same-origin" });
  } finally {
    location.assign("/ui/login");
  }
}

function start() {
  const main = document.getElementById("main");
  document.getElementById("logout").addEventListener("click", logout);
  for (const [pattern, nav, page, params] of ROUTES) {
    const match = location.pathname.match(pattern);
    if (!match) continue;
    for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("active", link.dataset.nav === nav);
    page()(main, params ? params(match) : {});
    document.body.dataset.page = nav;
    return;
  }
  clear(main).append(h("h1", { text: "Not found" }),
    h("p", {}, "No dashboard page at ", h("code", { text: location.pathname }), ". ", h("a", { href: "/ui/", text: "Workflows" })));
}

start();
