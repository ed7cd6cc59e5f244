"""The Prometheus text format writer (gateway.prometheus) and the SSE frame helpers (gateway.routes.stream)."""

from __future__ import annotations

import json
import re

import pytest

from flowcore.errors import InvalidInput
from gateway.prometheus import Exposition, escape_label
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
            assert line.startswith(current), (line, current)
            assert "NaN" not in line and "Inf" not in line
    return types


def test_gauges_counters_and_summaries_render_in_the_text_format() -> None:
    out = Exposition()
    out.gauge("flow_workflows", "By status.", 3, {"status": "running"})
    out.gauge("flow_workflows", "By status.", 0, {"status": "failed"})
    out.counter("flow_pool_warm_hits_total", "Hits.", 12, {"service": 'a"b\\c\nd'})
    out.gauge("flow_dropped", "Not finite values are left out.", float("nan"))
    out.summary("flow_step_duration_seconds", "Durations.", [0.5, 1.5, 3.0], {"type": "map"})
    out.summary("flow_step_duration_seconds", "Durations.", [], {"type": "reduce"})
    text = out.render()
    types = check_exposition(text)
    assert types == {"flow_workflows": "gauge", "flow_pool_warm_hits_total": "counter", "flow_dropped": "gauge",
                     "flow_step_duration_seconds": "summary"}
    assert 'flow_workflows{status="running"} 3\n' in text
    assert 'flow_pool_warm_hits_total{service="a\\"b\\\\c\\nd"} 12' in text
    assert 'flow_step_duration_seconds{type="map",quantile="0.5"} 1.5' in text
    assert 'flow_step_duration_seconds_sum{type="map"} 5' in text and 'flow_step_duration_seconds_count{type="map"} 3' in text
    assert 'flow_step_duration_seconds_count{type="reduce"} 0' in text
    assert 'type="reduce",quantile' not in text  # no quantile of nothing
    assert "\nflow_dropped " not in text


def test_names_are_checked() -> None:
    out = Exposition()
    with pytest.raises(ValueError):
        out.gauge("flow-bad", "x", 1)
    with pytest.raises(ValueError):
        out.gauge("flow_ok", "x", 1, {"bad-label": "v"})
    assert escape_label("plain") == "plain"


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
