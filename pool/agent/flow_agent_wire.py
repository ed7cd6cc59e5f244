"""The agent's wire: protocol frames, output line splitting, batched log lines, resource usage.

Stdlib only, Python 3.9 or newer: it runs inside step containers. The pool imports the same frames
(:func:`encode_message`, :func:`decode_message`) so both ends of the channel share one definition.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import resource
import threading
import time
from typing import Any, Callable

PROTOCOL_VERSION = 2
TAIL_BYTES = 4096
MAX_OUTPUT_BYTES = 16 * 1024 * 1024  # stdout, output files, a function's result: the pool sends the task's own
MAX_LINE_BYTES = 64 * 1024 * 1024
STATE_TIMEOUT_S = 30.0
LOG_FLUSH_S = 0.05
MAX_LOG_LINE_BYTES = 16384
MAX_LOG_BYTES = 8 * 1024 * 1024  # per task; past it the live log stops (the tail goes on)
READ_CHUNK_BYTES = 65536


def encode_message(message: dict[str, Any]) -> bytes:
    """One protocol frame: compact JSON and a newline (JSON escapes every newline inside)."""
    return json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"


def decode_message(line: bytes) -> dict[str, Any]:
    value = json.loads(line)
    if not isinstance(value, dict) or not isinstance(value.get("t"), str):
        raise ValueError("a protocol message is a JSON object with a string 't'")
    return value


def oom_kill_count() -> int:
    """The container cgroup's OOM-kill counter (cgroup v2 or v1); 0 when unreadable."""
    for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        try:
            with open(path) as handle:
                for line in handle:
                    name, _, value = line.partition(" ")
                    if name == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return 0


class Tail:
    """The last bytes of a stream, bounded."""

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self.limit = limit
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data.extend(chunk)
        if len(self.data) > 4 * self.limit:
            del self.data[: -self.limit]

    def text(self) -> str:
        return bytes(self.data[-self.limit :]).decode(errors="replace")


class LineSplitter:
    """Bytes in, complete lines out (text, without the newline); a line over ``limit`` bytes is cut."""

    def __init__(self, limit: int = MAX_LOG_LINE_BYTES) -> None:
        self.limit = limit
        self.pending = bytearray()

    def feed(self, data: bytes) -> list[str]:
        buf = self.pending
        buf.extend(data)
        if b"\n" not in data and len(buf) < self.limit:
            return []
        lines: list[str] = []
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            self._cut(buf[start:end], lines)
            start = end + 1
        del buf[:start]
        while len(buf) >= self.limit:
            lines.append(_text(buf[: self.limit]))
            del buf[: self.limit]
        return lines

    def _cut(self, line: bytes | bytearray, lines: list[str]) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        for i in range(0, max(len(line), 1), self.limit):
            lines.append(_text(line[i : i + self.limit]))

    def close(self) -> list[str]:
        """The last line when the output did not end with a newline."""
        lines: list[str] = []
        if self.pending:
            self._cut(self.pending, lines)
            self.pending = bytearray()
        return lines


def _text(data: bytes | bytearray) -> str:
    return bytes(data).decode(errors="replace")


class LogSender:
    """A task's output lines to the pool, batched.

    Lines fed on the event loop (a command's pipes) are sent as a ``log`` message ``LOG_FLUSH_S``
    after the first one not sent yet. Lines fed from the function worker thread are only buffered
    (waking the loop from there would cost every function a thread switch); a ticker on the loop
    (:meth:`start_ticker`) sends them every ``LOG_FLUSH_S``. :meth:`close` returns what is left,
    for the ``result`` message: a task that ends quickly costs no ``log`` message at all.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, send: Callable[[dict[str, Any]], None], task_id: str,
        max_bytes: int = MAX_LOG_BYTES,
    ) -> None:
        self._loop = loop
        self._max_bytes = max_bytes  # the task's live log at most (FLOW_LIMITS__MAX_LOG_MIB_PER_TASK)
        self._loop_thread = threading.get_ident()
        self._send = send
        self._task_id = task_id
        self._lock = threading.Lock()
        self._buffer: list[list[Any]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._sent_bytes = 0
        self._stopped = False
        self._splitters = {"stdout": LineSplitter(), "stderr": LineSplitter()}

    def feed(self, stream: str, data: bytes) -> None:
        # One splitter per stream, each fed from one thread at a time (pipe reader or worker thread).
        lines = self._splitters[stream].feed(data)
        if lines:
            self._add(stream, lines)

    def _add(self, stream: str, lines: list[str]) -> None:
        now = round(time.time(), 6)
        with self._lock:
            if self._stopped:
                return
            for line in lines:
                self._sent_bytes += len(line) + 1
                if self._sent_bytes > self._max_bytes:
                    self._stopped = True
                    note = f"[flow: over {self._max_bytes >> 20} MiB of output; the live log stops here]"
                    self._buffer.append(["stderr", note, now])
                    break
                self._buffer.append([stream, line, now])
        if self._timer is None and not self._closed and threading.get_ident() == self._loop_thread:
            self._timer = self._loop.call_later(LOG_FLUSH_S, self._tick)

    def start_ticker(self) -> None:
        """Send what the worker thread buffers every ``LOG_FLUSH_S`` until :meth:`close`."""
        if self._timer is None:
            self._timer = self._loop.call_later(LOG_FLUSH_S, self._tick, True)

    def _tick(self, again: bool = False) -> None:
        self._timer = None
        with self._lock:
            batch, self._buffer = self._buffer, []
        if batch:
            self._send({"t": "log", "id": self._task_id, "lines": batch})
        if again and not self._closed:
            self._timer = self._loop.call_later(LOG_FLUSH_S, self._tick, True)

    def close(self) -> list[list[Any]]:
        """At the task's end (event loop thread): the unterminated last lines and whatever is not
        sent yet, for the result message."""
        for stream, splitter in self._splitters.items():
            rest = splitter.close()
            if rest:
                self._add(stream, rest)
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with self._lock:
            batch, self._buffer = self._buffer, []
        return batch


class _TextSink(io.TextIOBase):
    """A text stream feeding a :class:`Tail` and the live log (print() and ctx.log in function steps)."""

    def __init__(self, tail: Tail, logs: LogSender | None = None, stream: str = "stdout") -> None:
        self._tail = tail
        self._logs = logs
        self._stream = stream

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        data = s.encode(errors="replace")
        self._tail.add(data)
        if self._logs is not None:
            self._logs.feed(self._stream, data)
        return len(s)


# ---- resource usage ------------------------------------------------------------------------------
def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0); False when not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int | None:
    """This process's RSS high-water mark (since the last reset), or None.

    ``getrusage`` (a microsecond) rather than ``VmHWM`` in ``/proc/self/status`` (tens of them); it
    never reports less than the image's RSS before exec, some 10 MB, below the agent's own RSS.
    """
    try:
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (OSError, ValueError):
        return None


def thread_cpu_s() -> float | None:
    """This thread's CPU time (user + system), to the nanosecond where the clock allows."""
    try:
        return time.thread_time()
    except OSError:
        return None


def child_usage(usage: Any) -> dict[str, Any]:
    """``wait4``'s rusage as result fields (``ru_maxrss`` is in KiB on Linux)."""
    if usage is None:
        return {"cpu_time_s": None, "peak_memory_bytes": None}
    return {
        "cpu_time_s": round(usage.ru_utime + usage.ru_stime, 6),
        "peak_memory_bytes": int(usage.ru_maxrss) * 1024 if usage.ru_maxrss else None,
    }


def watch_exit(loop: asyncio.AbstractEventLoop, pid: int) -> asyncio.Future[tuple[int, Any]]:
    """A future of ``(exit status, rusage)`` of child ``pid``, reaped with ``wait4``.

    A pidfd tells the loop when the child has exited (no thread, no SIGCHLD handler); where there is
    none (old kernels, non-Linux), a thread blocks in ``wait4``.
    """

    def reap(flags: int) -> tuple[int, int, Any]:
        try:
            return os.wait4(pid, flags)
        except ChildProcessError:  # reaped by someone else: the status is lost
            return pid, 255 << 8, None

    pidfd_open = getattr(os, "pidfd_open", None)
    pidfd = -1
    if pidfd_open is not None:
        try:
            pidfd = pidfd_open(pid)
        except OSError:
            pidfd = -1
    if pidfd < 0:
        return loop.run_in_executor(None, lambda: reap(0)[1:])
    future: asyncio.Future[tuple[int, Any]] = loop.create_future()

    def ready() -> None:
        wpid, status, usage = reap(os.WNOHANG)
        if wpid == 0:
            return
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if not future.done():
            future.set_result((status, usage))

    loop.add_reader(pidfd, ready)
    return future


def read_pipe(
    loop: asyncio.AbstractEventLoop, fd: int, on_data: Callable[[bytes], None]
) -> asyncio.Future[None]:
    """Read ``fd`` (non-blocking) into ``on_data`` until EOF; the future is done at EOF."""
    os.set_blocking(fd, False)
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            data = os.read(fd, READ_CHUNK_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            on_data(data)
            return
        loop.remove_reader(fd)
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    return done
