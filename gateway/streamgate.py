"""A bound on live event streams (SSE): per client and per gateway process.

Each open stream holds a Redis connection in a blocking ``XREAD``; 300 streams once held 303
connections, and at Redis's client limit the whole platform stops (issue 13). The gate admits a
stream only while the client (the token's or the session's grant name) holds fewer than
``per_client`` and the process fewer than ``total``: past the first a 429, past the second a 503,
both with ``Retry-After``. A stream's place is given back when its response ends, however it ends
(the workflow finished, the client went away, an error), including a response that never started.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from flowcore.errors import ServiceUnavailable, TooManyRequests


class StreamGate:
    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self._held: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return sum(self._held.values())

    def held_by(self, client: str) -> int:
        return self._held[client]

    def acquire(self, client: str) -> None:
        if self._held[client] >= self.per_client:
            raise TooManyRequests(
                f"{client} already has {self.per_client} live event streams open on this gateway; close one"
                " or retry later"
            )
        if self.open >= self.total:
            raise ServiceUnavailable(f"this gateway serves {self.total} live event streams already; retry later")
        self._held[client] += 1

    def release(self, client: str) -> None:
        self._held[client] -= 1
        if self._held[client] <= 0:
            del self._held[client]


class GatedStream(StreamingResponse):
    """A streaming response that gives its place in the gate back when it ends, started or not."""

    def __init__(self, content: AsyncIterator[str], gate: StreamGate, client: str, **kwargs: object) -> None:
        super().__init__(content, **kwargs)  # type: ignore[arg-type]
        self._gate = gate
        self._client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._gate.release(self._client)
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()
