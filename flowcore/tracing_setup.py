"""Configure OpenTelemetry for one process from its :class:`~flowcore.settings.TracingSection`.

Called once by each entrypoint (``python -m gateway``, ``workers``, ``pool``, ``scheduler``), never at
import time. Every exporter gets its own ``BatchSpanProcessor`` (its own thread and queue), so a slow or
unreachable OTLP endpoint neither delays the Redis span store nor the workflow: spans are handed over
in memory, exported in the background, and an exporter's failure is caught, logged (at most once a
minute per exporter) and the batch dropped. A full queue drops spans, never blocks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from flowcore.keyspace import Keyspace
from flowcore.settings import RedisSection, TracingSection

log = logging.getLogger(__name__)

WARN_EVERY_S = 60.0
SHUTDOWN_FLUSH_MS = 5000


class GuardedExporter(SpanExporter):
    """An exporter whose exceptions become a logged, dropped batch."""

    def __init__(self, name: str, inner: SpanExporter) -> None:
        self.name = name
        self.inner = inner
        self._last_warning_s = 0.0

    def _warn(self, what: str, exc: BaseException) -> None:
        now_s = time.monotonic()
        if now_s - self._last_warning_s >= WARN_EVERY_S:
            self._last_warning_s = now_s
            log.warning("%s exporter: %s failed: %r", self.name, what, exc)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            return self.inner.export(spans)
        except Exception as exc:
            self._warn(f"export of {len(spans)} spans", exc)
            return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        try:
            self.inner.shutdown()
        except Exception as exc:
            self._warn("shutdown", exc)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return self.inner.force_flush(timeout_millis)
        except Exception as exc:
            self._warn("flush", exc)
            return False


def build_exporters(
    section: TracingSection,
    *,
    redis_url: str,
    keys: Keyspace,
    redis_options: Mapping[str, Any] | None = None,
    redis_section: RedisSection | None = None,
) -> list[GuardedExporter]:
    """The exporters ``section`` names (none when tracing is off); ``redis_options``: Redis credentials.

    ``redis_section``, when given, makes the span store's client (:func:`flowcore.redisconn.connect_sync`:
    through Sentinel when configured, ADR 021) instead of ``redis_url`` and ``redis_options``."""
    exporters: list[GuardedExporter] = []
    for name in section.exporters:
        inner: SpanExporter
        if name == "console":
            inner = ConsoleSpanExporter()
        elif name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            inner = OTLPSpanExporter(
                endpoint=section.otlp_endpoint, headers=section.headers(), timeout=section.otlp_timeout_s
            )
        else:
            from flowcore.tracing_store import RedisSpanExporter

            inner = RedisSpanExporter(
                redis_url,
                keys,
                max_spans=section.store_max_spans,
                retention_s=section.store_retention_s,
                options=redis_options,
                client=_span_store_client(redis_section),
            )
        exporters.append(GuardedExporter(name, inner))
    return exporters


def _span_store_client(section: RedisSection | None) -> Any:
    """The span store's blocking client made from ``section``, or None (the exporter makes its own)."""
    if section is None:
        return None
    from flowcore import redisconn

    return redisconn.connect_sync(section, socket_timeout=5.0, socket_connect_timeout=2.0)


@dataclass
class Tracing:
    """What :func:`configure` set up; :meth:`shutdown` flushes and stops it (bounded)."""

    service_name: str
    provider: TracerProvider | None

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def flush(self, timeout_ms: int = SHUTDOWN_FLUSH_MS) -> None:
        if self.provider is not None:
            self.provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        if self.provider is None:
            return
        try:
            self.provider.force_flush(SHUTDOWN_FLUSH_MS)
            self.provider.shutdown()
        except Exception as exc:  # a process must still exit cleanly
            log.warning("tracing shutdown failed: %r", exc)


def build_provider(
    section: TracingSection,
    *,
    default_service: str,
    redis_url: str,
    prefix: str,
    redis_options: Mapping[str, Any] | None = None,
    redis_section: RedisSection | None = None,
) -> Tracing:
    """A tracer provider with the configured exporters, not installed globally (tests use this)."""
    service_name = section.service_name or default_service
    exporters = build_exporters(
        section, redis_url=redis_url, keys=Keyspace(prefix), redis_options=redis_options, redis_section=redis_section
    )
    if not exporters:
        return Tracing(service_name, None)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}), sampler=ALWAYS_ON)
    for exporter in exporters:
        provider.add_span_processor(
            BatchSpanProcessor(exporter, max_queue_size=8192, schedule_delay_millis=section.export_delay_ms)
        )
    return Tracing(service_name, provider)


def configure(
    section: TracingSection,
    *,
    default_service: str,
    redis_url: str,
    prefix: str,
    redis_options: Mapping[str, Any] | None = None,
    redis_section: RedisSection | None = None,
) -> Tracing:
    """Build the provider and install it as this process's (once per process, from its entrypoint)."""
    tracing = build_provider(
        section, default_service=default_service, redis_url=redis_url, prefix=prefix, redis_options=redis_options,
        redis_section=redis_section,
    )
    if tracing.provider is not None:
        trace.set_tracer_provider(tracing.provider)
    log.info(
        "tracing: service %s, exporters %s", tracing.service_name, ", ".join(section.exporters) or "none"
    )
    return tracing
