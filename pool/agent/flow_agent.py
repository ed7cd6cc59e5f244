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
    agent -> pool  {"t": "result", "id": TASK, "exit_code": 0, "signal": null, "timed_out": false,
                    "cancelled": false, "oom": false, "stdout": "...", "log_tail": "...",
                    "output": ..., "has_output": false, "output_error": null, "error": null,
                    "fatal": false, "run_ms": 1.2}

A command task runs as a child process in its own process group (killed as a whole on timeout,
cancel, and when it exits, so no background process outlives its task), with an environment built
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
import signal
import sys
import time
import traceback
from typing import Any

PROTOCOL_VERSION = 1
TAIL_BYTES = 4096
MAX_STDOUT_BYTES = 16 * 1024 * 1024
MAX_LINE_BYTES = 64 * 1024 * 1024
STATE_TIMEOUT_S = 30.0


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


class _TextSink(io.TextIOBase):
    """A text stream feeding a :class:`Tail` (print() and ctx.log inside function steps)."""

    def __init__(self, tail: Tail) -> None:
        self._tail = tail

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._tail.add(s.encode(errors="replace"))
        return len(s)


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
        self.proc: asyncio.subprocess.Process | None = None
        self.cancelled = False
        self.timed_out = False
        self.cancel_event = asyncio.Event()

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def cancel(self) -> None:
        self.cancelled = True
        self.kill()
        self.cancel_event.set()

    async def run(self) -> None:
        self.agent.busy += 1
        started = time.perf_counter()
        try:
            if self.message.get("kind") == "function":
                result = await self.run_function()
            else:
                result = await self.run_command()
        except Exception as exc:  # the agent must always answer
            result = {
                "exit_code": None,
                "error": f"agent failure: {exc!r}",
                "log_tail": traceback.format_exc(),
            }
        finally:
            self.agent.busy -= 1
            self.agent.runners.pop(self.task_id, None)
        result.update(
            {"t": "result", "id": self.task_id, "timed_out": self.timed_out, "cancelled": self.cancelled}
        )
        result["run_ms"] = round((time.perf_counter() - started) * 1000, 3)
        self.session.send(result)
        if result.get("fatal"):
            with contextlib.suppress(Exception):
                await self.session.writer.drain()
            self.agent.stop(code=70)

    def env(self) -> dict[str, str]:
        env = dict(self.agent.base_env)
        env.update({str(k): str(v) for k, v in (self.message.get("env") or {}).items()})
        return env

    async def run_command(self) -> dict[str, Any]:
        argv = [str(a) for a in self.message.get("argv") or []]
        cwd = self.message.get("cwd") or None
        input_path = self.message.get("input_path")
        timeout_s = self.message.get("timeout_s")
        stdout = bytearray()
        tail = Tail()
        truncated = False
        oom_before = oom_kill_count()
        stdin: Any = asyncio.subprocess.DEVNULL
        if input_path and os.path.exists(input_path):
            stdin = open(input_path, "rb")  # noqa: SIM115 - closed below
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=stdin,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=cwd,
                env=self.env(),
                start_new_session=True,
            )
        except OSError as exc:
            return {"exit_code": 127, "stdout": "", "log_tail": f"cannot start {argv[:1]}: {exc}\n"}
        finally:
            if stdin is not asyncio.subprocess.DEVNULL:
                stdin.close()
        proc = self.proc

        async def pump(stream: asyncio.StreamReader | None, is_stdout: bool) -> None:
            nonlocal truncated
            if stream is None:
                return
            while True:
                chunk = await stream.read(65536)
                if not chunk:
                    return
                tail.add(chunk)
                if is_stdout:
                    if len(stdout) + len(chunk) <= MAX_STDOUT_BYTES:
                        stdout.extend(chunk)
                    else:
                        truncated = True

        pumps = asyncio.gather(pump(proc.stdout, True), pump(proc.stderr, False))
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except asyncio.TimeoutError:
            self.timed_out = True
        # Kill the whole group: on timeout, and after a normal exit any background leftovers.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        try:
            await asyncio.wait_for(asyncio.shield(pumps), 2.0)
        except asyncio.TimeoutError:
            pumps.cancel()
        code = proc.returncode if proc.returncode is not None else -1
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
        }

    async def run_function(self) -> dict[str, Any]:
        tail = Tail()
        timeout_s = self.message.get("timeout_s")
        future = self.agent.loop.run_in_executor(self.agent.executor, self.call_function, tail)
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

    def call_function(self, tail: Tail) -> dict[str, Any]:
        spec = self.message.get("function") or {}
        sink = _TextSink(tail)
        handler = logging.StreamHandler(sink)
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
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                try:
                    fn = self.agent.load_function(spec)
                    if cwd:
                        os.chdir(cwd)
                    value = fn(ctx)
                    if asyncio.iscoroutine(value):
                        value = self.agent.fn_loop().run_until_complete(value)
                except BaseException as exc:
                    traceback.print_exc(file=sink)
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
