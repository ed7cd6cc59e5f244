"""Pure pieces of live logs and task usage: line splitting, the log entry format, the usage wrapper."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from flowcore.logstream import LogLine
from pool.agent.flow_agent_wire import LineSplitter
from pool.contract import task_wrapped


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


def test_the_wrapper_feeds_the_input_keeps_the_exit_code_and_sets_the_paths() -> None:
    argv = task_wrapped(["/bin/sh", "-c", 'cat; echo; echo "$FLOW_INPUT|$HOME" >&2; exit 3'], "t1")
    env = {"FLOW_INPUT": json.dumps({"x": 1}), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (3, '{"x": 1}\n')
    unset, home = done.stderr.strip().split("|")
    # /flow/task/t1 where it may be made (as in a container), else a directory under /tmp.
    assert unset == "" and home.endswith("/work")
    assert home == "/flow/task/t1/work" or home.startswith("/tmp/flow-task-")
    shutil.rmtree(Path(home).parent, ignore_errors=True)
