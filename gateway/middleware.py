"""Pure ASGI middleware (``BaseHTTPMiddleware`` would break context propagation for tracing).

:class:`TokenAuth` checks ``Authorization: Bearer <token>`` on every route but the public ones,
comparing in constant time and never logging the token. :class:`BodyLimit` answers 413 when a
request body exceeds the configured size, before a route reads it.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowcore.errors import BodyTooLarge

PUBLIC_PATHS = frozenset({"/healthz", "/v1/openapi.json"})
# Webhook deliveries carry an HMAC signature instead of a bearer token (checked by the route).
PUBLIC_PREFIXES = ("/v1/hooks/",)


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
    def __init__(self, app: ASGIApp, tokens: list[str]) -> None:
        self.app = app
        self.tokens = [t.encode() for t in tokens]

    def valid(self, presented: bytes) -> bool:
        ok = False
        for token in self.tokens:  # no early exit: the time taken does not say which token matched
            ok |= hmac.compare_digest(presented, token)
        return ok

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
        scheme, _, presented = header.partition(b" ")
        if scheme.lower() != b"bearer" or not presented:
            await _json_error(send, 401, "unauthorized", "missing bearer token", [(b"www-authenticate", b"Bearer")])
            return
        if not self.valid(presented.strip()):
            await _json_error(send, 401, "unauthorized", "invalid token", [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)


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
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(f"request body exceeds {self.max_bytes} bytes")
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _json_error(send, 413, "body_too_large", f"request body exceeds {self.max_bytes} bytes")

