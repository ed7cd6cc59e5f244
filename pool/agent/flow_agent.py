"""The in-container agent of Agentainer Flow: stdlib only, Python 3.9 or newer.

The pool bind-mounts this directory read-only at ``/flow/agent`` and a directory of its own, holding
one listening unix socket, read-only at ``/flow/ctl``; the agent is the container's main process
(PID 1, root in the container with only the capabilities it needs to switch to the task's uid and
clean up after it)::

    python3 /flow/agent/flow_agent.py --connect /flow/ctl/pool.sock

The agent connects to the pool (so the pool never opens a path a container could have changed) and
proves who it is with the token the pool put in its environment (``FLOW_AGENT_TOKEN``, removed from
the environment before anything else runs). The protocol is newline-delimited JSON, one message per
line, each written with a single ``write``::

    agent -> pool  {"t": "hello", "v": 2, "token": T, "pid": 1, "python": "3.11.2", "busy": 0}
    pool  -> agent {"t": "ping", "n": 7}                         agent -> {"t": "pong", "n": 7, "busy": 0}
    pool  -> agent {"t": "run", "id": TASK, "kind": "command", "argv": [...], "env": {...},
                    "input": JSON, "user": "65534:65534", "cwd": null, "timeout_s": 5.0,
                    "max_file_bytes": 16777216}
    pool  -> agent {"t": "run", "id": TASK, "kind": "function", "function": {"module", "qualname",
                    "source"}, "ctx": {...}, ...the same fields...}
    pool  -> agent {"t": "cancel", "id": TASK}
    agent -> pool  {"t": "state", "rid": 3, "id": TASK, "op": "get", "key": "k", "value": null}
    pool  -> agent {"t": "state_reply", "rid": 3, "ok": true, "found": true, "value": 41}
    agent -> pool  {"t": "log", "id": TASK, "lines": [["stdout", "a line", 1700000000.25], ...]}
    agent -> pool  {"t": "result", "id": TASK, "exit_code": 0, "signal": null, "timed_out": false,
                    "cancelled": false, "oom": false, "stdout": "...", "log_tail": "...",
                    "output": ..., "has_output": false, "output_error": null, "error": null,
                    "output_file": null, "state_file": null, "file_error": null, "killed": 0,
                    "run_ms": 1.2, "cpu_time_s": 0.01, "peak_memory_bytes": 9043968, "lines": [...]}

Every task gets a directory of its own under ``--task-root`` (a tmpfs; see
:mod:`flow_agent_sandbox`), runs as ``user`` with no capabilities, and when it ends, times out or is
cancelled every process of its uid is killed, its directory removed and what its uid left in
``/tmp``, ``/var/tmp`` and ``/dev/shm`` deleted; ``output.json`` and ``state.json`` are read by the
agent (no links, regular files, at most ``max_file_bytes``) and travel in the result. A command
runs as a child process (its CPU time and peak RSS from ``wait4``); a Python function runs in a
child forked from a zygote that imported its module once (:mod:`flow_agent_functions`).

When the connection to the pool breaks, the agent kills every running task and connects again (a
restarted pool service adopts the container), until it is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from typing import Any, Optional

try:  # a package on the host (tests, the pool's imports); sibling files in a container
    from . import flow_agent_sandbox as sandbox
    from .flow_agent_functions import Zygote
    from .flow_agent_wire import (
        MAX_LINE_BYTES,
        MAX_LOG_BYTES,
        MAX_OUTPUT_BYTES,
        PROTOCOL_VERSION,
        LogSender,
        Tail,
        child_usage,
        decode_message,
        encode_message,
        oom_kill_count,
        read_pipe,
        reset_peak_rss,
        watch_exit,
    )
except ImportError:  # pragma: no cover - the in-container layout
    import flow_agent_sandbox as sandbox  # type: ignore[no-redef,import-not-found,unused-ignore]
    from flow_agent_functions import Zygote  # type: ignore[no-redef,import-not-found,unused-ignore]
    from flow_agent_wire import (  # type: ignore[no-redef,import-not-found,unused-ignore]
        MAX_LINE_BYTES,
        MAX_LOG_BYTES,
        MAX_OUTPUT_BYTES,
        PROTOCOL_VERSION,
        LogSender,
        Tail,
        child_usage,
        decode_message,
        encode_message,
        oom_kill_count,
        read_pipe,
        reset_peak_rss,
        watch_exit,
    )

TOKEN_ENV = "FLOW_AGENT_TOKEN"
MAX_ZYGOTES = 4
STATE_TIMEOUT_S = 30.0
DONE_SLACK_BYTES = 64 * 1024  # a done message's own fields, besides its result and log lines

__all__ = ["decode_message", "encode_message", "main"]


class Session:
    """The connection to the pool."""

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

    async def state_request(self, task_id: str, op: Any, key: Any, value: Any) -> dict[str, Any]:
        self.next_rid += 1
        rid = self.next_rid
        future: asyncio.Future[dict[str, Any]] = self.agent.loop.create_future()
        self.pending[rid] = future
        self.send({"t": "state", "rid": rid, "id": task_id, "op": str(op), "key": str(key), "value": value})
        try:
            return await asyncio.wait_for(future, STATE_TIMEOUT_S)
        except asyncio.TimeoutError:
            return {"ok": False, "error": "the pool did not answer in time"}
        finally:
            self.pending.pop(rid, None)

    async def serve(self) -> None:
        self.send(
            {
                "t": "hello",
                "v": PROTOCOL_VERSION,
                "token": self.agent.token,
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
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            # The pool that asked is gone: nothing it started may keep running.
            for runner in list(self.agent.runners.values()):
                if runner.session is self:
                    runner.cancel()
            for future in self.pending.values():
                if not future.done():
                    future.set_result({"ok": False, "error": "pool connection closed"})
            self.writer.close()
            if self.tasks:
                await asyncio.wait(self.tasks, timeout=10)

    def handle(self, message: dict[str, Any]) -> None:
        kind = message["t"]
        if kind == "ping":
            self.send({"t": "pong", "n": message.get("n"), "busy": self.agent.busy})
        elif kind == "run":
            task_id = str(message.get("id"))
            if task_id in self.agent.runners:
                self.send({"t": "error", "error": f"task {task_id!r} is already running"})
                return
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
    """One task: a child process (command) or a child forked by the function's zygote."""

    def __init__(self, agent: Agent, session: Session, message: dict[str, Any]) -> None:
        self.agent = agent
        self.session = session
        self.message = message
        self.task_id = str(message.get("id"))
        self.pid: Optional[int] = None  # the task's process, until it is reaped
        self.cancelled = False
        self.timed_out = False
        self.cancel_event = asyncio.Event()
        self.killed: Optional[int] = None  # processes killed by the clean-up, once it has run
        self.zygote: Optional[Zygote] = None  # a function's, asked for its next child after the task
        # The pool's limits for this task (FLOW_LIMITS__*; an older pool sends none: the defaults).
        self.max_output_bytes = int(message.get("max_file_bytes") or MAX_OUTPUT_BYTES)  # stdout, files, result
        self.max_log_bytes = int(message.get("max_log_bytes") or MAX_LOG_BYTES)

    def kill(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if self.message.get("kind") == "function":
                    os.kill(self.pid, signal.SIGKILL)
                else:
                    os.killpg(self.pid, signal.SIGKILL)

    def cancel(self) -> None:
        self.cancelled = True
        self.kill()
        self.cancel_event.set()

    async def run(self) -> None:
        self.agent.busy += 1
        started = time.perf_counter()
        logs = LogSender(self.agent.loop, self.session.send, self.task_id, self.max_log_bytes)
        task_dir: Optional[sandbox.TaskDir] = None
        user: Optional[sandbox.TaskUser] = None
        try:
            user = sandbox.parse_user(self.message.get("user"))
            task_dir = self.prepare(user)
            if self.message.get("kind") == "function":
                result = await self.run_function(logs, task_dir, user)
            else:
                result = await self.run_command(logs, task_dir, user)
        except Exception as exc:  # the agent must always answer
            result = {"exit_code": None, "error": f"agent failure: {exc!r}", "log_tail": traceback.format_exc()}
        finally:
            self.agent.busy -= 1
        # Whatever the task started goes now, before its files are read and before the next task.
        if self.killed is None:  # a command cleans up as it ends (its pipes need it); the rest here
            self.killed = self.agent.clean_up(user, self.pid)
        result["killed"] = self.killed
        if task_dir is not None:
            limit = self.max_output_bytes
            output = sandbox.read_task_file(task_dir.output, limit)
            state = sandbox.read_task_file(task_dir.state, limit)
            result["output_file"], result["state_file"] = output.text, state.text
            result["file_error"] = output.error or state.error
        # The pool keeps this container for inspection after such an outcome (cleanup policy keep,
        # ADR 014): the task's files stay, here and in the shared directories; no other task comes.
        keep = self.message.get("keep_files")
        failed = result.get("exit_code") != 0 or bool(result.get("error")) or self.timed_out or self.cancelled
        kept = isinstance(keep, dict) and keep.get("failure" if failed else "success") is True
        if self.agent.scrub_shared and not kept:
            sandbox.scrub(user)
        self.agent.runners.pop(self.task_id, None)
        lines = logs.close()
        if lines:
            result["lines"] = lines  # the last lines travel with the result
        result.update(
            {"t": "result", "id": self.task_id, "timed_out": self.timed_out, "cancelled": self.cancelled}
        )
        result["run_ms"] = round((time.perf_counter() - started) * 1000, 3)
        self.session.send(result)
        # Off the task's time, before the next message is read: its files go, the next directory
        # is made (unless kept, see above).
        if not kept:
            self.agent.dirs.make_ahead(task_dir, user, idle=not self.agent.runners)
        if self.zygote is not None:
            self.zygote.replenish()
        if self.agent.peak_resettable:
            self.agent.loop.call_soon(reset_peak_rss)

    def prepare(self, user: Optional[sandbox.TaskUser]) -> sandbox.TaskDir:
        # A function's input travels once, in its ctx; its input.json holds the same document.
        value = self.message["input"] if "input" in self.message else (self.message.get("ctx") or {}).get("input")
        payload = json.dumps(value, separators=(",", ":")).encode()
        task_dir = self.agent.dirs.take(user)
        sandbox.write_input(task_dir, payload)
        return task_dir

    def env(self, task_dir: sandbox.TaskDir) -> dict[str, str]:
        env = dict(self.agent.base_env)
        env.update({str(k): str(v) for k, v in (self.message.get("env") or {}).items()})
        env.update(
            {
                "FLOW_INPUT_PATH": task_dir.input,
                "FLOW_OUTPUT_PATH": task_dir.output,
                "FLOW_STATE_PATH": task_dir.state,
                "TMPDIR": task_dir.tmp,
                "HOME": task_dir.work,
            }
        )
        return env

    async def run_command(
        self, logs: LogSender, task_dir: sandbox.TaskDir, user: Optional[sandbox.TaskUser]
    ) -> dict[str, Any]:
        argv = [str(a) for a in self.message.get("argv") or []]
        cwd = self.message.get("cwd") or task_dir.work
        timeout_s = self.message.get("timeout_s")
        loop = self.agent.loop
        stdout = bytearray()
        tail = Tail()
        truncated = False
        oom_before = oom_kill_count()
        kwargs: dict[str, Any] = {}
        if user is not None:
            kwargs.update(user=user.uid, group=user.gid, extra_groups=[], umask=0o077)
        if self.cancelled:
            return {"exit_code": None}
        try:
            with open(task_dir.input, "rb") as stdin:
                # Popen, not asyncio's subprocess: the agent reaps the child itself (wait4: its rusage).
                proc = subprocess.Popen(
                    argv,
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=cwd,
                    env=self.env(task_dir),
                    start_new_session=True,
                    bufsize=0,
                    **kwargs,
                )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            return {"exit_code": 127, "stdout": "", "log_tail": f"cannot start {argv[:1]}: {exc}\n"}
        self.pid = proc.pid
        sandbox.first_to_go_on_oom(proc.pid)
        exited = watch_exit(loop, proc.pid)
        assert proc.stdout is not None and proc.stderr is not None

        def on_stdout(chunk: bytes) -> None:
            nonlocal truncated
            tail.add(chunk)
            logs.feed("stdout", chunk)
            if len(stdout) + len(chunk) <= self.max_output_bytes:
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
            # The whole group now (the rest of the uid after the task, in clean_up).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            status, usage = await exited
            proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it again
            # Pipes held open by background processes close when clean_up kills them.
            await asyncio.wait(eofs, timeout=0.2)
        finally:
            self.killed = self.agent.clean_up(user, proc.pid)
            await asyncio.wait(eofs, timeout=2.0)
            for pipe, _ in pipes:
                loop.remove_reader(pipe.fileno())
                pipe.close()
            self.pid = None
        code = proc.returncode
        sig = -code if code < 0 else None
        oom = (
            sig == signal.SIGKILL and not self.timed_out and not self.cancelled and oom_kill_count() > oom_before
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

    async def run_function(
        self, logs: LogSender, task_dir: sandbox.TaskDir, user: Optional[sandbox.TaskUser]
    ) -> dict[str, Any]:
        loop = self.agent.loop
        spec = self.message.get("function") or {}
        try:
            zygote = await self.agent.zygote_for(spec, user)
        except Exception as exc:  # the module did not import: the step's error
            return {"exit_code": 1, "error": str(exc) if isinstance(exc, ImportError) else repr(exc)}
        self.zygote = zygote
        try:
            self.pid, ours = await zygote.child(loop)
        except Exception as exc:
            zygote.kill()
            return {"exit_code": None, "error": f"agent failure: cannot start the function: {exc!r}"}
        try:
            reader, writer = await asyncio.open_unix_connection(sock=ours, limit=MAX_LINE_BYTES)
        except Exception as exc:
            ours.close()
            return {"exit_code": None, "error": f"agent failure: cannot start the function: {exc!r}"}
        writer.write(
            encode_message(
                {
                    "t": "task",
                    "qualname": str(spec.get("qualname")),
                    "ctx": self.message.get("ctx") or {},
                    "env": self.env(task_dir),
                    "cwd": self.message.get("cwd") or task_dir.work,
                    "max_output_bytes": self.max_output_bytes,
                    "max_log_bytes": self.max_log_bytes,
                }
            )
        )
        done: asyncio.Future[dict[str, Any]] = loop.create_future()
        pump = asyncio.ensure_future(self._child_messages(reader, writer, logs, done))
        cancel_wait = asyncio.ensure_future(self.cancel_event.wait())
        waiters: set[asyncio.Future[Any]] = {done, cancel_wait, pump}
        try:
            finished, _ = await asyncio.wait(
                waiters, timeout=self.message.get("timeout_s"), return_when=asyncio.FIRST_COMPLETED
            )
            if not finished and not self.cancelled:
                self.timed_out = True
        finally:
            cancel_wait.cancel()
            self.kill()
            pump.cancel()
            writer.close()
            self.pid = None
        if done.done() and not self.timed_out and not self.cancelled:
            result = dict(done.result())
            for line in result.pop("lines", None) or []:
                if isinstance(line, list) and len(line) == 3:
                    logs.feed(str(line[0]) if line[0] in ("stdout", "stderr") else "stdout", f"{line[1]}\n".encode())
            result.pop("t", None)
            return result
        if done.done() or self.timed_out or self.cancelled:
            return {"exit_code": None, "log_tail": ""}
        return {"exit_code": None, "error": "the function's process died without an answer"}

    async def _child_messages(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        logs: LogSender,
        done: asyncio.Future[dict[str, Any]],
    ) -> None:
        """Messages of the function child, attributed to this task whatever they claim."""
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                message = decode_message(line)
                kind = message.get("t")
                if kind == "log" and isinstance(message.get("lines"), list):
                    for entry in message["lines"]:
                        if isinstance(entry, list) and len(entry) == 3:
                            stream = "stderr" if entry[0] == "stderr" else "stdout"
                            logs.feed(stream, f"{entry[1]}\n".encode())
                elif kind == "state":
                    reply = await self.session.state_request(
                        self.task_id, message.get("op"), message.get("key"), message.get("value")
                    )
                    reply = {k: v for k, v in reply.items() if k in ("ok", "found", "value", "error")}
                    writer.write(encode_message({"t": "state_reply", "rid": message.get("rid"), **reply}))
                elif kind == "done":
                    # The child checks its own result's size, but it runs the step's code: the agent
                    # bounds what it relays (the result, and the last log lines that ride along).
                    limit = self.max_output_bytes + self.max_log_bytes
                    if len(line) > limit + DONE_SLACK_BYTES:
                        message = {
                            "exit_code": 0,
                            "output_error": f"the function's answer is {len(line)} bytes, larger than the limit of "
                            f"{limit} bytes (its result and its last log lines)",
                        }
                    if not done.done():
                        done.set_result(message)
                    return
        except (ConnectionError, ValueError, OSError):
            pass  # EOF or garbage without an answer: the pump ends, which ends the wait


class Agent:
    def __init__(self, connect_path: str, task_root: str, token: str) -> None:
        self.connect_path = connect_path
        self.task_root = task_root
        self.token = token
        self.base_env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_AGENT_")}
        self.runners: dict[str, Runner] = {}
        self.busy = 0
        self.dirs = sandbox.TaskDirs(task_root)
        self.zygotes: dict[tuple[str, str, Any], Zygote] = {}
        self.peak_resettable = False  # whether /proc/self/clear_refs can reset the RSS high-water mark
        # Only a container's agent (PID 1) owns /tmp and friends; an agent run by hand does not.
        self.scrub_shared = os.getpid() == 1
        self._stopped: Optional[asyncio.Future[int]] = None
        self.loop = asyncio.new_event_loop()

    async def zygote_for(self, spec: dict[str, Any], user: Optional[sandbox.TaskUser]) -> Zygote:
        source = spec.get("source")
        digest = hashlib.sha256(source.encode()).hexdigest()[:16] if isinstance(source, str) else ""
        key = (str(spec.get("module")), digest, user)  # one zygote per module: its steps share it
        zygote = self.zygotes.get(key)
        if zygote is not None and zygote.alive:
            return zygote
        if zygote is not None:
            zygote.kill()
        while len(self.zygotes) >= MAX_ZYGOTES:
            oldest = min(self.zygotes, key=lambda k: self.zygotes[k].used_s)
            self.zygotes.pop(oldest).kill()
        zygote = await self.loop.run_in_executor(None, Zygote.start, spec, user, self.base_env)
        zygote.watch(self.loop)
        self.zygotes[key] = zygote
        return zygote

    def clean_up(self, user: Optional[sandbox.TaskUser], group: Optional[int]) -> int:
        spare = [z.proc.pid for z in self.zygotes.values() if z.alive]
        killed = sandbox.kill_task_processes(user, spare, group)
        sandbox.reap_orphans([*spare, *(r.pid for r in self.runners.values() if r.pid)])
        return killed

    def stop(self, code: int = 0) -> None:
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(code)

    async def connect(self) -> Optional[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        delay = 0.005
        while self._stopped is not None and not self._stopped.done():
            try:
                return await asyncio.open_unix_connection(self.connect_path, limit=MAX_LINE_BYTES)
            except OSError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        return None

    async def serve(self) -> None:
        while True:
            pair = await self.connect()
            if pair is None:
                return
            await Session(self, *pair).serve()

    async def main(self) -> int:
        self._stopped = self.loop.create_future()
        self.peak_resettable = reset_peak_rss()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.stop)
        serving = asyncio.ensure_future(self.serve())
        code = await self._stopped
        serving.cancel()
        for runner in list(self.runners.values()):
            runner.kill()
        for zygote in self.zygotes.values():
            zygote.kill()
        return code


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Agentainer Flow in-container agent")
    parser.add_argument("--connect", help="the pool's unix socket to connect to")
    parser.add_argument("--task-root", default="/flow/task", help="where task directories are made")
    parser.add_argument("--zygote", type=int, metavar="FD", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.zygote is not None:
        try:
            from . import flow_agent_functions as functions
        except ImportError:  # pragma: no cover - the in-container layout
            import flow_agent_functions as functions  # type: ignore[no-redef,import-not-found,unused-ignore]
        os._exit(functions.zygote_main(args.zygote))
    if not args.connect:
        parser.error("--connect is required")
    token = os.environ.pop(TOKEN_ENV, "")
    os.umask(0o022)
    agent = Agent(args.connect, args.task_root, token)
    asyncio.set_event_loop(agent.loop)
    code = agent.loop.run_until_complete(agent.main())
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
