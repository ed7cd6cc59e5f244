"""/metrics through prometheus_client (gateway.prometheus: collectors over a scrape, ADR 020) and the SSE
frame helpers (gateway.routes.stream)."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from flowcore import counters as c
from flowcore.errors import InvalidInput
from gateway.prometheus import Exporter, Scrape
from gateway.routes.stream import decode_entry, frame, parse_cursor

# One sample line of the text format 0.0.4: name, optional labels, a number.
SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? -?[0-9.e+-]+$'
)


def check_exposition(text: str) -> dict[str, str]:
    """Every line is a HELP, a TYPE or a sample of the family last declared; returns the types."""
    types: dict[str, str] = {}
    current = ""
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            current = line.split()[2]
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name == current and kind in {"gauge", "counter", "summary", "histogram", "untyped"}
            types[name] = kind
        else:
            assert SAMPLE.match(line), line
            assert line.startswith(current.removesuffix("_total")), (line, current)
            assert "NaN" not in line and "Inf" not in line.replace('le="+Inf"', "")
    return types


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``(sample name, sorted labels) -> value`` of an exposition, parsed by prometheus_client."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(**over: object) -> Scrape:
    counters = {
        "task|map|succeeded": 7, "task|map|failed": 1, "retry|map": 2,
        "td|map|b0": 3, "td|map|b7": 5, "td|map|sum_ms": 5015,
        "sd|sequential|b8": 2, "sd|sequential|sum_ms": 4000,
        "wf|completed": 5, "wf|completed|alpha": 3, "wf|failed": 1,
        "wd|b4": 4, "wd|b15": 1, "wd|sum_ms": 100_000, "wd|alpha|b4": 3, "wd|alpha|sum_ms": 3000,
    }
    base = Scrape(
        workflows={"running": 3, "failed": 0}, queue_depth=4, queue_ready=2, tasks_running=1,
        services=[("p1", {"overall": {"warm_hits": 12, "cold_starts": 1, "tasks": 13, "busy": 1, "idle": 2,
                                      "failures": float("nan")}}), ("down", None)],
        flow_counts={"alpha": {"refused": 2, "admitted": 1}}, counters=counters, names=["alpha", "beta"],
    )
    for key, value in over.items():
        setattr(base, key, value)
    return base


def test_collectors_render_gauges_counters_and_histograms() -> None:
    body, content_type = Exporter().render(scrape())
    text = body.decode()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    types = check_exposition(text)
    assert types["flow_workflows"] == "gauge" and types["flow_tasks_total"] == "counter"
    assert types["flow_step_duration_seconds"] == "histogram" and types["flow_workflow_duration_seconds"] == "histogram"
    v = samples(text)
    assert v[("flow_workflows", (("status", "running"),))] == 3 and v[("flow_queue_depth", ())] == 4
    assert v[("flow_queue_ready", ())] == 2 and v[("flow_tasks_running", ())] == 1
    assert v[("flow_tasks_total", (("outcome", "succeeded"), ("type", "map")))] == 7
    assert v[("flow_tasks_total", (("outcome", "succeeded"), ("type", "reduce")))] == 0
    assert v[("flow_task_retries_total", (("type", "map"),))] == 2
    # cumulative buckets: 3 at le=0.005, 8 from le=1.0 on, _count = the +Inf bucket
    assert v[("flow_task_duration_seconds_bucket", (("le", "0.005"), ("type", "map")))] == 3
    assert v[("flow_task_duration_seconds_bucket", (("le", "0.5"), ("type", "map")))] == 3
    assert v[("flow_task_duration_seconds_bucket", (("le", "1.0"), ("type", "map")))] == 8
    assert v[("flow_task_duration_seconds_bucket", (("le", "+Inf"), ("type", "map")))] == 8
    assert v[("flow_task_duration_seconds_count", (("type", "map"),))] == 8
    assert v[("flow_task_duration_seconds_sum", (("type", "map"),))] == 5.015
    assert v[("flow_step_duration_seconds_count", (("type", "sequential"),))] == 2
    # names: alpha has its own series, beta (labelled, nothing yet) zeros, the rest is other
    assert v[("flow_workflows_finished_total", (("status", "completed"), ("workflow", "alpha")))] == 3
    assert v[("flow_workflows_finished_total", (("status", "completed"), ("workflow", "beta")))] == 0
    assert v[("flow_workflows_finished_total", (("status", "completed"), ("workflow", "other")))] == 2
    assert v[("flow_workflows_finished_total", (("status", "failed"), ("workflow", "other")))] == 1
    assert v[("flow_workflow_duration_seconds_count", (("workflow", "alpha"),))] == 3
    assert v[("flow_workflow_duration_seconds_count", (("workflow", "other"),))] == 2
    assert v[("flow_workflow_duration_seconds_sum", (("workflow", "other"),))] == 97.0
    # pool services: a NaN counter is left out, a service that did not answer is down
    assert v[("flow_pool_service_up", (("service", "p1"),))] == 1 and v[("flow_pool_service_up", (("service", "down"),))] == 0
    assert v[("flow_pool_warm_hits_total", (("service", "p1"),))] == 12
    assert ("flow_pool_failures_total", (("service", "p1"),)) not in v
    assert v[("flow_pool_containers", (("service", "p1"), ("state", "idle")))] == 2
    assert v[("flow_starts_total", (("outcome", "refused"), ("workflow", "alpha")))] == 2


def test_openmetrics_when_asked_and_apps_do_not_share_a_registry() -> None:
    one, two = Exporter(), Exporter()
    assert one.registry is not two.registry
    body, content_type = one.render(scrape(), "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    text = body.decode()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(text)}
    assert families["flow_tasks"].type == "counter" and families["flow_workflow_duration_seconds"].type == "histogram"
    # collectors only read inside render: a stray collect is an error, not stale data
    with pytest.raises(RuntimeError):
        list(one.registry.collect())


def test_an_empty_store_renders_zeros_not_gaps() -> None:
    v = samples(Exporter().render(Scrape())[0].decode())
    for t in c.CONTAINER_TYPES:
        assert v[("flow_step_duration_seconds_count", (("type", t),))] == 0
        assert v[("flow_step_duration_seconds_bucket", (("le", "+Inf"), ("type", t)))] == 0
    assert v[("flow_workflows_finished_total", (("status", "completed"), ("workflow", "other")))] == 0


@pytest.mark.parametrize(
    ("raw", "parts", "expected"),
    [
        ("1712345678901-0,1712345678950-2", 2, ["1712345678901-0", "1712345678950-2"]),
        ("1712345678901", 2, ["1712345678901", "1712345678901"]),
        ("0-0", 1, ["0-0"]),
        (" 5-1 , 6-2 ", 2, ["5-1", "6-2"]),
    ],
)
def test_cursors(raw: str, parts: int, expected: list[str]) -> None:
    assert parse_cursor(raw, "since", parts) == expected


@pytest.mark.parametrize("raw", ["abc", "1-2-3", "1,2,3", "-1", "1-", "$", "1,x"])
def test_bad_cursors_name_the_parameter(raw: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_cursor(raw, "since", 2)
    assert info.value.field == "since"


def test_frames_and_entries() -> None:
    text = frame("step", {"type": "step", "line": "a\nb"}, "1-0,2-0")
    assert text == 'id: 1-0,2-0\nevent: step\ndata: {"type":"step","line":"a\\nb"}\n\n'
    assert frame("snapshot", {"a": 1}).startswith("event: snapshot\n")
    event = decode_entry({b"data": json.dumps({"type": "task", "step_id": "s"}).encode()}, "wf-1", log=False)
    assert event == {"type": "task", "step_id": "s", "workflow_id": "wf-1"}
    log = decode_entry({b"step_id": b"s", b"index": b"2", b"attempt": b"1", b"stream": b"stdout",
                        b"line": b"hello", b"ts": b"12.5"}, "wf-1", log=True)
    assert log == {"type": "log", "workflow_id": "wf-1", "step_id": "s", "index": 2, "attempt": 1,
                   "stream": "stdout", "line": "hello", "ts": 12.5}
