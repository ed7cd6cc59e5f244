"""Headless Chromium driven over the Chrome DevTools Protocol: the dashboard's browser tests.

Debian's ``chromium`` (installed by scripts/bootstrap.sh) is started with
``--remote-debugging-port=0`` on 127.0.0.1 and a fresh profile; the port it picked is read from
``DevToolsActivePort`` and the protocol spoken over its websocket with the ``websockets`` package.
Nothing is downloaded and no driver binary is needed. Waiting is bounded polling of a JavaScript
predicate in the page, never a sleep of a guessed length.

Also used by ``scripts/screenshot_dashboard.py``.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
from collections import deque
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")  # as scripts/bootstrap.sh looks for them
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


class BrowserError(RuntimeError):
    pass


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One Chromium process and one DevTools connection; pages are targets attached in flat mode."""

    def __init__(self, binary: str, workdir: Path, *, width: int = 1440, height: int = 1000) -> None:
        self.binary = binary
        self.workdir = workdir
        self.width = width
        self.height = height
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws: ClientConnection | None = None
        self._exit = contextlib.ExitStack()
        self._ids = itertools.count(1)
        self._events: dict[str | None, deque[dict[str, Any]]] = {}

    def start(self, timeout_s: float = 30) -> Browser:
        profile = self.workdir / "profile"
        profile.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "chromium.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [self.binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={self.width},{self.height}", "about:blank"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while True:
            if port_file.exists():
                lines = port_file.read_text().split()
                if len(lines) >= 2:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise BrowserError(f"chromium did not open its DevTools port:\n{self.log_tail()}")
            time.sleep(0.05)
        url = f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        # entered as a context manager: websockets >= 17.1 deprecates a bare connect()
        self.ws = self._exit.enter_context(
            connect(url, max_size=None, proxy=None, open_timeout=timeout_s, ping_interval=None)
        )
        return self

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join((self.workdir / "chromium.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None, timeout_s: float = 60) -> dict[str, Any]:
        if self.ws is None:
            raise BrowserError("the browser is not started")
        msg_id = next(self._ids)
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"no answer to {method} within {timeout_s}s")
            try:
                raw = self.ws.recv(timeout=remaining)
            except TimeoutError:
                continue
            answer = json.loads(raw)
            if answer.get("id") == msg_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result
            if "method" in answer:
                self._events.setdefault(answer.get("sessionId"), deque(maxlen=500)).append(answer)

    def events(self, session: str, method: str) -> list[dict[str, Any]]:
        return [e["params"] for e in self._events.get(session, ()) if e.get("method") == method]

    def new_page(self) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, target, session)
        for domain in ("Page", "Runtime", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        return page

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.send("Browser.close", timeout_s=5)
            except Exception:
                pass
            self._exit.close()
            self.ws = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Page:
    def __init__(self, browser: Browser, target: str, session: str) -> None:
        self.browser = browser
        self.target = target
        self.session = session

    def send(self, method: str, params: dict[str, Any] | None = None, timeout_s: float = 60) -> dict[str, Any]:
        return self.browser.send(method, params, session=self.session, timeout_s=timeout_s)

    def evaluate(self, expression: str) -> Any:
        answer = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"{expression[:80]!r} threw: {text}")
        return answer.get("result", {}).get("value")

    def wait_for(self, predicate: str, what: str, timeout_s: float = 60, interval_s: float = 0.1) -> Any:
        """Poll a JavaScript expression until it is truthy (bounded); returns its value."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while True:
            try:
                last = self.evaluate(predicate)
            except BrowserError as exc:  # e.g. during a navigation
                last = str(exc)
            else:
                if last:
                    return last
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r}); page: {self.url()}")
            time.sleep(interval_s)

    def url(self) -> str:
        try:
            return str(self.evaluate("location.href"))
        except BrowserError:
            return "?"

    def goto(self, url: str, timeout_s: float = 60) -> None:
        """Navigate and wait until the new document has loaded (redirects followed)."""
        self.evaluate("window.__flowOld = true")
        answer = self.send("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise BrowserError(f"navigating to {url}: {answer['errorText']}")
        self.wait_for("!window.__flowOld && document.readyState === 'complete'", f"{url} to load", timeout_s)

    def wait_navigation(self, timeout_s: float = 60) -> None:
        """After an action that navigates (a form submit, location.assign): wait for the new document."""
        self.wait_for("!window.__flowOld && document.readyState === 'complete'", "the next page", timeout_s)

    def mark(self) -> None:
        """Mark the current document; wait_navigation() waits until it is replaced."""
        self.evaluate("window.__flowOld = true")

    def click(self, selector: str, timeout_s: float = 30) -> None:
        """A real mouse click at the centre of the first element matching ``selector``."""
        sel = json.dumps(selector)
        box = self.wait_for(
            f"""(() => {{ const el = document.querySelector({sel}); if (!el) return null;
                el.scrollIntoView({{block: 'center', inline: 'center'}});
                const r = el.getBoundingClientRect();
                return r.width > 0 && r.height > 0 ? {{x: r.left + r.width / 2, y: r.top + r.height / 2}} : null; }})()""",
            f"{selector} to be visible",
            timeout_s,
        )
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1},
            )

    def type(self, selector: str, text: str) -> None:
        sel = json.dumps(selector)
        self.wait_for(f"!!document.querySelector({sel})", f"{selector} to exist")
        self.evaluate(f"(() => {{ const el = document.querySelector({sel}); el.focus(); el.value = ''; }})()")
        self.send("Input.insertText", {"text": text})

    def text(self, selector: str) -> str:
        value = self.evaluate(f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''")
        return str(value)

    def cookies(self, url: str) -> list[dict[str, Any]]:
        cookies: list[dict[str, Any]] = self.send("Network.getCookies", {"urls": [url]}).get("cookies", [])
        return cookies

    def js_errors(self) -> list[str]:
        """Uncaught exceptions of the page's scripts so far."""
        out = []
        for params in self.browser.events(self.session, "Runtime.exceptionThrown"):
            details = params.get("exceptionDetails", {})
            out.append(details.get("exception", {}).get("description") or details.get("text", "?"))
        return out

    def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = self.send("Page.getLayoutMetrics")
            size: dict[str, float] = metrics.get("cssContentSize") or metrics.get("contentSize") or {}
            params["clip"] = {"x": 0, "y": 0, "width": max(size.get("width", 1), 1), "height": max(size.get("height", 1), 1), "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.browser.send("Target.closeTarget", {"targetId": self.target}, timeout_s=10)
        except BrowserError:
            pass
