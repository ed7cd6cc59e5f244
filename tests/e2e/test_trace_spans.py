"""Traces of real workflow runs: the gateway, worker and pool processes, real containers, a real OTLP/HTTP export.

A second set of processes (pool, worker, gateway on their own key prefix) is started with
``FLOW_TRACING__EXPORTER=redis,otlp`` pointing at an OTLP receiver in this test: a small HTTP server
on 127.0.0.1 that decodes each ``POST /v1/traces`` body as an ``ExportTraceServiceRequest``
(``opentelemetry-proto``), since no collector is installable here. The spans are read back through
``GET /v1/workflows/{id}/spans`` (the Redis span store) and from what the receiver got.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from flowcore import tracing
from tests.e2e.conftest import Proc, Stack, _wait_healthy, free_port
from tests.e2e.flowhttp import IMAGE, brief, py, steps_by_id, submit, wait

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SHOW_ENV = "print(json.dumps({'tp': os.environ.get('TRACEPARENT'), 'ts': os.environ.get('TRACESTATE')}))"
FUNCTION_SOURCE = """
def show(ctx):
    return {"tp": ctx.traceparent, "env_tp": ctx.env.get("TRACEPARENT")}
"""
DEFINITION = {
    "name": "traced",
    "input": {"xs": ["a", "b"]},
    "steps": [
        {"id": "show", "image": IMAGE, "command": py(SHOW_ENV)},
        {"id": "fn", "image": IMAGE, "function": {"module": "traced_steps", "qualname": "show", "source": FUNCTION_SOURCE}},
        {"id": "fan", "type": "map", "items": "input.xs", "image": IMAGE, "command": py("print(json.dumps(doc['item']))")},
        {
            "id": "boom",
            "depends_on": ["show", "fn", "fan"],
            "image": IMAGE,
            "command": py("sys.exit(3)"),
            "retry": {"max_attempts": 2, "initial_delay_s": 0.1},
        },
    ],
}


# ---- the OTLP receiver --------------------------------------------------------------------------
@dataclass
class Received:
    """Spans the receiver decoded: one dict per span, with its resource's service.name."""

    spans: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        decoded = []
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    decoded.append(
                        {
                            "service": resource.get("service.name"),
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex() or None,
                            "attributes": {a.key: _any_value(a.value) for a in span.attributes},
                        }
                    )
        with self.lock:
            self.spans.extend(decoded)

    def of(self, wf_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [s for s in self.spans if s["attributes"].get(tracing.WORKFLOW_ID) == wf_id]


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[str, Received]]:
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
                self.send_response(404)
                self.end_headers()
                return
            received.add(body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", received
    finally:
        server.shutdown()
        server.server_close()


# ---- a traced set of processes ------------------------------------------------------------------
@dataclass
class Traced:
    url: str
    pool_url: str
    service_id: str
    procs: list[Proc]

    def client(self, stack: Stack) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=stack.headers(), timeout=30)


def _tracing_env(endpoint: str) -> dict[str, str]:
    return {
        "FLOW_TRACING__EXPORTER": "redis,otlp",
        "FLOW_TRACING__OTLP_ENDPOINT": endpoint,
        "FLOW_TRACING__OTLP_HEADERS": "x-test=tracing",
        "FLOW_TRACING__EXPORT_DELAY_MS": "100",
        "FLOW_TRACING__OTLP_TIMEOUT_S": "2",
    }


def _start(stack: Stack, name: str, endpoint: str, pool_url: str | None = None) -> Traced:
    """A gateway and a worker on their own prefix, with their own pool service unless ``pool_url``."""
    own_pool = pool_url is None
    pool_port, gw_port = free_port(), free_port()
    service_id = f"{name}-{uuid.uuid4().hex[:6]}"
    pool_url = pool_url or f"http://127.0.0.1:{pool_port}"
    env = {
        **_tracing_env(endpoint),
        "FLOW_REDIS__PREFIX": f"{name}{uuid.uuid4().hex[:6]}",
        "FLOW_PORT": str(gw_port),
        "FLOW_POOL_PORT": str(pool_port),
        "FLOW_POOL__URL": pool_url,
        "FLOW_SERVICE_ID": service_id,
        "FLOW_WORK_DIR": str(stack.workdir / service_id),
    }
    procs: list[Proc] = []
    if own_pool:
        procs.append(stack.spawn(f"{name}-pool", "pool", env))
        _wait_healthy(f"{pool_url}/healthz", procs)
    procs.append(stack.spawn(f"{name}-worker", "workers", env))
    procs.append(stack.spawn(f"{name}-gateway", "gateway", env))
    url = f"http://127.0.0.1:{gw_port}"
    _wait_healthy(f"{url}/healthz", procs)
    return Traced(url, pool_url, service_id, procs)


def _stop(stack: Stack, traced: Traced) -> None:
    for proc in reversed(traced.procs):
        proc.stop()
    leftover = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=io.agentainer.flow.service={traced.service_id}"],
        env={**os.environ, "DOCKER_HOST": stack.docker_host},
        capture_output=True,
        text=True,
    ).stdout.split()
    if leftover:
        subprocess.run(["docker", "rm", "-f", *leftover], env={**os.environ, "DOCKER_HOST": stack.docker_host})
        pytest.fail(f"{traced.service_id} left {len(leftover)} containers behind")


@pytest.fixture(scope="module")
def traced(stack: Stack, receiver: tuple[str, Received]) -> Iterator[Traced]:
    started = _start(stack, "otel", receiver[0])
    try:
        yield started
    finally:
        _stop(stack, started)


def poll(fetch: Callable[[], Any], done: Callable[[Any], bool], what: str, timeout_s: float = 60) -> Any:
    """Fetch until ``done`` (spans arrive after the export delay); fails with the last value."""
    deadline = time.monotonic() + timeout_s
    value = fetch()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {json.dumps(value, default=str)[:4000]}")
        time.sleep(0.2)
        value = fetch()
    return value


def named(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [s for s in spans if s["name"] == name]


EXPECTED = {"step show": 1, "step fn": 1, "step fan": 2, "step boom": 2, "pool dispatch": 6, "workflow traced": 1}


def complete_trace(body: dict[str, Any]) -> bool:
    return all(len(named(body["items"], name)) >= n for name, n in EXPECTED.items())


# ---- the tests ----------------------------------------------------------------------------------
def test_spans_of_a_run_across_gateway_worker_pool_and_step(
    stack: Stack, traced: Traced, receiver: tuple[str, Received]
) -> None:
    with traced.client(stack) as client:
        wf_id = submit(client, DEFINITION)
        body = wait(client, wf_id)
        assert body["status"] == "failed", brief(body)
        steps = steps_by_id(body)
        spans_body = poll(lambda: client.get(f"/v1/workflows/{wf_id}/spans").json(), complete_trace, "spans")
    spans: list[dict[str, Any]] = spans_body["items"]
    by_id = {s["span_id"]: s for s in spans}
    ARTIFACTS.mkdir(exist_ok=True)  # kept for a look (and as sample data for the dashboard's waterfall)
    (ARTIFACTS / "tracing-spans.json").write_text(json.dumps(spans_body, indent=1))

    # One trace for the whole workflow, rooted at the gateway's span.
    trace_id = spans_body["trace_id"]
    assert {s["trace_id"] for s in spans} == {trace_id}
    [root] = named(spans, "workflow traced")
    assert root["parent_span_id"] is None and root["service"] == "flow-gateway"
    assert root["attributes"][tracing.WORKFLOW_ID] == wf_id and root["attributes"][tracing.ORIGIN_KIND] == "api"
    assert [s["start_time"] for s in spans] == sorted(s["start_time"] for s in spans)

    step_spans = [s for s in spans if s["name"].startswith("step ")]
    assert len(step_spans) == 6
    for step in step_spans:
        assert step["parent_span_id"] == root["span_id"] and step["service"] == "flow-worker", step
        attrs = step["attributes"]
        for key in (tracing.WORKFLOW_ID, tracing.WORKFLOW_NAME, tracing.STEP_ID, tracing.STEP_TYPE, tracing.ATTEMPT,
                    tracing.MAP_INDEX, tracing.POOL_KEY, tracing.POOL_HIT, tracing.CONTAINER_ID, tracing.EXIT_CODE):
            assert key in attrs, (key, step)
        assert attrs[tracing.WORKFLOW_NAME] == "traced" and step["name"] == f"step {attrs[tracing.STEP_ID]}"
        # queue wait, acquire and execute: one each under every step span, inside it.
        children = [s for s in spans if s["parent_span_id"] == step["span_id"]]
        assert sorted(c["name"] for c in children) == ["acquire", "execute", "pool dispatch", "queue wait"], children
        for child in children:
            assert child["attributes"][tracing.WORKFLOW_ID] == wf_id
            if child["name"] != "pool dispatch":  # the pool's clock is the same host's here, but not by contract
                assert step["start_time"] <= child["start_time"] <= child["end_time"] <= step["end_time"], child
        [dispatch] = named(children, "pool dispatch")
        assert dispatch["service"] == "flow-pool"
        assert dispatch["attributes"][tracing.CONTAINER_ID] == attrs[tracing.CONTAINER_ID]
        pool_children = [s for s in spans if s["parent_span_id"] == dispatch["span_id"]]
        assert [s["name"] for s in pool_children] == ["pool acquire"], pool_children
        assert pool_children[0]["attributes"][tracing.POOL_HIT] == attrs[tracing.POOL_HIT]

    fan = sorted(named(spans, "step fan"), key=lambda s: s["attributes"][tracing.MAP_INDEX])
    assert [s["attributes"][tracing.MAP_INDEX] for s in fan] == [0, 1]
    assert {s["attributes"][tracing.STEP_TYPE] for s in fan} == {"map"}
    [show] = named(spans, "step show")
    assert show["status"] != "error" and show["attributes"][tracing.EXIT_CODE] == 0

    # The failing step: both attempts are error spans with the exception event.
    boom = sorted(named(spans, "step boom"), key=lambda s: s["attributes"][tracing.ATTEMPT])
    assert [s["attributes"][tracing.ATTEMPT] for s in boom] == [1, 2]
    for attempt in boom:
        assert attempt["status"] == "error" and attempt["attributes"][tracing.EXIT_CODE] == 3
        assert [e["name"] for e in attempt["events"]] == ["exception"]
        assert attempt["events"][0]["attributes"]["exception.type"] == "exit_code"

    # The step processes got TRACEPARENT naming their pool dispatch span, of the same trace.
    def dispatch_of(step_name: str) -> dict[str, Any]:
        [step] = named(spans, step_name)
        [dispatch] = [s for s in spans if s["parent_span_id"] == step["span_id"] and s["name"] == "pool dispatch"]
        return dispatch

    shown = steps["show"]["output"]
    assert shown["ts"] is None
    assert tracing.trace_id_of(shown["tp"]) == trace_id
    assert shown["tp"].split("-")[2] == dispatch_of("step show")["span_id"]
    function_seen = steps["fn"]["output"]
    assert function_seen["tp"] == function_seen["env_tp"]
    assert function_seen["tp"].split("-")[2] == dispatch_of("step fn")["span_id"]
    assert by_id[dispatch_of("step fn")["parent_span_id"]]["name"] == "step fn"

    # The same spans went out over OTLP/HTTP, from the three services.
    _, received = receiver
    exported = poll(lambda: received.of(wf_id), lambda got: len(got) >= len(spans), "OTLP export")
    assert {s["service"] for s in exported} == {"flow-gateway", "flow-worker", "flow-pool"}
    assert {s["trace_id"] for s in exported} == {trace_id}
    assert {s["span_id"] for s in exported} >= {s["span_id"] for s in spans}
    [otlp_root] = [s for s in exported if s["name"] == "workflow traced"]
    assert otlp_root["parent_span_id"] is None and otlp_root["span_id"] == root["span_id"]


def test_unreachable_otlp_endpoint_does_not_break_a_workflow(stack: Stack, traced: Traced) -> None:
    # Nothing listens there: every OTLP export fails (and is logged), the Redis span store still fills.
    closed = f"http://127.0.0.1:{free_port()}/v1/traces"
    broken = _start(stack, "nootlp", closed, pool_url=traced.pool_url)
    try:
        with broken.client(stack) as client:
            wf_id = submit(client, {"name": "unexported", "steps": [{"id": "s", "image": IMAGE, "command": py("print(1)")}]})
            body = wait(client, wf_id)
            assert body["status"] == "completed", brief(body)
            spans = poll(
                lambda: client.get(f"/v1/workflows/{wf_id}/spans").json()["items"],
                lambda items: bool(named(items, "step s")) and bool(named(items, "workflow unexported")),
                "spans without OTLP",
            )
        assert {s["service"] for s in spans} >= {"flow-gateway", "flow-worker"}
    finally:
        _stop(stack, broken)
    logs = "\n".join(p.tail(400) for p in broken.procs)
    assert "Failed to export" in logs or "Transient error" in logs, logs[-3000:]


def test_the_default_stack_keeps_spans_for_the_dashboard(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, headers=stack.headers(), timeout=30) as client:
        wf_id = submit(client, {"name": "default-traced", "steps": [{"id": "s", "image": IMAGE, "command": py("print(1)")}]})
        assert wait(client, wf_id)["status"] == "completed"
        body = poll(
            lambda: client.get(f"/v1/workflows/{wf_id}/spans").json(),
            lambda b: {"workflow default-traced", "step s", "pool dispatch"} <= {s["name"] for s in b["items"]},
            "default span store",
        )
        assert {s["trace_id"] for s in body["items"]} == {body["trace_id"]}
        assert client.get("/v1/workflows/wf-unknown/spans").status_code == 404
