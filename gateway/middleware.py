"""Pure ASGI middleware (``BaseHTTPMiddleware`` would break context propagation for tracing).

:class:`HostCheck` refuses (421) a request whose ``Host`` this gateway is not configured for, before
anything else (DNS rebinding). :class:`TokenAuth` authenticates every route but the public ones and
applies :mod:`gateway.scopes`: ``Authorization: Bearer <token>`` is looked up by its SHA-256 in
constant time (a scoped token is never held in clear) and never logged; without that header, the
dashboard's session cookie authenticates (see :mod:`gateway.dashboard.sessions`), with the grant of
the token that opened the session while that token is still configured unchanged; requests that
change something must then also carry the session's CSRF token in ``X-Flow-CSRF`` (403 otherwise),
and a dashboard page (``/ui/...``) without a live session redirects to the login page. Then the
route's scope (:func:`gateway.scopes.required`) and, for a token limited to some workflows, the
workflow the request names are checked: 403 naming what is missing. Wrong bearer tokens count
against the client's throttle (:class:`gateway.clients.FailureThrottle`): 429 with ``Retry-After``.
:class:`BodyLimit` answers 413 when a request body exceeds the configured size, before a route reads it.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import quote

from redis.exceptions import RedisError
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from flowcore.bodycap import call_with_body_cap
from flowcore.errors import FlowError
from flowcore.ids import is_valid_id
from gateway.clients import FailureThrottle, Network, client_address, host_allowed, throttle_key
from gateway.scopes import Grant, Requirement, TokenBook, required

# The dashboard's login page, logout (it checks the session itself) and static assets are public too.
PUBLIC_PATHS = frozenset({"/healthz", "/v1/openapi.json", "/ui/login", "/ui/logout"})
# Webhook deliveries carry an HMAC signature instead of a bearer token (checked by the route).
PUBLIC_PREFIXES = ("/v1/hooks/", "/ui/static/")
UI_PREFIX = "/ui"
LOGIN_PATH = "/ui/login"
SESSION_COOKIE = "flow_session"
CSRF_HEADER = b"x-flow-csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_TOKEN_BYTES = 4096
BEARER_CHALLENGE = (b"www-authenticate", b"Bearer")


class SessionLookup(Protocol):
    async def lookup(self, session_id: str) -> tuple[str, Grant] | None:
        """The CSRF token and grant of a live session; None when unknown, expired or its token revoked."""


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


async def too_many_failures(send: Send, retry_after: int) -> None:
    await _json_error(
        send, 429, "too_many_requests",
        f"too many failed authentication attempts from this client; try again in {retry_after} s",
        [(b"retry-after", str(retry_after).encode())],
    )


class HostCheck:
    """421 for a ``Host`` not in the allow-list (``allowed`` None: any host). ``/healthz`` is exempt."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str] | None) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.allowed is not None and scope.get("path") != "/healthz":
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
            if not host_allowed(host, self.allowed):
                shown = (host or "")[:100]
                await _json_error(
                    send, 421, "host_not_allowed",
                    f"this gateway does not serve the host {shown!r}; an operator can add it to FLOW_ALLOWED_HOSTS",
                )
                return
        await self.app(scope, receive, send)


class TokenAuth:
    def __init__(
        self,
        app: ASGIApp,
        book: TokenBook,
        sessions: SessionLookup | None = None,
        throttle: FailureThrottle | None = None,
        trusted: tuple[Network, ...] = (),
    ) -> None:
        self.app = app
        self.book = book
        self.sessions = sessions
        self.throttle = throttle
        self.trusted = trusted

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
            grant = await self._by_session(self.sessions, scope, send)
            via = "session"
        else:
            grant = await self._by_bearer(header, scope, send)
            via = "bearer"
        if grant is None:
            return  # answered
        if not await self._permitted(grant, scope, send):
            return
        state = scope.setdefault("state", {})
        state["auth"] = via
        state["grant"] = grant
        await self.app(scope, receive, send)

    async def _by_bearer(self, header: bytes, scope: Scope, send: Send) -> Grant | None:
        scheme, _, presented = header.partition(b" ")
        presented = presented.strip()
        if scheme.lower() != b"bearer" or not presented:
            await _json_error(send, 401, "unauthorized", "missing bearer token", [BEARER_CHALLENGE])
            return None
        client = throttle_key(client_address(scope, self.trusted))
        if self.throttle is not None:
            wait = self.throttle.retry_after(client)
            if wait:  # before the check: a throttled client learns nothing about its guesses
                await too_many_failures(send, wait)
                return None
        grant = self.book.lookup(presented) if len(presented) <= MAX_TOKEN_BYTES else None
        if grant is None:
            if self.throttle is not None:
                self.throttle.failed(client)
            await _json_error(send, 401, "unauthorized", "invalid token", [BEARER_CHALLENGE])
            return None
        return grant

    async def _by_session(self, sessions: SessionLookup, scope: Scope, send: Send) -> Grant | None:
        """No Authorization header: the dashboard's session cookie, with CSRF checks on changes."""
        path: str = scope.get("path", "")
        headers = dict(scope["headers"])
        cookie_header = b"; ".join(v for k, v in scope["headers"] if k == b"cookie")  # HTTP/2 may split it
        cookies = cookie_parser(cookie_header.decode("latin-1"))
        session_id = cookies.get(SESSION_COOKIE, "")
        try:
            found = await sessions.lookup(session_id) if session_id else None
        except FlowError as exc:  # outside the app's error handlers: answer here
            await _json_error(send, exc.status_code, exc.code, exc.message)
            return None
        if found is None:
            if path == UI_PREFIX or path.startswith(UI_PREFIX + "/"):
                # Back to this page after logging in (a path of ours: the login route checks it).
                await _redirect(send, f"{LOGIN_PATH}?next={quote(path, safe='/')}")
                return None
            message = "session expired; log in again" if session_id else "missing bearer token"
            await _json_error(send, 401, "unauthorized", message, [BEARER_CHALLENGE])
            return None
        csrf, grant = found
        if scope.get("method", "GET") not in SAFE_METHODS:
            presented = headers.get(CSRF_HEADER, b"")
            if not presented or not hmac.compare_digest(presented, csrf.encode()):
                await _json_error(
                    send, 403, "csrf_failed",
                    "a request authenticated by the session cookie must carry the session's CSRF token in X-Flow-CSRF",
                )
                return None
        return grant

    async def _permitted(self, grant: Grant, scope: Scope, send: Send) -> bool:
        method = scope.get("method", "GET")
        path = scope.get("path", "")
        need = required(method, path)
        if not grant.allows(need.scope):
            await _json_error(
                send, 403, "forbidden", f"{grant.describe()} may not {method} {path[:200]}: it needs scope {need.scope!r}"
            )
            return False
        if grant.restricted:
            try:
                ids = await _named_workflows(scope, need)
            except (RedisError, FlowError) as exc:
                await _json_error(send, 503, "service_unavailable", f"redis is unreachable: {type(exc).__name__}",
                                  [(b"retry-after", b"2")])
                return False
            if not ids or not grant.allows_workflow(*ids):
                await _json_error(
                    send, 403, "forbidden",
                    f"{grant.describe()} is limited to some workflows; {method} {path[:200]} is not about one of them",
                )
                return False
        return True


async def _named_workflows(scope: Scope, need: Requirement) -> tuple[str | None, ...]:
    """The workflow a request names and the template it was started from (or a trigger's template)."""
    state: Any = scope["app"].state
    redis, keys = state.redis, state.keys
    if need.workflow_id is not None:
        if not is_valid_id(need.workflow_id):
            return ()
        raw = await redis.hget(keys.workflow(need.workflow_id), "origin")
        template = None
        if raw:
            try:
                origin = json.loads(raw)
                template = origin.get("template_id") if isinstance(origin, dict) else None
            except ValueError:
                template = None
        return (need.workflow_id, template if isinstance(template, str) else None)
    if need.trigger_id is not None:
        if not is_valid_id(need.trigger_id):
            return ()
        owner = await redis.hget(keys.trigger(need.trigger_id), "workflow_id")
        return (owner.decode() if isinstance(owner, bytes) else owner,) if owner else ()
    return ()


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

