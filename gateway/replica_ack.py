"""Pure ASGI middleware: a write request is answered with success only once replicas hold it (ADR 021).

With ``FLOW_REDIS__MIN_REPLICAS_ACK`` above 0, a request that may change something (POST, PUT, PATCH,
DELETE: submissions, events, webhook deliveries, trigger fires, state writes, cancels) and whose route
answered 2xx is held back until the replication barrier (:class:`flowcore.replica_ack.ReplicaAck`)
confirms that enough replicas hold every write the master has, the request's included. When they do
not in time, or Redis went away meanwhile, the client gets ``503`` with ``Retry-After`` instead: the
write may exist, and a retry with the same event id, delivery id or ``Idempotency-Key`` is safe.

Reads, errors (4xx/5xx) and streams (GET) pass through untouched. Placed innermost, so that only
authenticated requests that a route handled cost a barrier.
"""

from __future__ import annotations

import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowcore.errors import FlowError
from flowcore.replica_ack import ReplicaAck

log = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ReplicaAckMiddleware:
    def __init__(self, app: ASGIApp, *, ack: ReplicaAck, retry_after_s: int) -> None:
        self.app = app
        self.ack = ack
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.ack.enabled or scope["type"] != "http" or scope["method"] not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold(message: Message) -> None:
            if message["type"] == "http.response.start" and 200 <= int(message["status"]) < 300:
                held.append(message)
                return
            if not held:
                await send(message)
                return
            held.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                await self._release(scope, held, send)

        await self.app(scope, receive, hold)

    async def _release(self, scope: Scope, held: list[Message], send: Send) -> None:
        """Confirm replication, then send the held response; or answer 503 instead."""
        state = scope["app"].state
        try:
            await self.ack.confirm(state.redis, state.keys)
        except FlowError as exc:
            log.warning("%s %s: not acknowledged: %s", scope["method"], scope["path"], exc.message)
            body = json.dumps(exc.to_body()).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": exc.status_code,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"retry-after", str(self.retry_after_s).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        for message in held:
            await send(message)
