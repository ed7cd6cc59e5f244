"""Live progress as server-sent events: ``/v1/workflows/{id}/events`` and ``/v1/events``.

Both read Redis streams with ``XREAD BLOCK`` (at most ``BLOCK_MS`` per call, so a stream notices a
finished or deleted workflow and sends its heartbeat in time) and write one SSE frame per entry::

    id: 1712345678901-0,1712345678950-2
    event: step
    data: {"type": "step", "workflow_id": "...", "step_id": "a", "status": "running", "ts": ...}

Per workflow, frames are ``snapshot`` (first, the current status, no id), ``workflow`` (status
changes), ``step``, ``task`` (running, succeeded, failed, retrying, taken_over), ``log`` (lines of the
``{p}:wf:{id}:logs`` stream) and a last ``end`` frame once the workflow has finished (or was
deleted), after which the server closes the stream. The id is ``<events id>,<logs id>``: send it
back as ``Last-Event-ID`` (browsers do on reconnect) or ``?since=`` to resume after it; a single
stream id (or a ms timestamp) resumes both streams from that time. Without either, the stream
replays the workflow's history from its start (both streams are capped).

``/v1/events`` carries the events of every workflow (no log lines) from now on, or after ``since``;
it never ends by itself. A comment line (``: keep-alive``) goes out after ``HEARTBEAT_S`` seconds
without a frame. A client that goes away cancels the stream (Starlette) and its Redis read.

Each open stream holds a Redis connection: :class:`gateway.streamgate.StreamGate` bounds them per
token (``FLOW_SSE_MAX_STREAMS_PER_CLIENT``, 429) and per process (``FLOW_SSE_MAX_STREAMS``, 503).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flowcore.errors import InvalidInput, NotFound, ServiceUnavailable
from flowcore.keyspace import Keyspace
from flowcore.models import WorkflowStatus
from gateway.streamgate import GatedStream, StreamGate

HEARTBEAT_S = 15.0
BLOCK_MS = 5000
BATCH = 500  # entries per stream per XREAD
STATUS_CHECK_S = 5.0  # re-read the status this often even while entries flow (a trimmed final event)
RETRY_MS = 2000  # the reconnect delay suggested to browsers
HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_STREAM_ID = re.compile(r"^\d{1,20}(-\d{1,20})?$")
_LOG_INTS = ("index", "attempt")


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def parse_cursor(raw: str, name: str, parts: int) -> list[str]:
    """``since`` / ``Last-Event-ID`` as one stream id per stream; a single id applies to all of them."""
    pieces = [p.strip() for p in raw.split(",")]
    if len(pieces) == 1:
        pieces = pieces * parts
    if len(pieces) != parts or not all(_STREAM_ID.match(p) for p in pieces):
        shape = ",".join(["<ms>-<seq>"] * parts)
        raise InvalidInput(f"{name} must be a stream id like '{shape}' or a ms timestamp, got {raw!r}", field=name)
    return pieces


def frame(event: str, data: dict[str, Any], event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str, separators=(',', ':'))}\n\n"


def decode_entry(fields: dict[Any, Any], wf_id: str | None, *, log: bool) -> dict[str, Any]:
    """An event entry (JSON in ``data``) or a log entry (flat fields) as the frame's data."""
    decoded = {_text(k): _text(v) for k, v in fields.items()}
    if "data" in decoded:
        try:
            parsed = json.loads(decoded["data"])
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            parsed.setdefault("type", "log" if log else "event")
            if wf_id is not None:
                parsed.setdefault("workflow_id", wf_id)
            return dict(parsed)
    body: dict[str, Any] = {"type": "log" if log else "event", **decoded}
    if wf_id is not None:
        body.setdefault("workflow_id", wf_id)
    for key in _LOG_INTS:
        if key in body:
            try:
                body[key] = int(body[key])
            except ValueError:
                pass
    if "ts" in body:
        try:
            body["ts"] = float(body["ts"])
        except ValueError:
            pass
    return body


def _tuning(request: Request) -> tuple[float, int]:
    # Tests may shorten these through app.state; production uses the module defaults.
    heartbeat_s = float(getattr(request.app.state, "sse_heartbeat_s", HEARTBEAT_S))
    block_ms = int(getattr(request.app.state, "sse_block_ms", BLOCK_MS))
    return heartbeat_s, block_ms


def _admit(request: Request) -> tuple[StreamGate, str]:
    """A place in the gateway's stream gate for this client (429 / 503 past the bounds), after the
    request was validated: a refused or malformed request holds nothing."""
    gate: StreamGate = request.app.state.stream_gate
    grant = request.scope.get("state", {}).get("grant")
    client = f"token {grant.name!r}" if grant is not None else f"client {request.client.host if request.client else '?'}"
    gate.acquire(client)
    return gate, client


class _Reader:
    """XREAD over some streams with one cursor each; entries come back merged in id order."""

    def __init__(self, redis: Redis, cursors: dict[str, str]) -> None:
        self.redis = redis
        self.cursors = cursors

    async def read(self, block_ms: int | None) -> list[tuple[str, str, dict[Any, Any]]]:
        answer = await self.redis.xread(self.cursors, count=BATCH, block=block_ms)
        entries: list[tuple[str, str, dict[Any, Any]]] = []
        for stream, items in answer or []:
            key = _text(stream)
            for entry_id, fields in items:
                entries.append((key, _text(entry_id), fields))
        entries.sort(key=lambda e: _id_key(e[1]))
        return entries

    def advance(self, key: str, entry_id: str) -> None:
        """Move past one entry (before its frame goes out, so the frame's id covers it)."""
        self.cursors[key] = entry_id


async def _status(redis: Redis, keys: Keyspace, wf_id: str) -> WorkflowStatus | None:
    raw = await redis.hget(keys.workflow(wf_id), "status")
    return WorkflowStatus(_text(raw)) if raw is not None else None


async def workflow_events(request: Request) -> Response:
    """Server-sent events of one workflow (status, steps, tasks, log lines), ending once it finishes."""
    redis: Redis = request.app.state.redis
    keys: Keyspace = request.app.state.keys
    wf_id = request.path_params["workflow_id"]
    header = request.headers.get("last-event-id")
    since = header if header else request.query_params.get("since")
    name = "Last-Event-ID" if header else "since"
    ev_cursor, log_cursor = parse_cursor(since, name, 2) if since else ["0-0", "0-0"]
    try:
        status = await _status(redis, keys, wf_id)
    except RedisError as exc:
        raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
    if status is None:
        raise NotFound(f"workflow {wf_id!r} not found", field="workflow_id")
    ev_key, log_key = keys.events(wf_id), keys.logs(wf_id)
    gate, client = _admit(request)
    reader = _Reader(redis, {ev_key: ev_cursor, log_key: log_cursor})
    heartbeat_s, block_ms = _tuning(request)
    initial: WorkflowStatus = status

    def event_id() -> str:
        return f"{reader.cursors[ev_key]},{reader.cursors[log_key]}"

    async def frames() -> AsyncIterator[str]:
        status: WorkflowStatus | None = initial
        yield f"retry: {RETRY_MS}\n\n"
        yield frame("snapshot", {"type": "snapshot", "workflow_id": wf_id, "status": initial.value, "ts": time.time()})
        last_sent = last_check = time.monotonic()
        try:
            while True:
                done = status is None or status.finished
                wait_ms = max(1, min(block_ms, int((heartbeat_s - (time.monotonic() - last_sent)) * 1000)))
                entries = await reader.read(None if done else wait_ms)
                for key, entry_id, fields in entries:
                    reader.advance(key, entry_id)
                    data = decode_entry(fields, wf_id, log=key == log_key)
                    if data.get("type") == "workflow" and data.get("status") in {s.value for s in WorkflowStatus}:
                        status = WorkflowStatus(data["status"])
                    yield frame(str(data.get("type", "event")), data, event_id())
                    last_sent = time.monotonic()
                if done and not entries:
                    final = status.value if status is not None else "deleted"
                    yield frame("end", {"type": "end", "workflow_id": wf_id, "status": final, "ts": time.time()}, event_id())
                    return
                if not done and (not entries or time.monotonic() - last_check >= STATUS_CHECK_S):
                    checked = await _status(redis, keys, wf_id)
                    last_check = time.monotonic()
                    if checked is None or checked.finished:
                        status = checked  # drain what is left, then end
                if time.monotonic() - last_sent >= heartbeat_s:
                    yield ": keep-alive\n\n"
                    last_sent = time.monotonic()
        except RedisError as exc:
            yield frame("error", {"type": "error", "message": f"redis is unreachable: {type(exc).__name__}"})

    return GatedStream(frames(), gate, client, media_type="text/event-stream", headers=HEADERS)


async def all_events(request: Request) -> Response:
    """Server-sent events of every workflow (no log lines), from now or after ``since``; never ends."""
    redis: Redis = request.app.state.redis
    keys: Keyspace = request.app.state.keys
    header = request.headers.get("last-event-id")
    since = header if header else request.query_params.get("since")
    key = keys.global_events
    if since:
        cursor = parse_cursor(since, "Last-Event-ID" if header else "since", 1)[0]
    else:
        try:  # "$" would miss entries added between two reads: start from the current last id
            last = await redis.xrevrange(key, count=1)
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
        cursor = _text(last[0][0]) if last else "0-0"
    gate, client = _admit(request)
    reader = _Reader(redis, {key: cursor})
    heartbeat_s, block_ms = _tuning(request)

    async def frames() -> AsyncIterator[str]:
        yield f"retry: {RETRY_MS}\n\n"
        last_sent = time.monotonic()
        try:
            while True:
                wait_ms = max(1, min(block_ms, int((heartbeat_s - (time.monotonic() - last_sent)) * 1000)))
                for _, entry_id, fields in await reader.read(wait_ms):
                    reader.advance(key, entry_id)
                    data = decode_entry(fields, None, log=False)
                    yield frame(str(data.get("type", "event")), data, entry_id)
                    last_sent = time.monotonic()
                if time.monotonic() - last_sent >= heartbeat_s:
                    yield ": keep-alive\n\n"
                    last_sent = time.monotonic()
        except RedisError as exc:
            yield frame("error", {"type": "error", "message": f"redis is unreachable: {type(exc).__name__}"})

    return GatedStream(frames(), gate, client, media_type="text/event-stream", headers=HEADERS)


routes = [
    Route("/v1/workflows/{workflow_id}/events", workflow_events, methods=["GET"]),
    Route("/v1/events", all_events, methods=["GET"]),
]
