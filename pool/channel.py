"""The pool's end of the agent channel: newline-delimited JSON over a unix socket.

The pool listens (:class:`AgentListener`) on a socket in a directory of its own that the container
sees read-only, and the agent connects to it: the pool never opens a path that a container could
have replaced, and the channel needs no container network. The first message must be the agent's
``hello`` with the token the pool gave that container; anything else is dropped, and once the agent
is in, the pool stops listening and removes the socket. The same frames could travel over TCP to a
pod (a Kubernetes runtime). Each message is written in one ``write`` (no Nagle on unix sockets, no 40 ms stalls). A
reader task routes replies: ``result`` to the waiting :meth:`AgentChannel.run`, ``log`` lines to
that run's log handler, ``pong`` to :meth:`AgentChannel.ping`, ``state`` requests to the state
handler, whose answer goes back as ``state_reply``. When the socket closes, every waiter fails at once with
:class:`~pool.errors.ChannelClosed`, so a task on a dead container never hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from typing import Any

from flowcore.secretrefs import Redactor
from pool.agent.flow_agent_wire import MAX_LINE_BYTES, decode_message, encode_message
from pool.errors import AgentStartFailed, ChannelClosed

log = logging.getLogger(__name__)

# (workflow_id, op, key, value) -> reply fields ({"ok": True, "found": ..., "value": ...})
StateHandler = Callable[[str, str, str, Any], Awaitable[dict[str, Any]]]
Liveness = Callable[[], Awaitable[bool]]
# [[stream, line, ts], ...] as the agent sends them; called on the event loop, must not block
LogHandler = Callable[[list[list[Any]]], None]


class AgentChannel:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        hello: dict[str, Any],
        state_handler: StateHandler | None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.hello = hello
        self._state_handler = state_handler
        self._results: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._workflows: dict[str, str] = {}
        self._redactors: dict[str, Redactor] = {}
        self._log_handlers: dict[str, LogHandler] = {}
        self._pings: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._seq = itertools.count(1)
        self._closed = asyncio.Event()
        self.close_reason = ""
        self.on_close: Callable[[], None] | None = None
        self._reader_task = asyncio.create_task(self._read_loop())
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _send(self, message: dict[str, Any]) -> None:
        if self.closed or self._writer.is_closing():
            raise ChannelClosed(f"agent channel closed: {self.close_reason or 'closed'}")
        self._writer.write(encode_message(message))

    async def ping(self, timeout_s: float) -> dict[str, Any]:
        n = next(self._seq)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pings[n] = future
        try:
            self._send({"t": "ping", "n": n})
            return await asyncio.wait_for(future, timeout_s)
        finally:
            self._pings.pop(n, None)

    async def run(
        self,
        message: dict[str, Any],
        workflow_id: str,
        on_log: LogHandler | None = None,
        redactor: Redactor | None = None,
    ) -> dict[str, Any]:
        """Send a ``run`` message and wait for its ``result``; its ``log`` lines go to ``on_log``; the
        values it writes to state are masked with ``redactor`` (the task's secrets)."""
        task_id = str(message["id"])
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._results[task_id] = future
        self._workflows[task_id] = workflow_id
        if redactor:
            self._redactors[task_id] = redactor
        if on_log is not None:
            self._log_handlers[task_id] = on_log
        try:
            self._send({**message, "t": "run"})
            return await future
        finally:
            self._results.pop(task_id, None)
            self._workflows.pop(task_id, None)
            self._redactors.pop(task_id, None)
            self._log_handlers.pop(task_id, None)

    def cancel(self, task_id: str) -> None:
        with contextlib.suppress(ChannelClosed):
            self._send({"t": "cancel", "id": task_id})

    async def close(self) -> None:
        self._mark_closed("closed by the pool")
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader_task
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    def _mark_closed(self, reason: str) -> None:
        if self.closed:
            return
        self.close_reason = reason
        self._closed.set()
        error = ChannelClosed(f"agent channel closed: {reason}")
        for future in [*self._results.values(), *self._pings.values()]:
            if not future.done():
                future.set_exception(error)
        if self.on_close is not None:
            self.on_close()

    async def _read_loop(self) -> None:
        reason = "the agent closed the connection"
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                try:
                    message = decode_message(line)
                except ValueError:
                    log.warning("agent sent an unreadable message: %.200r", line)
                    continue
                self._dispatch(message)
        except (ConnectionError, OSError) as exc:
            reason = f"connection error: {exc}"
        except asyncio.CancelledError:
            reason = "closed by the pool"
        finally:
            self._mark_closed(reason)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["t"]
        if kind == "result":
            task_id = str(message.get("id"))
            if isinstance(message.get("lines"), list):  # the task's last lines, before its result
                self._log({"t": "log", "id": task_id, "lines": message.pop("lines")})
            future = self._results.get(task_id)
            if future is not None and not future.done():
                future.set_result(message)
        elif kind == "log":
            self._log(message)
        elif kind == "pong":
            ping = self._pings.get(int(message.get("n") or 0))
            if ping is not None and not ping.done():
                ping.set_result(message)
        elif kind == "state":
            task = asyncio.create_task(self._answer_state(message))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        elif kind == "error":
            log.warning("agent reported: %s", message.get("error"))

    def _log(self, message: dict[str, Any]) -> None:
        handler = self._log_handlers.get(str(message.get("id")))
        lines = message.get("lines")
        if handler is not None and isinstance(lines, list):
            try:
                handler(lines)
            except Exception:  # a log line must never break the channel
                log.exception("log handler failed")

    async def _answer_state(self, message: dict[str, Any]) -> None:
        rid = message.get("rid")
        workflow_id = self._workflows.get(str(message.get("id")))
        if workflow_id is None:
            reply: dict[str, Any] = {"ok": False, "error": "no such running task on this container"}
        elif self._state_handler is None:
            reply = {"ok": False, "error": "state access is not available"}
        else:
            value = message.get("value")
            redactor = self._redactors.get(str(message.get("id")))
            if redactor is not None:
                value = redactor.value(value)
            try:
                reply = await self._state_handler(workflow_id, str(message.get("op")), str(message.get("key")), value)
            except Exception as exc:  # the step sees the error, the pool goes on
                reply = {"ok": False, "error": str(getattr(exc, "message", exc))}
        with contextlib.suppress(ChannelClosed):
            self._send({"t": "state_reply", "rid": rid, **reply})


def token_digest(token: str) -> str:
    """How an agent token is kept (a container label): its SHA-256, never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


class AgentListener:
    """A listening socket at ``path`` for one container's agent (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._arrivals: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self._server: asyncio.AbstractServer | None = None

    @classmethod
    async def open(cls, path: str) -> AgentListener:
        listener = cls(path)
        with contextlib.suppress(FileNotFoundError):
            # Our own socket of an earlier run (adoption); the directory is the pool's alone.
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        listener._server = await asyncio.start_unix_server(listener._arrived, path=path, limit=MAX_LINE_BYTES)
        os.chmod(path, 0o600)
        return listener

    async def _arrived(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._arrivals.put((reader, writer))

    async def accept(
        self,
        *,
        token_sha256: str,
        timeout_s: float,
        state_handler: StateHandler | None = None,
        alive: Liveness | None = None,
    ) -> AgentChannel:
        """Wait for the agent's ``hello`` with the token whose SHA-256 is ``token_sha256``; then stop
        listening.

        ``alive`` is polled now and then while waiting, so a container that died at start (an
        image without python3) fails fast instead of after the whole timeout.
        """
        deadline = time.monotonic() + timeout_s
        refused = 0
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    extra = f"; {refused} connection(s) without the container's token refused" if refused else ""
                    raise AgentStartFailed(f"the agent did not connect within {timeout_s:g} s{extra}")
                try:
                    reader, writer = await asyncio.wait_for(self._arrivals.get(), min(left, 0.25))
                except TimeoutError:
                    if alive is not None and not await alive():
                        raise AgentStartFailed(
                            "the container exited before its agent answered (no python3?)"
                        ) from None
                    continue
                try:
                    line = await asyncio.wait_for(reader.readline(), max(0.1, deadline - time.monotonic()))
                    hello = decode_message(line) if line else {}
                except (TimeoutError, ValueError, OSError):
                    hello = {}
                offered = hello.get("token")
                if (
                    hello.get("t") == "hello"
                    and isinstance(offered, str)
                    and hmac.compare_digest(token_digest(offered), token_sha256)
                ):
                    hello.pop("token", None)
                    return AgentChannel(reader, writer, hello, state_handler)
                refused += 1
                writer.close()
        finally:
            self.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        while not self._arrivals.empty():
            _, writer = self._arrivals.get_nowait()
            writer.close()
