"""OpenTelemetry in Agentainer Flow: span names, attribute names and the W3C trace-context helpers.

One trace per workflow. When a workflow is created (the gateway's ``submit`` or a trigger fire), a root
span ``workflow {name}`` is started in a fresh trace and its ``traceparent`` is written into the
workflow record (field ``trace`` of ``{p}:wf:{id}``) in the same transaction. Every later step attempt,
in whatever worker and after however many retries or takeovers, is a child of that root:

.. code-block:: text

    workflow {name}                  gateway or scheduler   (flow.workflow.id, flow.workflow.name)
    └── step {step_id}               worker, one per attempt (attempt, map index, pool key/hit, exit code)
        ├── queue wait               worker, enqueued -> claimed (made afterwards with explicit times)
        ├── acquire                  worker, the pool's container acquire (flow.pool.hit)
        ├── execute                  worker, the run itself (container.id, process.exit_code)
        └── pool dispatch            pool service, the task as the pool saw it
            ├── pool acquire         pool service
            └── (step code's spans)  the step process, parented by its TRACEPARENT env

The context crosses arq as the ``traceparent`` job kwarg, the worker -> pool call as the W3C
``traceparent`` header, and reaches the step process as ``TRACEPARENT``/``TRACESTATE`` in its env.

This module only uses the OpenTelemetry *API*: without :func:`flowcore.tracing_setup.configure` (an
entrypoint's job) every span is a no-op that still carries its parent's context along. Nothing here
has side effects at import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACER_NAME = "agentainer_flow"

# Attribute names (flow.* are ours; container.id and process.exit_code are OpenTelemetry semantic names).
WORKFLOW_ID = "flow.workflow.id"
WORKFLOW_NAME = "flow.workflow.name"
ORIGIN_KIND = "flow.origin.kind"
TRIGGER_ID = "flow.trigger.id"
STEP_ID = "flow.step.id"
STEP_TYPE = "flow.step.type"
ATTEMPT = "flow.attempt"
MAP_INDEX = "flow.map.index"
TASK_ID = "flow.task.id"
POOL_KEY = "flow.pool.key"
POOL_HIT = "flow.pool.hit"
POOL_WAITED = "flow.pool.waited"
POOL_SERVICE = "flow.pool.service"
DISPATCH_MODE = "flow.dispatch.mode"
ERROR_KIND = "flow.error.kind"
CONTAINER_ID = "container.id"
EXIT_CODE = "process.exit_code"

_PROPAGATOR = TraceContextTextMapPropagator()


_tracer: Tracer | None = None


def tracer() -> Tracer:
    """The tracer of the configured provider (a no-op one until an entrypoint configures tracing).

    Cached: the SDK builds a new tracer per ``get_tracer`` call (~50 us). What is cached before the
    provider is installed is OpenTelemetry's proxy tracer, which switches over to it by itself.
    """
    global _tracer
    if _tracer is None:
        _tracer = trace.get_tracer(TRACER_NAME)
    return _tracer


def to_ns(epoch_s: float) -> int:
    """Epoch seconds (what Flow's records hold) as the nanoseconds OpenTelemetry takes."""
    return int(epoch_s * 1_000_000_000)


def traceparent_of(span_context: SpanContext) -> str | None:
    """The W3C ``traceparent`` naming ``span_context``, or ``None`` for an invalid (untraced) context."""
    if not span_context.is_valid:
        return None
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}"


def tracestate_of(span_context: SpanContext) -> str | None:
    """The W3C ``tracestate`` of ``span_context``, or ``None`` when it is empty."""
    header = span_context.trace_state.to_header() if span_context.is_valid else ""
    return header or None


def context_from(traceparent: str | None, tracestate: str | None = None) -> Context:
    """A context whose current span is the remote parent named by ``traceparent`` (empty if invalid)."""
    if not traceparent:
        return Context()
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    return _PROPAGATOR.extract(carrier, context=Context())


def parse_traceparent(traceparent: str | None) -> SpanContext | None:
    """The span context a ``traceparent`` names, or ``None`` when it is missing or malformed."""
    span_context = trace.get_current_span(context_from(traceparent)).get_span_context()
    return span_context if span_context.is_valid else None


def trace_id_of(traceparent: str | None) -> str | None:
    """The 32-hex trace id in a ``traceparent``, or ``None``."""
    span_context = parse_traceparent(traceparent)
    return f"{span_context.trace_id:032x}" if span_context is not None else None


def inject_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """``headers`` plus ``traceparent``/``tracestate`` of the current span (unchanged when untraced)."""
    carrier = headers if headers is not None else {}
    _PROPAGATOR.inject(carrier)
    return carrier


def extract_headers(headers: Mapping[str, str]) -> Context | None:
    """The remote parent carried by HTTP ``headers``, or ``None`` when they carry none."""
    if "traceparent" not in headers:
        return None
    context = _PROPAGATOR.extract(headers, context=Context())
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def record_error(span: Span, kind: str, message: str) -> None:
    """Mark ``span`` failed: status ERROR and an ``exception`` event, as the semantic conventions have it."""
    if not span.is_recording():
        return
    span.set_status(Status(StatusCode.ERROR, message[:1000]))
    span.set_attribute(ERROR_KIND, kind)
    span.add_event("exception", {"exception.type": kind, "exception.message": message[:4000]})


def retro_span(
    name: str,
    parent: Span,
    start_s: float,
    end_s: float,
    attributes: Mapping[str, Any] | None = None,
    *,
    error: tuple[str, str] | None = None,
) -> None:
    """A finished child of ``parent`` with explicit start and end (epoch seconds): a phase timed elsewhere.

    ``error`` is ``(kind, message)`` when the phase failed.
    """
    context = trace.set_span_in_context(parent)
    span = tracer().start_span(name, context=context, start_time=to_ns(start_s), attributes=_clean(attributes))
    if error is not None:
        record_error(span, *error)
    span.end(end_time=to_ns(max(end_s, start_s)))


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Attributes without ``None`` values (OpenTelemetry rejects them)."""
    return {k: v for k, v in (attributes or {}).items() if v is not None}


class WorkflowRoot:
    """The root span of a new workflow's trace; exported only once the workflow is committed.

    ``traceparent`` goes into the record; :meth:`end` ends the span after the commit. A root whose
    commit never happened (a retried transaction, Redis down) is simply never ended, so no span
    names a workflow that does not exist.
    """

    def __init__(
        self,
        name: str,
        *,
        origin_kind: str | None = None,
        trigger_id: str | None = None,
        start_s: float | None = None,
    ) -> None:
        attributes = _clean({WORKFLOW_NAME: name, ORIGIN_KIND: origin_kind, TRIGGER_ID: trigger_id})
        self.span = tracer().start_span(
            f"workflow {name}",
            context=Context(),  # a fresh trace: one trace per workflow, whoever called the API
            kind=SpanKind.SERVER,
            attributes=attributes,
            start_time=to_ns(start_s) if start_s is not None else None,
        )
        self.traceparent = traceparent_of(self.span.get_span_context())

    def end(self, workflow_id: str) -> None:
        self.span.set_attribute(WORKFLOW_ID, workflow_id)
        self.span.end()
