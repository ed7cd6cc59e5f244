"""The in-container agent of Agentainer Flow: stdlib only, Python 3.9 or newer.

The pool bind-mounts this file read-only into every pooled container and starts it as the
container's main process::

    python3 /flow/agent/flow_agent.py --socket /flow/run/agent.sock --modules /flow/run/modules

It listens on a unix socket in a bind-mounted directory, so it needs no container network. The
protocol is newline-delimited JSON, one message per line, each written with a single ``write``
(unix sockets have no Nagle stall). The agent speaks first::

    agent -> pool  {"t": "hello", "v": 1, "pid": 1, "python": "3.11.2", "busy": 0}
    pool  -> agent {"t": "ping", "n": 7}                         agent -> {"t": "pong", "n": 7, "busy": 0}
    pool  -> agent {"t": "run", "id": TASK, "kind": "command", "argv": [...], "env": {...},
                    "cwd": DIR, "input_path": FILE, "timeout_s": 5.0}
    pool  -> agent {"t": "run", "id": TASK, "kind": "function", "function": {"module", "qualname",
                    "source"}, "ctx": {...}, "env": {...}, "cwd": DIR, "timeout_s": 5.0}
    pool  -> agent {"t": "cancel", "id": TASK}
    agent -> pool  {"t": "state", "rid": 3, "id": TASK, "op": "get", "key": "k", "value": null}
    pool  -> agent {"t": "state_reply", "rid": 3, "ok": true, "found": true, "value": 41}
    agent -> pool  {"t": "log", "id": TASK, "lines": [["stdout", "a line", 1700000000.25], ...]}
    agent -> pool  {"t": "result", "id": TASK, "exit_code": 0, "signal": null, "timed_out": false,
                    "cancelled": false, "oom": false, "stdout": "...", "log_tail": "...",
                    "output": ..., "has_output": false, "output_error": null, "error": null,
                    "fatal": false, "run_ms": 1.2, "cpu_time_s": 0.01, "peak_memory_bytes": 9043968,
                    "lines": [["stderr", "the last lines", 1700000000.5]]}

While a task runs, its output lines go to the pool as ``log`` messages, batched: one message at most
every ``LOG_FLUSH_S`` per task; the lines not sent yet when it ends come in its ``result`` (so a pool
that has the result has every line). Lines carry no newline; a line longer than
``MAX_LOG_LINE_BYTES`` is cut.

Resource usage: a command task's CPU time (user + system) and peak RSS come from ``wait4`` on its
child (including the descendants it waited for; the kernel floors ru_maxrss at the RSS of the
agent when it spawned the child, some 20 MB); a function task's CPU time is its worker thread's
(``time.thread_time``) and its peak RSS is the agent process's high-water mark, which the agent
resets (``/proc/self/clear_refs``) after answering each task; ``null`` where the platform cannot
tell.

A command task runs as a child process in its own process group (killed as a whole on timeout,
cancel, and when it exits, so no background process outlives its task; the agent reaps it itself
with ``wait4`` through a pidfd, for its resource usage), with an environment built
from scratch: the agent's start-up environment (the image's) plus the task's. A function task is
imported once per container and called in a worker thread with one argument, ``ctx``; when it
times out the agent answers and then exits, so the pool replaces the container.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import hashlib
import importlib
import importlib.util
import io
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import Any, Callable

PROTOCOL_VERSION = 1
TAIL_BYTES = 4096
MAX_STDOUT_BYTES = 16 * 1024 * 1024
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

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Callable[[dict[str, Any]], None], task_id: str) -> None:
        self._loop = loop
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
                if self._sent_bytes > MAX_LOG_BYTES:
                    self._stopped = True
                    note = f"[flow: over {MAX_LOG_BYTES >> 20} MiB of output; the live log stops here]"
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


class StepState:
    """``ctx.state``: workflow state through the agent channel (synchronous calls)."""

    def __init__(self, agent: Agent, session: Session, task_id: str) -> None:
        self._agent = agent
        self._session = session
        self._task_id = task_id

    def _call(self, op: str, key: str, value: Any = None) -> dict[str, Any]:
        future = asyncio.run_coroutine_threadsafe(
            self._session.state_request(self._task_id, op, key, value), self._agent.loop
        )
        reply = future.result(STATE_TIMEOUT_S)
        if not reply.get("ok"):
            raise RuntimeError(f"state {op} {key!r} failed: {reply.get('error')}")
        return reply

    def get(self, key: str, default: Any = None) -> Any:
        reply = self._call("get", key)
        return reply.get("value") if reply.get("found") else default

    def set(self, key: str, value: Any) -> Any:
        return self._call("set", key, value).get("value")

    def increment(self, key: str, by: float = 1) -> Any:
        return self._call("increment", key, by).get("value")

    def append(self, key: str, value: Any) -> Any:
        return self._call("append", key, value).get("value")

    def delete(self, key: str) -> None:
        self._call("delete", key)


class StepContext:
    """The minimal ``ctx`` a Python-function step receives (the SDK may wrap it)."""

    def __init__(
        self, data: dict[str, Any], env: dict[str, str], state: StepState, log: logging.Logger
    ) -> None:
        self.workflow_id: str = data.get("workflow_id", "")
        self.step_id: str = data.get("step_id", "")
        self.task_id: str = data.get("task_id", "")
        self.index: int = int(data.get("index", 0))
        self.attempt: int = int(data.get("attempt", 1))
        self.input: Any = data.get("input")
        self.traceparent: str | None = data.get("traceparent")
        inp = self.input if isinstance(self.input, dict) else {}
        self.item: Any = inp.get("item")
        self.deps: Any = inp.get("deps")
        self.env = env
        self.state = state
        self.log = log


class Session:
    """One connection from the pool."""

    def __init__(self, agent: Agent, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.agent = agent
        self.reader = reader
        self.writer = writer
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.next_rid = 0
        self.tasks: set[asyncio.Future[None]] = set()

    def send(self, message: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode_message(message))

    async def state_request(self, task_id: str, op: str, key: str, value: Any) -> dict[str, Any]:
        self.next_rid += 1
        rid = self.next_rid
        future: asyncio.Future[dict[str, Any]] = self.agent.loop.create_future()
        self.pending[rid] = future
        self.send({"t": "state", "rid": rid, "id": task_id, "op": op, "key": key, "value": value})
        try:
            return await asyncio.wait_for(future, STATE_TIMEOUT_S)
        finally:
            self.pending.pop(rid, None)

    async def serve(self) -> None:
        self.send(
            {
                "t": "hello",
                "v": PROTOCOL_VERSION,
                "pid": os.getpid(),
                "python": sys.version.split()[0],
                "busy": self.agent.busy,
            }
        )
        try:
            while True:
                line = await self.reader.readline()
                if not line:
                    break
                try:
                    message = decode_message(line)
                except ValueError as exc:
                    self.send({"t": "error", "error": f"bad message: {exc}"})
                    continue
                self.handle(message)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            # The pool that asked is gone: nothing it started may keep running.
            for runner in self.agent.runners.values():
                if runner.session is self:
                    runner.kill()
            for future in self.pending.values():
                if not future.done():
                    future.set_result({"ok": False, "error": "pool connection closed"})
            self.writer.close()

    def handle(self, message: dict[str, Any]) -> None:
        kind = message["t"]
        if kind == "ping":
            self.send({"t": "pong", "n": message.get("n"), "busy": self.agent.busy})
        elif kind == "run":
            task_id = str(message.get("id"))
            runner = Runner(self.agent, self, message)
            self.agent.runners[task_id] = runner
            task = asyncio.ensure_future(runner.run())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif kind == "cancel":
            target = self.agent.runners.get(str(message.get("id")))
            if target is not None:
                target.cancel()
        elif kind == "state_reply":
            future = self.pending.get(int(message.get("rid", -1)))
            if future is not None and not future.done():
                future.set_result(message)
        elif kind == "exit":
            self.agent.stop()
        else:
            self.send({"t": "error", "error": f"unknown message type {kind!r}"})


class Runner:
    """One task: a child process (command) or a call in the worker thread (function)."""

    def __init__(self, agent: Agent, session: Session, message: dict[str, Any]) -> None:
        self.agent = agent
        self.session = session
        self.message = message
        self.task_id = str(message.get("id"))
        self.pid: int | None = None  # the command's child, until it is reaped
        self.cancelled = False
        self.timed_out = False
        self.cancel_event = asyncio.Event()

    def kill(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    def cancel(self) -> None:
        self.cancelled = True
        self.kill()
        self.cancel_event.set()

    async def run(self) -> None:
        self.agent.busy += 1
        started = time.perf_counter()
        logs = LogSender(self.agent.loop, self.session.send, self.task_id)
        try:
            if self.message.get("kind") == "function":
                result = await self.run_function(logs)
            else:
                result = await self.run_command(logs)
        except Exception as exc:  # the agent must always answer
            result = {
                "exit_code": None,
                "error": f"agent failure: {exc!r}",
                "log_tail": traceback.format_exc(),
            }
        finally:
            self.agent.busy -= 1
            self.agent.runners.pop(self.task_id, None)
        lines = logs.close()
        if lines:
            result["lines"] = lines  # the last lines travel with the result
        result.update(
            {"t": "result", "id": self.task_id, "timed_out": self.timed_out, "cancelled": self.cancelled}
        )
        result["run_ms"] = round((time.perf_counter() - started) * 1000, 3)
        self.session.send(result)
        # The RSS high-water mark back to the current RSS for the next task (see peak_rss_bytes, and
        # wait4's ru_maxrss, which starts from the spawning process's mark): after the answer, off
        # the task's time.
        if self.agent.peak_resettable:
            self.agent.loop.call_soon(reset_peak_rss)
        if result.get("fatal"):
            with contextlib.suppress(Exception):
                await self.session.writer.drain()
            self.agent.stop(code=70)

    def env(self) -> dict[str, str]:
        env = dict(self.agent.base_env)
        env.update({str(k): str(v) for k, v in (self.message.get("env") or {}).items()})
        return env

    async def run_command(self, logs: LogSender) -> dict[str, Any]:
        argv = [str(a) for a in self.message.get("argv") or []]
        cwd = self.message.get("cwd") or None
        input_path = self.message.get("input_path")
        timeout_s = self.message.get("timeout_s")
        loop = self.agent.loop
        stdout = bytearray()
        tail = Tail()
        truncated = False
        oom_before = oom_kill_count()
        stdin: Any = subprocess.DEVNULL
        if input_path and os.path.exists(input_path):
            stdin = open(input_path, "rb")  # noqa: SIM115 - closed below
        try:
            # Popen, not asyncio's subprocess: the agent reaps the child itself (wait4 gives its rusage).
            proc = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=self.env(),
                start_new_session=True,
                bufsize=0,
            )
        except (OSError, ValueError) as exc:
            return {"exit_code": 127, "stdout": "", "log_tail": f"cannot start {argv[:1]}: {exc}\n"}
        finally:
            if stdin is not subprocess.DEVNULL:
                stdin.close()
        self.pid = proc.pid
        exited = watch_exit(loop, proc.pid)
        assert proc.stdout is not None and proc.stderr is not None

        def on_stdout(chunk: bytes) -> None:
            nonlocal truncated
            tail.add(chunk)
            logs.feed("stdout", chunk)
            if len(stdout) + len(chunk) <= MAX_STDOUT_BYTES:
                stdout.extend(chunk)
            else:
                truncated = True

        def on_stderr(chunk: bytes) -> None:
            tail.add(chunk)
            logs.feed("stderr", chunk)

        pipes = [(proc.stdout, on_stdout), (proc.stderr, on_stderr)]
        eofs = [read_pipe(loop, pipe.fileno(), handler) for pipe, handler in pipes]
        try:
            try:
                await asyncio.wait_for(asyncio.shield(exited), timeout_s)
            except asyncio.TimeoutError:
                self.timed_out = True
            # Kill the whole group: on timeout, and after a normal exit any background leftovers.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            status, usage = await exited
            self.pid = None
            proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it again
            await asyncio.wait(eofs, timeout=2.0)
        finally:
            for pipe, _ in pipes:
                loop.remove_reader(pipe.fileno())
                pipe.close()
        code = proc.returncode
        sig = -code if code < 0 else None
        oom = (
            sig == signal.SIGKILL
            and not self.timed_out
            and not self.cancelled
            and oom_kill_count() > oom_before
        )
        return {
            "exit_code": 128 + sig if sig is not None else code,
            "signal": sig,
            "oom": oom,
            "stdout": bytes(stdout).decode(errors="replace"),
            "stdout_truncated": truncated,
            "log_tail": tail.text(),
            **child_usage(usage),
        }

    async def run_function(self, logs: LogSender) -> dict[str, Any]:
        tail = Tail()
        timeout_s = self.message.get("timeout_s")
        future = self.agent.loop.run_in_executor(self.agent.executor, self.call_function, tail, logs)
        logs.start_ticker()
        cancel_wait = asyncio.ensure_future(self.cancel_event.wait())
        waiters: set[asyncio.Future[Any]] = {future, cancel_wait}
        done, _ = await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        cancel_wait.cancel()
        if future in done:
            result: dict[str, Any] = future.result()
            result["log_tail"] = tail.text()
            return result
        if not self.cancelled:
            self.timed_out = True
        # A thread cannot be killed: answer, then let the container die and be replaced.
        return {"exit_code": None, "log_tail": tail.text(), "fatal": True}

    def call_function(self, tail: Tail, logs: LogSender) -> dict[str, Any]:
        """Runs in the worker thread; its CPU time is this thread's, its memory the process's peak
        (reset after the previous task)."""
        cpu_before = thread_cpu_s()
        try:
            result = self._call_function(tail, logs)
        finally:
            cpu_after = thread_cpu_s()
        cpu = None if cpu_before is None or cpu_after is None else round(cpu_after - cpu_before, 6)
        result["cpu_time_s"] = cpu
        result["peak_memory_bytes"] = peak_rss_bytes() if self.agent.peak_resettable else None
        return result

    def _call_function(self, tail: Tail, logs: LogSender) -> dict[str, Any]:
        spec = self.message.get("function") or {}
        sink = _TextSink(tail, logs, "stdout")
        err_sink = _TextSink(tail, logs, "stderr")
        handler = logging.StreamHandler(err_sink)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger = logging.getLogger("flow.step")
        logger.handlers[:] = [handler]
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        ctx = StepContext(
            self.message.get("ctx") or {},
            self.env(),
            StepState(self.agent, self.session, self.task_id),
            logger,
        )
        cwd = self.message.get("cwd")
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(err_sink):
                try:
                    fn = self.agent.load_function(spec)
                    if cwd:
                        os.chdir(cwd)
                    value = fn(ctx)
                    if asyncio.iscoroutine(value):
                        value = self.agent.fn_loop().run_until_complete(value)
                except BaseException as exc:
                    traceback.print_exc(file=err_sink)
                    return {"exit_code": 1, "error": f"{type(exc).__name__}: {exc}"}
                finally:
                    with contextlib.suppress(OSError):
                        os.chdir("/")
        finally:
            logger.handlers[:] = []
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            return {"exit_code": 0, "output_error": f"function returned a value that is not JSON: {exc}"}
        return {"exit_code": 0, "output": value, "has_output": True}


class Agent:
    def __init__(self, socket_path: str, modules_dir: str) -> None:
        self.socket_path = socket_path
        self.modules_dir = modules_dir
        self.base_env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_AGENT_")}
        self.runners: dict[str, Runner] = {}
        self.busy = 0
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="flow-fn")
        self.functions: dict[tuple[str, str, str], Any] = {}
        self.peak_resettable = False  # whether /proc/self/clear_refs can reset the RSS high-water mark
        self._fn_loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[int] | None = None
        self.loop = asyncio.new_event_loop()

    def fn_loop(self) -> asyncio.AbstractEventLoop:
        """The event loop (kept across tasks, in the worker thread) for async function steps."""
        if self._fn_loop is None:
            self._fn_loop = asyncio.new_event_loop()
        return self._fn_loop

    def load_function(self, spec: dict[str, Any]) -> Any:
        module_name = str(spec.get("module"))
        qualname = str(spec.get("qualname"))
        source = spec.get("source")
        digest = hashlib.sha256(source.encode()).hexdigest()[:16] if source else ""
        key = (module_name, qualname, digest)
        fn = self.functions.get(key)
        if fn is not None:
            return fn
        if source:
            os.makedirs(self.modules_dir, exist_ok=True)
            path = os.path.join(self.modules_dir, f"{module_name.replace('.', '_')}_{digest}.py")
            with open(path, "w") as handle:
                handle.write(source)
            mod_spec = importlib.util.spec_from_file_location(module_name, path)
            if mod_spec is None or mod_spec.loader is None:
                raise ImportError(f"cannot load module {module_name!r} from its source")
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[module_name] = module
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
        target: Any = module
        for part in qualname.split("."):
            target = getattr(target, part)
        if not callable(target):
            raise TypeError(f"{module_name}.{qualname} is not callable")
        self.functions[key] = target
        return target

    def stop(self, code: int = 0) -> None:
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(code)

    async def main(self) -> int:
        self._stopped = self.loop.create_future()
        self.peak_resettable = reset_peak_rss()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        server = await asyncio.start_unix_server(self.accept, path=self.socket_path, limit=MAX_LINE_BYTES)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.stop)
        code = await self._stopped
        server.close()
        for runner in list(self.runners.values()):
            runner.kill()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        return code

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await Session(self, reader, writer).serve()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Agentainer Flow in-container agent")
    parser.add_argument("--socket", required=True, help="unix socket path to listen on")
    parser.add_argument("--modules", default="/tmp/flow-modules", help="where shipped function sources go")
    args = parser.parse_args(argv)
    agent = Agent(args.socket, args.modules)
    asyncio.set_event_loop(agent.loop)
    if sys.version_info < (3, 12) and hasattr(asyncio, "PidfdChildWatcher"):
        # 3.9-3.11 default to a thread per child (ThreadedChildWatcher): a pidfd is cheaper per task.
        try:
            watcher = asyncio.PidfdChildWatcher()
            watcher.attach_loop(agent.loop)
            asyncio.set_child_watcher(watcher)
        except OSError:
            pass
    try:
        code = agent.loop.run_until_complete(agent.main())
    finally:
        agent.executor.shutdown(wait=False, cancel_futures=True)
    # A timed-out function thread may still run: leave without waiting for it.
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
