"""The Redis span store: each workflow's finished spans, so the dashboard can draw its waterfall.

An OpenTelemetry exporter (run by a ``BatchSpanProcessor`` in its own thread, hence the synchronous
Redis client) appends every finished span that carries ``flow.workflow.id`` to the workflow's list
``{p}:wf:{id}:spans`` as JSON, keeps the last ``max_spans`` of them and (re)sets the list's expiry to
the retention. Spans without a workflow are not stored (they still reach the other exporters).
Deleting a workflow deletes its spans (:meth:`flowcore.keyspace.Keyspace.workflow_keys`).

A stored span::

    {"trace_id": "4bf9...", "span_id": "00f0...", "parent_span_id": "a3ce..." | null,
     "name": "step fetch", "service": "flow-worker", "kind": "consumer",
     "start_time": 1718000000.123456, "end_time": 1718000000.456789, "duration_ms": 333.333,
     "attributes": {"flow.workflow.id": "wf-...", ...},
     "status": "unset" | "ok" | "error", "status_message": null | "...",
     "events": [{"name": "exception", "time": 1718000000.4, "attributes": {...}}]}
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from flowcore import tracing
from flowcore.keyspace import Keyspace

log = logging.getLogger(__name__)

WARN_EVERY_S = 60.0


def _seconds(ns: int | None) -> float | None:
    return round(ns / 1_000_000_000, 6) if ns is not None else None


def _plain(value: Any) -> Any:
    """An attribute value as JSON (OpenTelemetry sequences are tuples)."""
    return list(value) if isinstance(value, tuple) else value


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as the store keeps it (see the module docstring)."""
    context = span.get_span_context()
    parent = span.parent
    start_s, end_s = _seconds(span.start_time), _seconds(span.end_time)
    duration_ms = round((end_s - start_s) * 1000, 3) if start_s is not None and end_s is not None else None
    return {
        "trace_id": f"{context.trace_id:032x}" if context is not None else None,
        "span_id": f"{context.span_id:016x}" if context is not None else None,
        "parent_span_id": f"{parent.span_id:016x}" if parent is not None and parent.is_valid else None,
        "name": span.name,
        "service": str(span.resource.attributes.get("service.name", "")),
        "kind": span.kind.name.lower(),
        "start_time": start_s,
        "end_time": end_s,
        "duration_ms": duration_ms,
        "attributes": {k: _plain(v) for k, v in (span.attributes or {}).items()},
        "status": span.status.status_code.name.lower(),
        "status_message": span.status.description,
        "events": [
            {
                "name": event.name,
                "time": _seconds(event.timestamp),
                "attributes": {k: _plain(v) for k, v in (event.attributes or {}).items()},
            }
            for event in span.events
        ],
    }


def group_by_workflow(spans: Iterable[ReadableSpan]) -> dict[str, list[str]]:
    """Workflow id -> the JSON of its spans; spans without ``flow.workflow.id`` are left out."""
    grouped: dict[str, list[str]] = {}
    for span in spans:
        wf_id = (span.attributes or {}).get(tracing.WORKFLOW_ID)
        if not wf_id:
            continue
        grouped.setdefault(str(wf_id), []).append(json.dumps(span_to_dict(span), separators=(",", ":")))
    return grouped


def decode_spans(raw: Iterable[bytes | str]) -> list[dict[str, Any]]:
    """The stored spans of one workflow, oldest start first (unreadable entries are skipped)."""
    spans: list[dict[str, Any]] = []
    for item in raw:
        try:
            value = json.loads(item)
        except ValueError:
            continue
        if isinstance(value, dict):
            spans.append(value)
    spans.sort(key=lambda s: (s.get("start_time") or 0.0, s.get("end_time") or 0.0))
    return spans


class RedisSpanExporter(SpanExporter):
    """Writes finished spans to their workflows' lists; a Redis failure drops the batch, logged."""

    def __init__(
        self,
        url: str,
        keys: Keyspace,
        *,
        max_spans: int,
        retention_s: float,
        options: Mapping[str, Any] | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        # options: the Redis credentials (flowcore.redisconn.credentials), never part of the URL.
        # client: one made by flowcore.redisconn (through Sentinel when configured); then url/options are unused.
        self._redis = client if client is not None else redis.Redis.from_url(
            url, socket_timeout=5.0, socket_connect_timeout=2.0, **dict(options or {})
        )
        self._keys = keys
        self._max_spans = max_spans
        self._retention_s = int(max(retention_s, 1))
        self._last_warning_s = 0.0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            grouped = group_by_workflow(spans)
            if not grouped:
                return SpanExportResult.SUCCESS
            with self._redis.pipeline(transaction=False) as pipe:
                for wf_id, items in grouped.items():
                    key = self._keys.spans(wf_id)
                    pipe.rpush(key, *items)
                    pipe.ltrim(key, -self._max_spans, -1)
                    pipe.expire(key, self._retention_s)
                pipe.execute()
        except Exception as exc:  # never let the span store hurt the process that traces
            now_s = time.monotonic()
            if now_s - self._last_warning_s >= WARN_EVERY_S:
                self._last_warning_s = now_s
                log.warning("span store: dropped %d spans: %r", len(spans), exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._redis.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
