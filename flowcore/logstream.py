"""The entries of a workflow's log stream (``Keyspace.logs(wf_id)``): one output line of one task.

The pool service appends them (in batches, see :mod:`pool.tasklogs`) while a task runs; the gateway
reads them (``GET /v1/workflows/{id}/logs``). Each entry is a flat Redis stream entry::

    step_id  the step          index    the task's index (0 for single-task steps)
    attempt  the attempt       stream   ``stdout`` or ``stderr``
    line     the text, without its newline
    ts       epoch seconds when the agent (or the pool, for exec and cold runs) read the line

The stream is capped (approximately) at :data:`LOG_STREAM_MAXLEN` entries per workflow: the oldest
lines of a very chatty workflow go first. The final 4 KB of every task also stay in its record's
``log_tail``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LOG_STREAM_MAXLEN = 10_000
MAX_LINE_CHARS = 16_384  # longer lines are split (a line is a unit of display, not of data)

StreamName = Literal["stdout", "stderr"]


def _s(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


@dataclass(frozen=True)
class LogLine:
    step_id: str
    index: int
    attempt: int
    stream: StreamName
    line: str
    ts: float

    def to_fields(self) -> dict[str, str]:
        return {
            "step_id": self.step_id,
            "index": str(self.index),
            "attempt": str(self.attempt),
            "stream": self.stream,
            "line": self.line,
            "ts": f"{self.ts:.6f}",
        }

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes] | dict[str, str]) -> LogLine:
        """Parse an entry as redis-py returns it (bytes or str); missing fields get neutral values."""
        f = {_s(k): _s(v) for k, v in fields.items()}
        stream: StreamName = "stderr" if f.get("stream") == "stderr" else "stdout"
        try:
            ts = float(f.get("ts") or 0.0)
        except ValueError:
            ts = 0.0
        return cls(
            step_id=f.get("step_id", ""),
            index=_int(f.get("index"), 0),
            attempt=_int(f.get("attempt"), 1),
            stream=stream,
            line=f.get("line", ""),
            ts=ts,
        )


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default
