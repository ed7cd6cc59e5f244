"""The dashboard under ``/ui``: login and logout, the page shell and the static assets.

The pages are static HTML, CSS and JavaScript (``static/``) that read the JSON API with the
session cookie; nothing is rendered on the server except the login page's error message.

- ``GET /ui/login``: the login form (public). ``POST /ui/login`` with the token in the body
  (``application/x-www-form-urlencoded`` from the form, or JSON ``{"token": ...}``): 303 to the
  page asked for (``next``, a ``/ui/...`` path) with an HttpOnly, SameSite=Strict session cookie and
  a script-readable CSRF cookie (``Secure`` over TLS, or behind a trusted proxy that says so);
  401 (invalid token), 403 (a token without the read scope), 422 (no token) or 429 (too many
  failures from this client, ``Retry-After``) with no cookie otherwise.
- ``POST /ui/logout``: ends the session (it needs the CSRF token when the session is still live).
- ``GET /ui/static/...``: assets (public: they hold no data).
- ``GET /ui/...``: every other path is the application shell (authenticated by
  :class:`gateway.middleware.TokenAuth`); its script picks the page from the path.
"""

from __future__ import annotations

import functools
import html
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.clients import came_over_tls, client_address, throttle_key
from gateway.dashboard.sessions import CSRF_COOKIE, SESSION_COOKIE, SessionStore, csrf_matches
from gateway.middleware import CSRF_HEADER
from gateway.scopes import READ, AuthConfig

STATIC_DIR = Path(__file__).resolve().parent / "static"
HOME = "/ui/"
MAX_TOKEN_CHARS = 4096
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        b"font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make the login form's Origin "null"
    (b"x-frame-options", b"DENY"),
]
_ERROR_MARK = "<!--flow:error-->"
_NEXT_MARK = "{{next}}"


class SecurityHeaders:
    """Adds the CSP and friends (and ``no-cache``) to every dashboard answer (pure ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers.extend((k, v) for k, v in SECURITY_HEADERS if k not in present)
                if b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-cache"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def _sessions(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.sessions
    return store


def safe_next(raw: str | None) -> str:
    """Where to go after logging in: a dashboard path of this gateway, else the home page."""
    if not raw or not raw.startswith("/ui") or "\\" in raw or raw.startswith("//"):
        return HOME
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or not (parts.path == "/ui" or parts.path.startswith("/ui/")):
        return HOME
    if parts.path.startswith(("/ui/login", "/ui/logout", "/ui/static/")):
        return HOME
    return raw


@functools.cache
def _login_template() -> str:
    return (STATIC_DIR / "login.html").read_text(encoding="utf-8")


def login_html(next_path: str, error: str | None = None) -> str:
    page = _login_template().replace(_NEXT_MARK, html.escape(next_path, quote=True))
    if error:
        page = page.replace(
            _ERROR_MARK, f'<p class="login-error" id="login-error" role="alert">{html.escape(error)}</p>'
        )
    return page


async def _live_session(request: Request) -> bool:
    session_id = request.cookies.get(SESSION_COOKIE)
    return bool(session_id) and await _sessions(request).csrf_token(session_id or "") is not None


async def login_page(request: Request) -> Response:
    """The login form; a browser that already has a live session goes straight on."""
    next_path = safe_next(request.query_params.get("next"))
    if await _live_session(request):
        return RedirectResponse(next_path, status_code=303)
    return HTMLResponse(login_html(next_path))


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:  # not a browser's cross-site form: browsers send Origin with every POST
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def _login_fields(raw: bytes, content_type: str) -> dict[str, str]:
    text = raw.decode("utf-8", errors="replace")
    if content_type == "application/json":
        try:
            doc: Any = json.loads(text) if text.strip() else {}
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            return {"__malformed__": "1"}
        return {k: v for k, v in doc.items() if isinstance(k, str) and isinstance(v, str)}
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items() if v}


async def login(request: Request) -> Response:
    """Exchange the API token (in the body, never the URL) for a session cookie."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    wants_json = content_type == "application/json"
    fields = _login_fields(await request.body(), content_type)
    next_path = safe_next(fields.get("next"))

    def refuse(status: int, code: str, message: str, field: str | None = None) -> Response:
        if wants_json:
            body = {"error": code, "message": message, **({"field": field} if field else {})}
            return JSONResponse(body, status_code=status)
        return HTMLResponse(login_html(next_path, message), status_code=status)

    if not _same_origin(request):
        return refuse(403, "forbidden", "cross-site login refused: log in from this gateway's own page")
    if "__malformed__" in fields:
        return refuse(400, "malformed_body", "the body must be a JSON object like {\"token\": \"...\"}")
    token = fields.get("token", "").strip()
    if not token:
        return refuse(422, "invalid_input", "token is required: enter an API token", field="token")
    auth: AuthConfig = request.app.state.auth
    client = throttle_key(client_address(request.scope, auth.trusted))
    wait = auth.throttle.retry_after(client)
    if wait:  # before the check: a throttled client learns nothing about its guesses
        throttled = refuse(429, "too_many_requests", f"too many failed logins from this client; try again in {wait} s")
        throttled.headers["retry-after"] = str(wait)
        return throttled
    grant = auth.book.lookup(token.encode()) if len(token) <= MAX_TOKEN_CHARS else None
    if grant is None:
        auth.throttle.failed(client)
        return refuse(401, "unauthorized", "invalid token: the gateway does not accept this API token")
    if not grant.allows(READ):
        return refuse(403, "forbidden", f"{grant.describe()} cannot read: the dashboard needs the read scope")
    session = await _sessions(request).create(grant)
    response: Response = (
        JSONResponse({"status": "logged_in", "next": next_path})
        if wants_json
        else RedirectResponse(next_path, status_code=303)
    )
    secure = came_over_tls(request.scope, auth.trusted)  # TLS here, or reported by a trusted proxy
    ttl = _sessions(request).ttl_s
    response.set_cookie(
        SESSION_COOKIE, session.session_id, max_age=ttl, path="/", secure=secure, httponly=True, samesite="strict"
    )
    response.set_cookie(
        CSRF_COOKIE, session.csrf, max_age=ttl, path="/", secure=secure, httponly=False, samesite="strict"
    )
    response.headers["cache-control"] = "no-store"
    return response


async def logout(request: Request) -> Response:
    """End the session and clear its cookies; a live session must show its CSRF token to end."""
    session_id = request.cookies.get(SESSION_COOKIE, "")
    store = _sessions(request)
    expected = await store.csrf_token(session_id) if session_id else None
    presented = request.headers.get(CSRF_HEADER.decode())
    from_script = presented is not None
    if expected is not None:
        if presented is None:
            raw = await request.body()
            presented = _login_fields(raw, "application/x-www-form-urlencoded").get("csrf")
        if not csrf_matches(expected, presented):
            return JSONResponse(
                {"error": "csrf_failed", "message": "logout needs the session's CSRF token (X-Flow-CSRF)"},
                status_code=403,
            )
        await store.delete(session_id)
    response: Response = Response(status_code=204) if from_script else RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    response.delete_cookie(CSRF_COOKIE, path="/", samesite="strict")
    return response


async def shell(request: Request) -> Response:
    """The application shell for every dashboard page (its script routes by path)."""
    return FileResponse(STATIC_DIR / "app.html", media_type="text/html")


async def home(request: Request) -> Response:
    return RedirectResponse(HOME, status_code=303)


def routes() -> list[BaseRoute]:
    """The ``/ui`` routes (built when the app is, so the asset directory is checked then)."""
    ui = Router(
        routes=[
            Route("/login", login_page, methods=["GET"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
            Route("/{page:path}", shell, methods=["GET"]),
        ]
    )
    return [Route("/ui", home, methods=["GET"]), Mount("/ui", app=SecurityHeaders(ui), name="ui")]
