"""Live progress over server-sent events (``/v1/workflows/{id}/events``, ``/v1/events``), parsed here.

No SSE library: :class:`SSEParser` follows the WHATWG event-stream rules (``event``, ``data``, ``id``,
``retry`` fields, ``:`` comments, a blank line dispatches), and :class:`EventStream` turns a streamed
httpx response into :class:`ServerEvent` objects::

    async with await client.stream_events(workflow_id) as events:
        async for event in events:          # snapshot, workflow, step, task, log ..., then end
            print(event.event, event.json())
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from agentainer_flow.errors import ClientError, TransportError

EVENT_STREAM = "text/event-stream"


@dataclass(frozen=True)
class ServerEvent:
    """One event: its type (``event``, ``"message"`` when the server named none), ``data`` and ``id``."""

    event: str
    data: str
    id: str | None = None

    def json(self) -> Any:
        """``data`` parsed as JSON (the gateway always sends JSON objects); None when it is not JSON."""
        try:
            return json.loads(self.data)
        except ValueError:
            return None


class SSEParser:
    """Feed it lines (without their line ending); it returns an event when a blank line ends one."""

    def __init__(self) -> None:
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> ServerEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: the server's heartbeat
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> ServerEvent | None:
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None
        return ServerEvent(event=event, data="\n".join(data), id=self.last_event_id)


class EventStream:
    """The events of a streamed answer; ``async for event in stream``. Closes the connection when the
    server ends the stream, on :meth:`aclose`, or at the end of ``async with``."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._parser = SSEParser()
        self._iter: AsyncIterator[ServerEvent] | None = None

    @property
    def last_event_id(self) -> str | None:
        """The id of the last event received: pass it as ``since`` to resume after it."""
        return self._parser.last_event_id

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> ServerEvent:
        if self._iter is None:
            self._iter = self._events()
        return await self._iter.__anext__()

    async def _events(self) -> AsyncIterator[ServerEvent]:
        try:
            async for line in self._response.aiter_lines():
                event = self._parser.feed(line.rstrip("\r\n"))
                if event is not None:
                    yield event
            event = self._parser.feed("")
            if event is not None:
                yield event
        except httpx.HTTPError as exc:
            raise TransportError(f"event stream broke: {exc or type(exc).__name__}") from exc
        finally:
            await self._response.aclose()

    async def aclose(self) -> None:
        await self._response.aclose()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def open_event_stream(response: httpx.Response, method: str, path: str) -> EventStream:
    """Check that ``response`` is an event stream (a ``ClientError`` with code ``not_event_stream``
    otherwise, e.g. a proxy or an older gateway answering JSON) and wrap it."""
    ctype = response.headers.get("content-type", "")
    if not ctype.lower().startswith(EVENT_STREAM):
        await response.aclose()
        raise ClientError(
            response.status_code, f"expected an event stream, got {ctype or 'no content type'}",
            code="not_event_stream", method=method, path=path,
        )
    return EventStream(response)
