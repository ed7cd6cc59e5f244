"""Pure pieces of live logs and task usage: line splitting, the log entry format, the usage wrapper."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from flowcore.logstream import LogLine
from pool.agent.flow_agent import LineSplitter
from pool.contract import Usage, parse_usage, task_wrapped


def test_line_splitter_joins_chunks_and_keeps_the_unterminated_rest() -> None:
    s = LineSplitter(limit=8)
    assert s.feed(b"ab") == []
    assert s.feed(b"c\nde\r\n\nf") == ["abc", "de", ""]
    assert s.feed(b"0123456789") == ["f0123456"]  # a line over the limit is cut
    assert s.close() == ["789"]
    assert s.close() == []
    assert LineSplitter(limit=4).feed(b"abcdefghij\n") == ["abcd", "efgh", "ij"]
    assert LineSplitter().feed("é\n".encode()[:1] + b"\n") == ["\ufffd"]  # undecodable bytes are replaced


def test_log_line_round_trips_through_redis_fields() -> None:
    line = LogLine("fan", 3, 2, "stderr", "oops: ü", 1700000000.125)
    raw = {k.encode(): v.encode() for k, v in line.to_fields().items()}
    assert LogLine.from_fields(raw) == line
    assert LogLine.from_fields({"line": "x", "index": "nope", "stream": "weird"}) == LogLine("", 0, 1, "stdout", "x", 0.0)


@pytest.mark.parametrize(
    ("text", "with_peak", "usage"),
    [
        ("start 1000000 5\nend 251000000 7340032\n", True, Usage(0.25, 7340032)),
        ("start 1000000 5\nend 251000000 7340032\n", False, Usage(0.25, None)),
        ("start - -\nend - -\n", True, Usage(None, None)),  # no readable cgroup
        ("start 10 -\n", True, Usage(None, None)),  # killed before the end line
        ("end 3000000000 0\n", True, Usage(None, None)),
        ("", True, Usage()),
        (None, True, Usage()),
        ("start 5 1\nend 2 9\n", True, Usage(0.0, 9)),  # never negative
    ],
)
def test_parse_usage(text: str | None, with_peak: bool, usage: Usage) -> None:
    assert parse_usage(text, with_peak=with_peak) == usage


def test_the_wrapper_feeds_stdin_keeps_the_exit_code_and_notes_usage(tmp_path: Path) -> None:
    (tmp_path / "input.json").write_text(json.dumps({"x": 1}))
    usage = tmp_path / "usage"
    argv = task_wrapped(["/bin/sh", "-c", "cat; echo; echo err >&2; exit 3"], str(usage))
    done = subprocess.run(argv, env={"FLOW_INPUT_PATH": str(tmp_path / "input.json"), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (3, '{"x": 1}\n', "err\n")
    rows = [line.split() for line in usage.read_text().splitlines()]
    assert [r[0] for r in rows] == ["start", "end"] and all(len(r) == 3 for r in rows)
    assert all(v == "-" or v.isdigit() for r in rows for v in r[1:])
