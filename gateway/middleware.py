"""Pure ASGI middleware (``BaseHTTPMiddleware`` would break context propagation for tracing).

:class:`TokenAuth` checks ``Authorization: Bearer <token>`` on every route but the public ones,
comparing in constant time and never logging the token. Without that header, the dashboard's
session cookie authenticates (see :mod:`gateway.dashboard.sessions`): requests that change something
must then also carry the session's CSRF token in ``X-Flow-CSRF`` (403 otherwise), and a dashboard
page (``/ui/...``) without a live session redirects to the login page. :class:`BodyLimit` answers
413 when a request body exceeds the configured size, before a route reads it.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Sequence
from typing import Protocol
from urllib.parse import quote

from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from flowcore.bodycap import call_with_body_cap
from flowcore.errors import FlowError

# The dashboard's login page, logout (it checks the session itself) and static assets are public too.
PUBLIC_PATHS = frozenset({"/healthz", "/v1/openapi.json", "/ui/login", "/ui/logout"})
# Webhook deliveries carry an HMAC signature instead of a bearer token (checked by the route).
PUBLIC_PREFIXES = ("/v1/hooks/", "/ui/static/")
UI_PREFIX = "/ui"
LOGIN_PATH = "/ui/login"
SESSION_COOKIE = "flow_session"
CSRF_HEADER = b"x-flow-csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class SessionLookup(Protocol):
    async def csrf_token(self, session_id: str) -> str | None:
        """The CSRF token of a live session; None when the id is unknown or expired."""


def token_matches(presented: bytes, tokens: Sequence[bytes]) -> bool:
    ok = False
    for token in tokens:  # no early exit: the time taken does not say which token matched
        ok |= hmac.compare_digest(presented, token)
    return ok


async def _json_error(send: Send, status: int, code: str, message: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": code, "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


class TokenAuth:
    def __init__(self, app: ASGIApp, tokens: list[str], sessions: SessionLookup | None = None) -> None:
        self.app = app
        self.tokens = [t.encode() for t in tokens]
        self.sessions = sessions

    def valid(self, presented: bytes) -> bool:
        return token_matches(presented, self.tokens)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        header = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
                break
        if not header and self.sessions is not None:
            await self._by_session(self.sessions, scope, receive, send)
            return
        scheme, _, presented = header.partition(b" ")
        if scheme.lower() != b"bearer" or not presented:
            await _json_error(send, 401, "unauthorized", "missing bearer token", [(b"www-authenticate", b"Bearer")])
            return
        if not self.valid(presented.strip()):
            await _json_error(send, 401, "unauthorized", "invalid token", [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)

    async def _by_session(self, sessions: SessionLookup, scope: Scope, receive: Receive, send: Send) -> None:
        """No Authorization header: the dashboard's session cookie, with CSRF checks on changes."""
        path: str = scope.get("path", "")
        headers = dict(scope["headers"])
        cookie_header = b"; ".join(v for k, v in scope["headers"] if k == b"cookie")  # HTTP/2 may split it
        cookies = cookie_parser(cookie_header.decode("latin-1"))
        session_id = cookies.get(SESSION_COOKIE, "")
        try:
            csrf = await sessions.csrf_token(session_id) if session_id else None
        except FlowError as exc:  # outside the app's error handlers: answer here
            await _json_error(send, exc.status_code, exc.code, exc.message)
            return
        if csrf is None:
            if path == UI_PREFIX or path.startswith(UI_PREFIX + "/"):
                # Back to this page after logging in (a path of ours: the login route checks it).
                await _redirect(send, f"{LOGIN_PATH}?next={quote(path, safe='/')}")
                return
            message = "session expired; log in again" if session_id else "missing bearer token"
            await _json_error(send, 401, "unauthorized", message, [(b"www-authenticate", b"Bearer")])
            return
        if scope.get("method", "GET") not in SAFE_METHODS:
            presented = headers.get(CSRF_HEADER, b"")
            if not presented or not hmac.compare_digest(presented, csrf.encode()):
                await _json_error(
                    send, 403, "csrf_failed",
                    "a request authenticated by the session cookie must carry the session's CSRF token in X-Flow-CSRF",
                )
                return
        state = scope.setdefault("state", {})
        state["auth"] = "session"
        await self.app(scope, receive, send)


async def _redirect(send: Send, location: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [(b"location", location.encode()), (b"content-length", b"0"), (b"cache-control", b"no-store")],
        }
    )
    await send({"type": "http.response.body", "body": b""})


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _json_error(send, 413, "body_too_large", f"request body exceeds {self.max_bytes} bytes")
                return
        await call_with_body_cap(self.app, scope, receive, send, max_bytes=self.max_bytes, refuse=_json_error)

