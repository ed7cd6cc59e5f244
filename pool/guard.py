"""The pool API's door: pure ASGI middleware in front of every route (docs/security.md).

The pool service starts containers as the engine's user, so its API is for the stack's own
processes only. :class:`PoolGuard` answers, before any route runs:

- **403** to a request carrying ``Origin``: browsers add it to every cross-origin request (and to
  same-origin POSTs), the stack's processes never send one. A web page can send a ``text/plain``
  POST to ``127.0.0.1`` without a CORS preflight; this is what stops it.
- **401** without ``Authorization: Bearer <pool token>`` (compared in constant time), on every path
  but ``GET /healthz``, which says only that the service is up.
- **415** for a body that is not ``application/json`` (a bodiless POST may omit ``Content-Type``).
- **413** for a body over ``max_body_bytes``, by its ``Content-Length`` or while it streams in.

Every refusal is a JSON body ``{"error": ..., "message": ...}`` naming the problem.
"""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from flowcore.bodycap import call_with_body_cap

PUBLIC = frozenset({("GET", "/healthz"), ("HEAD", "/healthz")})
JSON_TYPES = frozenset({b"application/json"})


async def refuse(send: Send, status: int, code: str, message: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def media_type(value: bytes) -> bytes:
    """``application/json`` of ``Application/JSON; charset=utf-8``."""
    return value.split(b";", 1)[0].strip().lower()


class PoolGuard:
    def __init__(self, app: ASGIApp, *, token: str, max_body_bytes: int) -> None:
        if not token:
            raise ValueError("the pool API needs a token")
        self.app = app
        self._token = token.encode()
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)
        if b"origin" in headers:
            await refuse(send, 403, "cross_origin", "the pool API refuses requests from web pages (Origin header)")
            return
        if (scope.get("method", "GET"), scope.get("path", "")) not in PUBLIC and not self._authorized(headers):
            await refuse(
                send, 401, "unauthorized", "the pool API needs Authorization: Bearer <pool token>",
                [(b"www-authenticate", b"Bearer")],
            )
            return
        length = headers.get(b"content-length", b"")
        has_body = b"transfer-encoding" in headers or (length.isdigit() and int(length) > 0)
        content_type = headers.get(b"content-type")
        if (has_body or content_type is not None) and media_type(content_type or b"") not in JSON_TYPES:
            await refuse(send, 415, "unsupported_media_type", "the pool API accepts only Content-Type: application/json")
            return
        if length.isdigit() and int(length) > self.max_body_bytes:
            await refuse(send, 413, "body_too_large", f"request body exceeds {self.max_body_bytes} bytes")
            return
        await call_with_body_cap(self.app, scope, receive, send, max_bytes=self.max_body_bytes, refuse=refuse)

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, presented = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(presented.strip(), self._token)
