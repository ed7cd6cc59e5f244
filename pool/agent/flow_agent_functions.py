"""Python-function steps, outside the agent: a zygote per function, a forked child per task.

Stdlib only, Python 3.9 or newer: it runs inside step containers.

The agent starts a zygote (``flow_agent.py --zygote``) as the task's uid, feeds it the function's
module source on stdin, and the zygote imports it once. For each task the agent sends the zygote a
``fork`` datagram carrying one end of a fresh socket pair; the zygote forks, answers the child's pid,
and the child speaks newline-delimited JSON with the agent over that socket::

    agent -> child {"t": "task", "ctx": {...}, "env": {...}, "cwd": DIR}
    child -> agent {"t": "log", "lines": [[stream, line, ts], ...]}
    child -> agent {"t": "state", "rid": 1, "op": "get", "key": "k", "value": null}
    agent -> child {"t": "state_reply", "rid": 1, "ok": true, "found": true, "value": 41}
    child -> agent {"t": "done", "exit_code": 0, "output": ..., "has_output": true, "error": null,
                    "output_error": null, "cpu_time_s": 0.01, "peak_memory_bytes": ..., "lines": [...]}

The child never sees the pool's connection: whatever it sends, the agent attributes to its own task.
The zygote and its children are not dumpable (no ptrace, no ``/proc/PID/mem``), so a task cannot
patch the zygote that will fork the next one; the agent kills the child (and everything of its uid
but the zygotes) when the task ends, times out or is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import importlib.util
import json
import linecache
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from typing import Any, Optional

try:  # a package on the host (tests, the pool's imports); a sibling file in a container
    from .flow_agent_sandbox import TaskUser, first_to_go_on_oom
    from .flow_agent_wire import (
        LOG_FLUSH_S,
        MAX_LOG_BYTES,
        MAX_OUTPUT_BYTES,
        LineSplitter,
        Tail,
        _TextSink,
        decode_message,
        encode_message,
    )
except ImportError:  # pragma: no cover - the in-container layout
    from flow_agent_sandbox import (  # type: ignore[no-redef,import-not-found,unused-ignore]
        TaskUser,
        first_to_go_on_oom,
    )
    from flow_agent_wire import (  # type: ignore[no-redef,import-not-found,unused-ignore]
        LOG_FLUSH_S,
        MAX_LOG_BYTES,
        MAX_OUTPUT_BYTES,
        LineSplitter,
        Tail,
        _TextSink,
        decode_message,
        encode_message,
    )

STATE_TIMEOUT_S = 30.0
PR_SET_DUMPABLE = 4
ZYGOTE_START_TIMEOUT_S = 60.0
AGENT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flow_agent.py")


class Zygote:
    """A process of the task's uid that imported one function's module and forks a child per task."""

    def __init__(self, proc: subprocess.Popen[bytes], control: socket.socket) -> None:
        self.proc = proc
        self.control = control
        self.used_s = time.monotonic()
        # The zygote forks a child ahead and hands it over unasked: the agent holds it until a task.
        self._spare: Optional[tuple[int, socket.socket]] = None
        self._waiter: Optional[asyncio.Future[tuple[int, socket.socket]]] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._asked = False  # the first child comes unasked; then one per request

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self._unwatch()
        if self._spare is not None:
            self._spare[1].close()
            self._spare = None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(2)
        self.control.close()

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Receive the children the zygote hands over, as they come (call once, on the loop)."""
        self._loop = loop
        self.control.setblocking(False)
        loop.add_reader(self.control.fileno(), self._readable)

    def _unwatch(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.control.fileno())
            self._loop = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(RuntimeError("the function's process is gone"))

    def _readable(self) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(self.control, 4096, 1)
        except BlockingIOError:
            return
        except OSError:
            data, fds = b"", []
        if not data:  # the zygote died
            for fd in fds:
                os.close(fd)
            self._unwatch()
            return
        self._asked = False
        child = _handed_over(data, fds)
        if child is None:
            return
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(child)
        elif self._spare is None:
            self._spare = child
        else:  # never asked for: not ours to keep
            child[1].close()

    @classmethod
    def start(cls, spec: dict[str, Any], user: Optional[TaskUser], base_env: dict[str, str]) -> Zygote:
        """Blocking (run it in a thread): start, feed the module source, wait for ``loaded``."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        kwargs: dict[str, Any] = {}
        if user is not None:
            kwargs.update(user=user.uid, group=user.gid, extra_groups=[])
        try:
            proc = subprocess.Popen(
                [sys.executable, "-u", AGENT_FILE, "--zygote", str(theirs.fileno())],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()],
                env=base_env,
                cwd="/",
                start_new_session=True,
                **kwargs,
            )
        finally:
            theirs.close()
        first_to_go_on_oom(proc.pid)  # its children (the tasks) inherit the score
        zygote = cls(proc, ours)
        try:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(spec).encode())
            proc.stdin.close()
            ours.settimeout(ZYGOTE_START_TIMEOUT_S)
            reply = decode_message(ours.recv(65536) or b"{}")
        except (OSError, ValueError) as exc:
            zygote.kill()
            raise RuntimeError(f"the function's process did not start: {exc}") from None
        if not reply.get("ok"):
            zygote.kill()
            raise ImportError(str(reply.get("error") or "the function's module did not load"))
        return zygote

    async def child(self, loop: asyncio.AbstractEventLoop) -> tuple[int, socket.socket]:
        """A child of the zygote for one task (forked ahead of time): its pid and our end of its socket."""
        self.used_s = time.monotonic()
        if self._loop is None:
            raise RuntimeError("the function's process is gone")
        if self._spare is not None:
            child, self._spare = self._spare, None
            self.replenish()  # the next one forks while this one works
            return child
        self._waiter = loop.create_future()
        self.replenish()
        try:
            return await asyncio.wait_for(self._waiter, 10.0)
        finally:
            self._waiter = None

    def replenish(self) -> None:
        """Ask the zygote for the next child, unless one is held or asked for."""
        if self._loop is None or self._spare is not None or self._asked:
            return
        self._asked = True
        with contextlib.suppress(OSError):
            self.control.send(b'{"t":"fork"}')  # a few bytes into an idle socket: never blocks


def _handed_over(data: bytes, fds: list[int]) -> Optional[tuple[int, socket.socket]]:
    """A ``forked`` message of the zygote: the child's pid and our end of its socket."""
    try:
        pid = decode_message(data).get("pid")
    except ValueError:
        pid = None
    if not fds:
        return None
    for extra in fds[1:]:
        os.close(extra)
    if not isinstance(pid, int) or pid <= 0:
        os.close(fds[0])
        return None
    return pid, socket.socket(fileno=fds[0])


def load_module(spec: dict[str, Any]) -> Any:
    """Import ``spec["module"]``, from its shipped ``source`` when there is one."""
    module_name = str(spec.get("module"))
    source = spec.get("source")
    if not source:
        return importlib.import_module(module_name)
    filename = f"<flow step module {module_name}>"
    code = compile(source, filename, "exec")
    # Tracebacks show the lines of the shipped source.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    mod_spec = importlib.util.spec_from_loader(module_name, loader=None)
    assert mod_spec is not None
    module = importlib.util.module_from_spec(mod_spec)
    module.__file__ = filename
    sys.modules[module_name] = module
    exec(code, module.__dict__)  # the step's own code, in its own process
    return module


def find_function(module: Any, qualname: str) -> Any:
    """The callable at ``qualname`` in ``module``."""
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{module.__name__}.{qualname} is not callable")
    return target


def load_function(spec: dict[str, Any]) -> Any:
    """Import ``spec["module"]`` and return the callable at ``spec["qualname"]``."""
    return find_function(load_module(spec), str(spec.get("qualname")))


def not_dumpable() -> None:
    """prctl(PR_SET_DUMPABLE, 0): no process of the same uid may ptrace us or read our memory."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


class StepState:
    """``ctx.state`` in a function child: synchronous requests to the agent over the task socket."""

    def __init__(self, channel: ChildChannel) -> None:
        self._channel = channel

    def _call(self, op: str, key: str, value: Any = None) -> dict[str, Any]:
        reply = self._channel.request({"t": "state", "op": op, "key": key, "value": value})
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
    """The minimal ``ctx`` a Python-function step receives (the SDK wraps it)."""

    def __init__(self, data: dict[str, Any], env: dict[str, str], state: Any, log: logging.Logger) -> None:
        self.workflow_id: str = data.get("workflow_id", "")
        self.step_id: str = data.get("step_id", "")
        self.task_id: str = data.get("task_id", "")
        self.index: int = int(data.get("index") or 0)
        self.attempt: int = int(data.get("attempt", 1))
        self.input: Any = data.get("input")
        self.traceparent: str | None = data.get("traceparent")
        inp = self.input if isinstance(self.input, dict) else {}
        self.item: Any = inp.get("item")
        self.deps: Any = inp.get("deps")
        self.env = env
        self.state = state
        self.log = log


class ChildChannel:
    """The child's end of its task socket: sends under a lock, one request at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._reader = sock.makefile("rb")
        self._send_lock = threading.Lock()
        self._request_lock = threading.Lock()
        self._rid = 0

    def send(self, message: dict[str, Any]) -> None:
        data = encode_message(message)
        with self._send_lock:
            self._sock.sendall(data)

    def receive(self) -> dict[str, Any]:
        line = self._reader.readline()
        if not line:
            raise ConnectionError("the agent closed the task socket")
        return decode_message(line)

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        with self._request_lock:
            self._rid += 1
            self.send({**message, "rid": self._rid})
            self._sock.settimeout(STATE_TIMEOUT_S)
            try:
                while True:
                    reply = self.receive()
                    if reply.get("rid") == self._rid:
                        return reply
            finally:
                self._sock.settimeout(None)


class ChildLogs:
    """Output lines of a function child, sent by a flusher thread every ``LOG_FLUSH_S``."""

    def __init__(self, channel: ChildChannel) -> None:
        self._channel = channel
        self._lock = threading.Lock()
        self._buffer: list[list[Any]] = []
        self._sent_bytes = 0
        self.max_bytes = MAX_LOG_BYTES  # the task's (FLOW_LIMITS__MAX_LOG_MIB_PER_TASK), set when it arrives
        self._stopped = False
        self._closed = threading.Event()
        self._splitters = {"stdout": LineSplitter(), "stderr": LineSplitter()}
        self._thread: threading.Thread | None = None  # started by the first line: quiet steps pay nothing

    def feed(self, stream: str, data: bytes) -> None:
        with self._lock:
            lines = self._splitters[stream].feed(data)
            self._add(stream, lines)
            if lines and self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(target=self._flush_loop, daemon=True)
                self._thread.start()

    def _add(self, stream: str, lines: list[str]) -> None:
        now = round(time.time(), 6)
        for line in lines:
            if self._stopped:
                return
            self._sent_bytes += len(line) + 1
            if self._sent_bytes > self.max_bytes:
                self._stopped = True
                note = f"[flow: over {self.max_bytes >> 20} MiB of output; the live log stops here]"
                self._buffer.append(["stderr", note, now])
                return
            self._buffer.append([stream, line, now])

    def _flush_loop(self) -> None:
        while not self._closed.wait(LOG_FLUSH_S):
            with self._lock:
                batch, self._buffer = self._buffer, []
            if batch:
                with contextlib.suppress(OSError):
                    self._channel.send({"t": "log", "lines": batch})

    def close(self) -> list[list[Any]]:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(1.0)
        with self._lock:
            for stream, splitter in self._splitters.items():
                self._add(stream, splitter.close())
            batch, self._buffer = self._buffer, []
        return batch


def run_child(module: Any, sock: socket.socket) -> None:
    """The forked child: one task, then ``os._exit``.

    Everything that does not depend on the task (its channel, log sinks, the step logger) is made
    while the child waits, forked ahead: the task pays only for its own work. The child never
    collects garbage (it lives for one task; the zygote froze what it inherited), so it does not
    touch, and copy, the zygote's pages for nothing.
    """
    gc.disable()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    channel = ChildChannel(sock)
    code = 0
    try:
        prepared = Prepared(channel)
        task = channel.receive()
        result = call(module, task, channel, prepared)
        channel.send(result)
    except BaseException:  # the agent sees EOF without a result: the task failed
        code = 70
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
    os._exit(code)


class Prepared:
    """What a child sets up before its task arrives."""

    def __init__(self, channel: ChildChannel) -> None:
        self.tail = Tail()
        self.logs = ChildLogs(channel)
        self.sink = _TextSink(self.tail, self.logs, "stdout")  # type: ignore[arg-type]
        self.err_sink = _TextSink(self.tail, self.logs, "stderr")  # type: ignore[arg-type]
        handler = logging.StreamHandler(self.err_sink)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.logger = logging.getLogger("flow.step")
        self.logger.handlers[:] = [handler]
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False
        self.state = StepState(channel)


def call(module: Any, task: dict[str, Any], channel: ChildChannel, prepared: Optional[Prepared] = None) -> dict[str, Any]:
    """Run the task's function (``task["qualname"]`` of the zygote's module) with its ``ctx``."""
    ready = prepared if prepared is not None else Prepared(channel)
    tail, logs, sink, err_sink = ready.tail, ready.logs, ready.sink, ready.err_sink
    logs.max_bytes = int(task.get("max_log_bytes") or MAX_LOG_BYTES)
    env = {str(k): str(v) for k, v in (task.get("env") or {}).items()}
    os.environ.clear()
    os.environ.update(env)
    ctx = StepContext(task.get("ctx") or {}, env, ready.state, ready.logger)
    result: dict[str, Any]
    sys.stdout, sys.stderr = sink, err_sink
    try:
        cwd = task.get("cwd")
        if cwd:
            os.chdir(cwd)
        value = find_function(module, str(task.get("qualname")))(ctx)
        if asyncio.iscoroutine(value):
            value = asyncio.new_event_loop().run_until_complete(value)
        limit = int(task.get("max_output_bytes") or MAX_OUTPUT_BYTES)
        try:
            size = len(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError) as exc:
            result = {"exit_code": 0, "output_error": f"function returned a value that is not JSON: {exc}"}
        else:
            if size > limit:
                result = {
                    "exit_code": 0,
                    "output_error": f"function returned {size} bytes of JSON, larger than the limit of {limit} "
                    "bytes (keep large results elsewhere and return a reference)",
                }
            else:
                result = {"exit_code": 0, "output": value, "has_output": True}
    except BaseException as exc:
        traceback.print_exc(file=err_sink)
        result = {"exit_code": 1, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    usage = resource.getrusage(resource.RUSAGE_SELF)
    lines = logs.close()
    result.update(
        {
            "t": "done",
            "log_tail": tail.text(),
            "cpu_time_s": round(usage.ru_utime + usage.ru_stime, 6),
            "peak_memory_bytes": int(usage.ru_maxrss) * 1024 or None,
            "lines": lines,
        }
    )
    return result


def zygote_main(control_fd: int) -> int:
    """``flow_agent.py --zygote``: import the function named on stdin, then fork a child per task."""
    not_dumpable()
    control = socket.socket(fileno=control_fd)
    spec = json.loads(sys.stdin.buffer.read() or b"{}")
    try:
        module = load_module(spec)
        find_function(module, str(spec.get("qualname")))  # the first task's function: an error now is the load's
    except BaseException as exc:
        control.send(encode_message({"t": "loaded", "ok": False, "error": f"{type(exc).__name__}: {exc}",
                                     "trace": traceback.format_exc()[-4000:]}))
        return 1
    # The agent's directory is not the step's business once its module is loaded.
    sys.path[:] = [p for p in sys.path if not p.startswith("/flow/agent")]
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    gc.collect()
    gc.freeze()  # what the module made stays put: children do not scan (and copy) it
    control.send(encode_message({"t": "loaded", "ok": True}))
    while True:
        # Fork a child ahead and hand it over; the next one when the agent has taken it.
        pid, agent_end = fork_spare(module, control)
        try:
            socket.send_fds(control, [encode_message({"t": "forked", "pid": pid})], [agent_end.fileno()])
        except OSError:
            return 0
        finally:
            agent_end.close()
        try:
            data = control.recv(4096)
        except OSError:
            return 0
        if not data:
            return 0


def fork_spare(module: Any, control: socket.socket) -> tuple[int, socket.socket]:
    """A child forked ahead of its task: it waits on its end of a fresh socket pair for the task."""
    agent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        control.close()
        agent_end.close()
        run_child(module, child_end)
    child_end.close()
    return pid, agent_end
