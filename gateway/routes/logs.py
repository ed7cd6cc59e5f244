"""``/v1/workflows/{id}/logs``: the output lines of a workflow's tasks, read back or followed live.

Lines come from the workflow's log stream (``Keyspace.logs``, entries as in
:mod:`flowcore.logstream`), which the pool service fills while tasks run. Query parameters:

- ``step`` (a step id of the workflow) and ``index`` (a task index): only those lines;
- ``since``: only lines after this stream id (the ``next`` of an earlier answer);
- ``limit`` (1..10000, default 1000): at most this many lines per answer (not when following);
- ``follow=true``: a ``text/plain`` stream, one ``[step] line`` (``[step#index]`` for parallel and
  map steps) per log line, that ends once the workflow has finished and its last lines are out.

Without ``follow`` the answer is ``{"items": [...], "next": id}``; pass ``next`` as ``since`` to get
the lines that came after. Each item: ``id`` (stream id), ``step_id``, ``index``, ``attempt``,
``stream`` (``stdout``/``stderr``), ``line``, ``ts`` (epoch seconds) and ``source`` (the prefix a
followed stream shows).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from flowcore.errors import InvalidInput, ServiceUnavailable
from flowcore.keyspace import Keyspace
from flowcore.logstream import LogLine
from flowcore.models import WorkflowStatus
from flowcore.records import Snapshot
from flowcore.store import WorkflowStore
from gateway.bodies import query_bool, query_int

STREAM_ID = re.compile(r"^\d{1,20}(-\d{1,20})?$")
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
READ_BATCH = 1000
FOLLOW_BLOCK_MS = 500  # how long one XREAD waits for new lines before the status is read again
SINGLE_TASK_TYPES = frozenset({"sequential", "reduce"})


@dataclass(frozen=True)
class LogQuery:
    step: str | None
    index: int | None
    since: str
    limit: int
    follow: bool

    def wants(self, entry: LogLine) -> bool:
        return (self.step is None or entry.step_id == self.step) and (
            self.index is None or entry.index == self.index
        )


def parse_query(request: Request) -> LogQuery:
    """The query parameters, checked (422 naming the parameter)."""
    params = request.query_params
    since = params.get("since") or "0-0"
    if not STREAM_ID.match(since):
        raise InvalidInput(
            f"query parameter 'since' must be a log stream id such as 1700000000000-0, got {since!r}",
            field="since",
        )
    step = params.get("step")
    if step is not None and not step:
        raise InvalidInput("query parameter 'step' must not be empty", field="step")
    index = query_int(request, "index", -1, lo=0, hi=10_000_000) if "index" in params else None
    return LogQuery(
        step=step,
        index=index,
        since=since,
        limit=query_int(request, "limit", DEFAULT_LIMIT, lo=1, hi=MAX_LIMIT),
        follow=query_bool(request, "follow"),
    )


def source_of(snap: Snapshot, step_id: str, index: int) -> str:
    """``step`` for steps with one task (sequential, reduce), ``step#index`` for the others."""
    try:
        step_type = snap.definition.step(step_id).type
    except (KeyError, ValueError):
        step_type = None
    return step_id if step_type in SINGLE_TASK_TYPES else f"{step_id}#{index}"


def item(snap: Snapshot, entry_id: str, entry: LogLine) -> dict[str, Any]:
    return {
        "id": entry_id,
        "step_id": entry.step_id,
        "index": entry.index,
        "attempt": entry.attempt,
        "stream": entry.stream,
        "line": entry.line,
        "ts": entry.ts,
        "source": source_of(snap, entry.step_id, entry.index),
    }


def _id(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


async def read_page(redis: Redis, key: str, query: LogQuery, snap: Snapshot) -> tuple[list[dict[str, Any]], str]:
    """Up to ``limit`` matching lines after ``since``, and the id of the last entry looked at."""
    items: list[dict[str, Any]] = []
    cursor = query.since
    while len(items) < query.limit:
        batch = await redis.xrange(key, min=f"({cursor}", max="+", count=READ_BATCH)
        for raw_id, fields in batch:
            entry = LogLine.from_fields(fields)
            if query.wants(entry):
                items.append(item(snap, _id(raw_id), entry))
                if len(items) == query.limit:
                    return items, _id(raw_id)
            cursor = _id(raw_id)
        if len(batch) < READ_BATCH:
            break
    return items, cursor


async def follow_lines(redis: Redis, keys: Keyspace, query: LogQuery, snap: Snapshot) -> AsyncIterator[bytes]:
    """Lines as they arrive; ends after the workflow has finished (or was deleted) and the rest is out."""
    key = keys.logs(snap.wf_id)
    cursor = query.since
    finished = False
    while True:
        try:
            answer = await redis.xread({key: cursor}, count=READ_BATCH, block=None if finished else FOLLOW_BLOCK_MS)
            entries = answer[0][1] if answer else []
            if not entries:
                if finished:
                    return
                # Read after an empty wait: lines the pool wrote before the workflow finished are in
                # the stream by then (the pool flushes a task's lines before answering its result).
                status = await redis.hget(keys.workflow(snap.wf_id), "status")
                finished = status is None or WorkflowStatus(_id(status)).finished
                continue
        except RedisError:
            yield b"[flow: the log stream broke: redis is unreachable]\n"
            return
        chunk = []
        for raw_id, fields in entries:
            cursor = _id(raw_id)
            entry = LogLine.from_fields(fields)
            if query.wants(entry):
                chunk.append(f"[{source_of(snap, entry.step_id, entry.index)}] {entry.line}\n")
        if chunk:
            yield "".join(chunk).encode()


async def workflow_logs(request: Request) -> Response:
    """The output lines of a workflow's tasks (``?step=&index=&since=&limit=``); ``?follow=true``
    streams them as text until the workflow finishes."""
    query = parse_query(request)
    store: WorkflowStore = request.app.state.store
    snap = await store.load_summary(request.path_params["workflow_id"])
    if query.step is not None and query.step not in {s.id for s in snap.definition.steps}:
        raise InvalidInput(f"workflow {snap.wf_id!r} has no step {query.step!r}", field="step")
    redis: Redis = request.app.state.redis
    keys: Keyspace = request.app.state.keys
    if query.follow:
        return StreamingResponse(
            follow_lines(redis, keys, query, snap),
            media_type="text/plain; charset=utf-8",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )
    try:
        items, next_id = await read_page(redis, keys.logs(snap.wf_id), query, snap)
    except RedisError as exc:
        raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
    return JSONResponse({"items": items, "next": next_id})


routes = [Route("/v1/workflows/{workflow_id}/logs", workflow_logs, methods=["GET"])]
