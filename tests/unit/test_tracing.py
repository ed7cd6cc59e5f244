"""The pure parts of tracing: traceparent helpers, settings, the span JSON, and the spans of one task.

Spans are recorded by an in-memory exporter on a provider of this module, swapped in for the test
(OpenTelemetry allows one global provider per process; the tests never install it, so later tests see
tracing off as the services do without configuration).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from pydantic import ValidationError

from flowcore import tracing
from flowcore.keyspace import Keyspace
from flowcore.models import WorkflowDefinition, WorkflowStatus
from flowcore.pool_api import DispatchMode, ErrorKind, TaskError, TaskRequest, TaskResult, TaskTimings
from flowcore.records import Snapshot, StepRecord, TaskRecord
from flowcore.settings import GatewaySettings, TracingSection
from flowcore.tracing_setup import GuardedExporter, build_provider
from flowcore.tracing_spans import PoolTask, StepAttempt, record_acquire
from flowcore.tracing_store import RedisSpanExporter, decode_spans, group_by_workflow, span_to_dict

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider(resource=Resource.create({"service.name": "flow-test"}))
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Spans of this test, recorded in memory; the process's global provider is left alone."""
    monkeypatch.setattr(tracing, "_tracer", _PROVIDER.get_tracer("test"))
    monkeypatch.setattr(trace, "get_tracer", lambda *args, **kwargs: _PROVIDER.get_tracer("step code"))
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def by_name(finished: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in finished}


# ---- traceparent helpers ------------------------------------------------------------------------
def test_traceparent_round_trip() -> None:
    context = tracing.parse_traceparent(TP)
    assert context is not None and context.is_remote
    assert tracing.traceparent_of(context) == TP
    assert tracing.trace_id_of(TP) == "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    "value",
    [None, "", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-4bf9-00f0-01"],
)
def test_malformed_traceparents_name_nothing(value: str | None) -> None:
    assert tracing.parse_traceparent(value) is None
    assert tracing.trace_id_of(value) is None
    assert not trace.get_current_span(tracing.context_from(value)).get_span_context().is_valid


def test_headers_carry_the_current_span_and_only_a_valid_one() -> None:
    assert tracing.inject_headers() == {}
    assert tracing.extract_headers({}) is None
    assert tracing.extract_headers({"traceparent": "nonsense"}) is None
    parent = trace.NonRecordingSpan(tracing.parse_traceparent(TP))  # type: ignore[arg-type]
    with trace.use_span(parent):
        headers = tracing.inject_headers({"x": "1"})
    assert headers == {"x": "1", "traceparent": TP}
    extracted = tracing.extract_headers(headers)
    assert extracted is not None
    assert tracing.traceparent_of(trace.get_current_span(extracted).get_span_context()) == TP


def test_tracestate_travels_with_the_context() -> None:
    context = trace.get_current_span(tracing.context_from(TP, "vendor=abc")).get_span_context()
    assert tracing.tracestate_of(context) == "vendor=abc"
    assert tracing.tracestate_of(tracing.parse_traceparent(TP)) is None  # type: ignore[arg-type]


# ---- settings -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "exporters"),
    [("redis", ("redis",)), (" Redis , OTLP ", ("redis", "otlp")), ("none", ()), ("", ()), ("otlp,otlp", ("otlp",))],
)
def test_exporter_lists(raw: str, exporters: tuple[str, ...]) -> None:
    assert TracingSection(exporter=raw).exporters == exporters


def test_unknown_exporter_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="unknown exporter 'jaeger'"):
        TracingSection(exporter="redis,jaeger")


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    section = TracingSection()
    assert section.exporters == ("redis",) and section.service_name is None and section.headers() == {}
    monkeypatch.setenv("FLOW_TRACING__EXPORTER", "redis,otlp")
    monkeypatch.setenv("FLOW_TRACING__OTLP_ENDPOINT", "http://127.0.0.1:4318/v1/traces")
    monkeypatch.setenv("FLOW_TRACING__OTLP_HEADERS", "api-key=s3cret, x-team = flow")
    monkeypatch.setenv("FLOW_TRACING__SERVICE_NAME", "edge-gateway")
    settings = GatewaySettings()
    assert settings.tracing.exporters == ("redis", "otlp")
    assert settings.tracing.headers() == {"api-key": "s3cret", "x-team": "flow"}
    assert "s3cret" not in repr(settings.tracing)
    assert settings.tracing.service_name == "edge-gateway"


def test_provider_per_configuration() -> None:
    off = build_provider(TracingSection(exporter="none"), default_service="flow-pool", redis_url="redis://x", prefix="p")
    assert not off.enabled and off.service_name == "flow-pool"
    on = build_provider(
        TracingSection(exporter="console,redis", service_name="mine"),
        default_service="flow-pool",
        redis_url="redis://127.0.0.1:1/0",
        prefix="p",
    )
    assert on.enabled and on.service_name == "mine"
    on.shutdown()


# ---- exporters never raise ----------------------------------------------------------------------
class Exploding(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise RuntimeError("boom")

    def shutdown(self) -> None:
        raise RuntimeError("boom")


def test_guarded_exporter_turns_exceptions_into_a_dropped_batch() -> None:
    guarded = GuardedExporter("test", Exploding())
    assert guarded.export([]) == SpanExportResult.FAILURE
    guarded.shutdown()  # no exception


def test_span_store_with_unreachable_redis_drops_the_batch(spans: InMemorySpanExporter) -> None:
    with tracing.tracer().start_as_current_span("x", attributes={tracing.WORKFLOW_ID: "wf-1"}):
        pass
    store = RedisSpanExporter("redis://127.0.0.1:1/0", Keyspace("t"), max_spans=10, retention_s=60)
    assert store.export(spans.get_finished_spans()) == SpanExportResult.FAILURE
    store.shutdown()


# ---- span JSON ----------------------------------------------------------------------------------
def test_span_json(spans: InMemorySpanExporter) -> None:
    parent = tracing.context_from(TP)
    span = tracing.tracer().start_span(
        "step a", context=parent, start_time=tracing.to_ns(100.25), attributes={tracing.WORKFLOW_ID: "wf-1"}
    )
    span.set_attribute("list", ["a", "b"])
    tracing.record_error(span, "exit_code", "exited 3")
    span.end(end_time=tracing.to_ns(100.75))
    doc = span_to_dict(spans.get_finished_spans()[0])
    assert doc["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert doc["parent_span_id"] == "00f067aa0ba902b7" and len(doc["span_id"]) == 16
    assert doc["name"] == "step a" and doc["service"] == "flow-test" and doc["kind"] == "internal"
    assert doc["start_time"] == 100.25 and doc["end_time"] == 100.75 and doc["duration_ms"] == 500.0
    assert doc["attributes"] == {tracing.WORKFLOW_ID: "wf-1", "list": ["a", "b"], tracing.ERROR_KIND: "exit_code"}
    assert doc["status"] == "error" and doc["status_message"] == "exited 3"
    assert doc["events"][0]["name"] == "exception"
    assert doc["events"][0]["attributes"]["exception.message"] == "exited 3"


def test_only_spans_of_a_workflow_are_stored_and_read_back_in_start_order(spans: InMemorySpanExporter) -> None:
    tracer = tracing.tracer()
    tracer.start_span("late", start_time=tracing.to_ns(2), attributes={tracing.WORKFLOW_ID: "wf-1"}).end()
    tracer.start_span("early", start_time=tracing.to_ns(1), attributes={tracing.WORKFLOW_ID: "wf-1"}).end()
    tracer.start_span("other", attributes={tracing.WORKFLOW_ID: "wf-2"}).end()
    tracer.start_span("no workflow").end()
    grouped = group_by_workflow(spans.get_finished_spans())
    assert sorted(grouped) == ["wf-1", "wf-2"]
    decoded = decode_spans([*grouped["wf-1"], b"not json", "[1]"])
    assert [s["name"] for s in decoded] == ["early", "late"]


# ---- the spans of one task ----------------------------------------------------------------------
def claimed(attempt: int = 2) -> tuple[Snapshot, TaskRequest]:
    definition = WorkflowDefinition.model_validate(
        {"name": "flow-x", "steps": [{"id": "s", "type": "map", "image": "img", "command": ["true"], "items": "input.xs"}]}
    )
    snap = Snapshot(
        wf_id="wf-1", definition=definition, status=WorkflowStatus.RUNNING, input=None, created_at=90.0, trace=TP
    )
    snap.steps["s"] = StepRecord(id="s", type="map")
    snap.tasks["s:3"] = TaskRecord(step_id="s", index=3, attempt=attempt, enqueued_at=100.0, started_at=101.5)
    request = TaskRequest(
        task_id="t-1", workflow_id="wf-1", step_id="s", index=3, attempt=attempt, image="img", command=["true"]
    )
    return snap, request


def result(ok: bool = True, **extra: Any) -> TaskResult:
    return TaskResult(
        task_id="t-1",
        ok=ok,
        exit_code=0 if ok else 3,
        container_id="c0ffee",
        pooled=True,
        pool_hit=True,
        mode=DispatchMode.AGENT,
        pool_key="k1",
        pool_service="pool-1",
        timings=TaskTimings(acquire_ms=1.0, exec_ms=2.0),
        error=None if ok else TaskError(kind=ErrorKind.EXIT_CODE, message="exited 3"),
        **extra,
    )


def test_step_attempt_and_pool_task_spans(spans: InMemorySpanExporter) -> None:
    snap, request = claimed()
    attempt = StepAttempt(snap, request, None)  # an old job without the kwarg: the record's trace
    request.traceparent = attempt.traceparent
    with attempt.calling():
        headers = tracing.inject_headers()
    assert headers["traceparent"] == attempt.traceparent
    with PoolTask(headers, request) as pool_task:
        record_acquire(request, "k1", hit=True, waited=False, acquire_ms=1.0)
        pool_task.result(result())
    assert request.traceparent == tracing.traceparent_of(pool_task.span.get_span_context())
    attempt.finish(result())

    found = by_name(spans.get_finished_spans())
    assert set(found) == {"step s", "queue wait", "acquire", "execute", "pool dispatch", "pool acquire"}
    root = tracing.parse_traceparent(TP)
    assert root is not None
    step = found["step s"]
    assert step.parent is not None and step.parent.span_id == root.span_id
    assert {s.context.trace_id for s in found.values() if s.context} == {root.trace_id}
    for child in ("queue wait", "acquire", "execute", "pool dispatch"):
        assert found[child].parent.span_id == step.context.span_id, child  # type: ignore[union-attr]
    assert found["pool acquire"].parent.span_id == found["pool dispatch"].context.span_id  # type: ignore[union-attr]
    assert found["queue wait"].start_time == tracing.to_ns(100.0)
    assert found["queue wait"].end_time == tracing.to_ns(101.5)
    assert step.start_time == tracing.to_ns(100.0)
    attrs = dict(step.attributes or {})
    assert attrs[tracing.WORKFLOW_ID] == "wf-1" and attrs[tracing.WORKFLOW_NAME] == "flow-x"
    assert attrs[tracing.STEP_ID] == "s" and attrs[tracing.POOL_KEY] == "k1"
    assert attrs[tracing.STEP_TYPE] == "map" and attrs[tracing.MAP_INDEX] == 3 and attrs[tracing.ATTEMPT] == 2
    assert attrs[tracing.POOL_HIT] is True and attrs[tracing.CONTAINER_ID] == "c0ffee" and attrs[tracing.EXIT_CODE] == 0
    assert dict(found["acquire"].attributes or {})[tracing.POOL_HIT] is True
    assert dict(found["execute"].attributes or {})[tracing.CONTAINER_ID] == "c0ffee"
    assert step.status.status_code == StatusCode.UNSET


def test_a_failed_attempt_is_an_error_span_with_an_exception_event(spans: InMemorySpanExporter) -> None:
    snap, request = claimed()
    attempt = StepAttempt(snap, request, TP)
    with attempt.calling():
        pass
    attempt.finish(result(ok=False))
    found = by_name(spans.get_finished_spans())
    for name in ("step s", "execute"):
        assert found[name].status.status_code == StatusCode.ERROR
        assert found[name].status.description == "exited 3"
        assert [e.name for e in found[name].events] == ["exception"]


def test_untraced_workflow_still_gets_spans_of_its_own(spans: InMemorySpanExporter) -> None:
    snap, request = claimed()
    snap.trace = None
    attempt = StepAttempt(snap, request, None)
    attempt.finish(None, note="handed over")
    step = by_name(spans.get_finished_spans())["step s"]
    assert step.parent is None and [e.name for e in step.events] == ["handed over"]


# ---- docs/observability.md: step code joins the workflow's trace --------------------------------
DOC = Path(__file__).resolve().parents[2] / "docs" / "observability.md"


def test_doc_step_spans_join_the_trace_of_their_traceparent(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    [code] = re.findall(r"```python\n(.*?)```\n<!-- doc-test: step-spans -->", DOC.read_text(), re.S)
    monkeypatch.setenv("TRACEPARENT", TP)
    exec(compile(code, str(DOC), "exec"), {})
    [span] = spans.get_finished_spans()
    assert span.name == "count words" and dict(span.attributes or {}) == {"words": 42}
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == TP.split("-")[1] and f"{span.parent.span_id:016x}" == TP.split("-")[2]
