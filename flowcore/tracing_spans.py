"""The spans of one task: :class:`StepAttempt` in the worker, :class:`PoolTask` in the pool service.

Both are thin: they name and time what the worker and the pool already do, and read what they need
from the records and results those already hold (no extra Redis reads). With tracing unconfigured
the spans are no-ops that still pass the workflow's trace context on to the pool and the step.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from flowcore import tracing
from flowcore.keyspace import task_field
from flowcore.pool_api import TaskRequest, TaskResult
from flowcore.records import Snapshot


def _task_attributes(request: TaskRequest) -> dict[str, Any]:
    return {
        tracing.WORKFLOW_ID: request.workflow_id,
        tracing.STEP_ID: request.step_id,
        tracing.MAP_INDEX: request.index,
        tracing.ATTEMPT: request.attempt,
    }


def _result_attributes(result: TaskResult) -> dict[str, Any]:
    return {
        tracing.POOL_KEY: result.pool_key,
        tracing.POOL_HIT: result.pool_hit,
        tracing.POOL_SERVICE: result.pool_service,
        tracing.DISPATCH_MODE: result.mode.value,
        tracing.CONTAINER_ID: result.container_id,
        tracing.EXIT_CODE: result.exit_code,
    }


def _set(span: Span, attributes: Mapping[str, Any]) -> None:
    if span.is_recording():
        span.set_attributes({k: v for k, v in attributes.items() if v is not None})


class StepAttempt:
    """The worker's span of one step attempt, ``step {step_id}``, and its phases.

    Begun right after the claim commit (``snap`` is the claimed snapshot), it starts when the task was
    enqueued so that ``queue wait`` (made at once, with the enqueue and claim times of the task record)
    lies inside it. :meth:`calling` makes it the current span around the pool call, so the call carries
    it in its ``traceparent`` header; :meth:`finish` adds ``acquire`` and ``execute`` from the pool's
    timings and ends it after the completion commit.
    """

    def __init__(self, snap: Snapshot, request: TaskRequest, traceparent: str | None) -> None:
        now_s = time.time()
        task = snap.tasks.get(task_field(request.step_id, request.index))
        claimed_s = task.started_at if task is not None and task.started_at else now_s
        enqueued_s = task.enqueued_at if task is not None and task.enqueued_at else claimed_s
        step = snap.steps.get(request.step_id)
        attributes = {
            **_task_attributes(request),
            tracing.WORKFLOW_NAME: snap.definition.name,
            tracing.STEP_TYPE: step.type if step is not None else None,
            tracing.TASK_ID: request.task_id,
        }
        self.span = tracing.tracer().start_span(
            f"step {request.step_id}",
            context=tracing.context_from(traceparent or snap.trace),
            kind=SpanKind.CONSUMER,
            attributes={k: v for k, v in attributes.items() if v is not None},
            start_time=tracing.to_ns(min(enqueued_s, claimed_s)),
        )
        self._base = {tracing.WORKFLOW_ID: request.workflow_id, tracing.STEP_ID: request.step_id}
        if self.span.is_recording():
            queue: dict[str, Any] = dict(self._base)
            if task is not None and task.run_at:
                queue["flow.queue.run_at"] = task.run_at  # a retry's backoff is part of the wait
            tracing.retro_span("queue wait", self.span, enqueued_s, claimed_s, queue)
        self.traceparent = tracing.traceparent_of(self.span.get_span_context())
        self.call_started_s = 0.0
        self.call_ended_s = 0.0

    @contextlib.contextmanager
    def calling(self) -> Iterator[None]:
        """The pool call: the step span is current (the call's header names it) and the call is timed."""
        self.call_started_s = time.time()
        try:
            with trace.use_span(self.span, end_on_exit=False, record_exception=False):
                yield
        finally:
            self.call_ended_s = time.time()

    def failed(self, exc: BaseException) -> None:
        """The worker itself failed (not the step): recorded with its traceback."""
        if self.span.is_recording():
            self.span.record_exception(exc)

    def finish(self, result: TaskResult | None, *, note: str | None = None) -> None:
        """Add ``acquire`` and ``execute`` from the pool's timings, the result's attributes; end the span."""
        span = self.span
        if not span.is_recording():
            span.end()
            return
        if result is not None:
            _set(span, _result_attributes(result))
            if self.call_ended_s and result.container_id is not None:  # else nothing was acquired or run
                self._phases(result)
            if result.error is not None:
                tracing.record_error(span, result.error.kind.value, result.error.message)
        if note:
            span.add_event(note)
        span.end()

    def _phases(self, result: TaskResult) -> None:
        started, ended = self.call_started_s, self.call_ended_s
        window_s = max(ended - started, 0.0)
        acquire_s = min(result.timings.acquire_ms / 1000, window_s)
        exec_s = min(result.timings.exec_ms / 1000, window_s - acquire_s)
        # The pool measured both; they are placed at the end of the call window, after the request
        # reached the pool (image checks and the hop itself stay in the gap before them).
        exec_start = ended - exec_s
        acquire = {**self._base, tracing.POOL_HIT: result.pool_hit, tracing.POOL_KEY: result.pool_key}
        tracing.retro_span("acquire", self.span, exec_start - acquire_s, exec_start, acquire)
        execute = {
            **self._base,
            tracing.CONTAINER_ID: result.container_id,
            tracing.EXIT_CODE: result.exit_code,
            tracing.DISPATCH_MODE: result.mode.value,
        }
        error = (result.error.kind.value, result.error.message) if result.error is not None else None
        tracing.retro_span("execute", self.span, exec_start, ended, execute, error=error)


class PoolTask:
    """The pool service's span of one task, ``pool dispatch``, a child of the worker's step span.

    The task's ``traceparent``/``tracestate`` are replaced by this span's, so the step process (and a
    function step's ``ctx``) is parented here. The parent comes from the request's ``traceparent``
    header, else from the request body's ``traceparent`` field.
    """

    def __init__(self, headers: Mapping[str, str], request: TaskRequest) -> None:
        parent = tracing.extract_headers(headers)
        if parent is None:
            parent = tracing.context_from(request.traceparent, request.tracestate)
        self.span = tracing.tracer().start_span(
            "pool dispatch",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={**_task_attributes(request), tracing.TASK_ID: request.task_id},
        )
        span_context = self.span.get_span_context()
        if span_context.is_valid:
            request.traceparent = tracing.traceparent_of(span_context)
            request.tracestate = tracing.tracestate_of(span_context)
        self._use = trace.use_span(self.span, end_on_exit=True, record_exception=True)

    def __enter__(self) -> PoolTask:
        self._use.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._use.__exit__(*exc)

    def result(self, result: TaskResult) -> None:
        _set(self.span, _result_attributes(result))
        if result.error is not None:
            tracing.record_error(self.span, result.error.kind.value, result.error.message)


def record_acquire(request: TaskRequest, pool_key: str, *, hit: bool, waited: bool, acquire_ms: float) -> None:
    """``pool acquire`` under the current span (``pool dispatch``), timed by the pool's own clock."""
    parent = trace.get_current_span()
    if not parent.is_recording():
        return
    ended = time.time()
    attributes = {
        tracing.WORKFLOW_ID: request.workflow_id,
        tracing.STEP_ID: request.step_id,
        tracing.POOL_KEY: pool_key,
        tracing.POOL_HIT: hit,
        tracing.POOL_WAITED: waited,
    }
    tracing.retro_span("pool acquire", parent, ended - acquire_ms / 1000, ended, attributes)
