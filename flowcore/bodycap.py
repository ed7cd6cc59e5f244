"""The body cap of the ASGI apps we serve (gateway and pool): a body that grows past the cap while it
streams in is answered 413 before the app reads more of it, whatever its Content-Length said.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowcore.errors import BodyTooLarge

Refuse = Callable[[Send, int, str, str], Awaitable[None]]
"""Writes an error response: ``(send, status, code, message)``."""


async def call_with_body_cap(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, *, max_bytes: int, refuse: Refuse
) -> None:
    """Run ``app`` on an HTTP request whose body may not pass ``max_bytes``."""
    too_large = f"request body exceeds {max_bytes} bytes"
    received = 0
    started = False

    async def limited_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise BodyTooLarge(too_large)
        return message

    async def tracking_send(message: Message) -> None:
        nonlocal started
        if message["type"] == "http.response.start":
            started = True
        await send(message)

    try:
        await app(scope, limited_receive, tracking_send)
    except BodyTooLarge:
        if not started:
            await refuse(send, 413, "body_too_large", too_large)
