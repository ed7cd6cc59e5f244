"""Live task logs: output lines of running tasks to their workflow's Redis log stream.

Lines come from the agent (``log`` messages, already split and batched in the container) or, for
``exec`` and ``cold`` runs, as raw output chunks that :class:`TaskLog` splits with the agent's own
:class:`~pool.agent.flow_agent_wire.LineSplitter`. Each task keeps its lines until :class:`LogShipper`
(one per pool service) appends the lines of every task in one pipeline of ``XADD ... MAXLEN ~ N``
commands, ``flush_s`` after the first line not sent yet.

When a task ends, the lines it still holds (usually all of a short task's) go back in
``TaskResult.logs`` (:meth:`TaskLog.take_final`) and the worker appends them in the same MULTI as the
task's completion: a finished workflow has every line, and the task's result waits for no extra
Redis round trip. Only when a flush carrying earlier lines of the task is still in flight does the
result wait for it (:meth:`TaskLog.finish`), so the order holds; a task that printed more than
``FINAL_MAX_LINES`` lines since the last flush has them appended here (awaited) instead of shipped.

Redis failures drop lines (with a warning): live logs never fail a task, and never hold its result
back longer than ``end_timeout_s``. The format of an entry is :class:`flowcore.logstream.LogLine`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from flowcore import limits
from flowcore.keyspace import Keyspace
from flowcore.logstream import LOG_STREAM_MAXLEN, LogLine, StreamName
from flowcore.pool_api import TaskLogLine, TaskRequest
from flowcore.secretrefs import Redactor
from pool.agent.flow_agent_wire import LineSplitter

log = logging.getLogger(__name__)

FLUSH_S = 0.05
MAX_BUFFERED = 5000  # lines waiting in all tasks; past it a flush starts at once
FINAL_MAX_LINES = 1000  # at most this many lines go back with a task's result
FINAL_MAX_BYTES = 256 * 1024


class LogShipper:
    def __init__(
        self,
        redis: Redis | None,
        keys: Keyspace,
        *,
        flush_s: float = FLUSH_S,
        maxlen: int = LOG_STREAM_MAXLEN,
        end_timeout_s: float = 2.0,
    ) -> None:
        self._redis = redis
        self.keys = keys
        self.flush_s = flush_s
        self.maxlen = maxlen
        self.end_timeout_s = end_timeout_s
        self._dirty: dict[TaskLog, None] = {}  # tasks holding lines, in the order they got them
        self._buffered = 0
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self.dropped = 0

    def task(self, request: TaskRequest) -> TaskLog:
        return TaskLog(self, request)

    @property
    def enabled(self) -> bool:
        return self._redis is not None

    def _mark(self, task_log: TaskLog) -> None:
        self._dirty[task_log] = None
        self._buffered += 1
        if self._buffered >= MAX_BUFFERED:
            self.start_flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_s, self.start_flush)

    def _unmark(self, task_log: TaskLog, lines: int) -> None:
        self._dirty.pop(task_log, None)
        self._buffered = max(self._buffered - lines, 0)

    def start_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task = asyncio.ensure_future(self.flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def flush(self) -> None:
        """Append the lines every task holds, in one pipeline; one flush at a time (keeps the order)."""
        async with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            batch: list[tuple[str, dict[str, str]]] = []
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            for task_log in list(self._dirty):
                batch.extend((task_log.key, entry.to_fields()) for entry in task_log.drain(done))
            self._dirty.clear()
            self._buffered = 0
            try:
                if batch and self._redis is not None:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for key, fields in batch:
                            pipe.xadd(key, fields, maxlen=self.maxlen, approximate=True)
                        await pipe.execute()
            except (RedisError, OSError) as exc:
                self.dropped += len(batch)
                log.warning("dropped %d log lines: redis failed: %s", len(batch), exc)
            finally:
                done.set_result(None)

    async def wait(self, flush: asyncio.Future[Any] | None) -> None:
        """Wait (at most ``end_timeout_s``) for a flush, or for a new one when ``flush`` is None."""
        try:
            async with asyncio.timeout(self.end_timeout_s):
                if flush is None:
                    await self.flush()
                else:
                    await asyncio.shield(flush)
        except TimeoutError:
            log.warning("log flush took over %.1f s; the task's result went on without it", self.end_timeout_s)

    async def close(self) -> None:
        await self.flush()
        if self._flushes:
            with contextlib.suppress(Exception):
                await asyncio.gather(*list(self._flushes), return_exceptions=True)


class TaskLog:
    """The log of one task: entries tagged with its workflow, step, index and attempt."""

    def __init__(self, shipper: LogShipper, request: TaskRequest) -> None:
        self._shipper = shipper
        self.key = shipper.keys.logs(request.workflow_id)
        self._step_id = request.step_id
        self._redactor = Redactor(request.redact)  # the task's secrets never reach the log stream
        self._index = request.index
        self._attempt = request.attempt
        self._splitters: dict[StreamName, LineSplitter] = {}
        self._pending: list[LogLine] = []
        self._pending_bytes = 0
        self._in_flight: asyncio.Future[Any] | None = None  # the flush carrying its latest lines
        self._bytes = 0
        self._stopped = False
        self._ended = False
        self.lines = 0

    def _add(self, stream: StreamName, line: str, ts: float) -> None:
        if self._stopped:
            return
        line = self._redactor.text(line)
        self._bytes += len(line) + 1
        cap = limits.current().max_log_bytes  # FLOW_LIMITS__MAX_LOG_MIB_PER_TASK
        if self._bytes > cap:
            self._stopped = True
            stream, line = "stderr", f"[flow: over {cap >> 20} MiB of output; the live log stops here]"
        self._pending.append(LogLine(self._step_id, self._index, self._attempt, stream, line, ts))
        self._pending_bytes += len(line) + 1
        self.lines += 1
        self._shipper._mark(self)

    def drain(self, flush: asyncio.Future[Any] | None) -> list[LogLine]:
        """The lines held so far, handed to ``flush``."""
        lines, self._pending, self._pending_bytes = self._pending, [], 0
        if lines:
            self._in_flight = flush
        return lines

    def agent_lines(self, lines: list[list[Any]]) -> None:
        """A batch from the agent: ``[[stream, line, ts], ...]`` (the agent has capped its size)."""
        if not self._shipper.enabled:
            return
        for item in lines:
            if not isinstance(item, list) or len(item) != 3:
                continue
            stream: StreamName = "stderr" if item[0] == "stderr" else "stdout"
            try:
                ts = float(item[2])
            except (TypeError, ValueError):
                ts = time.time()
            self._add(stream, str(item[1]), ts)

    def feed(self, stream: StreamName, data: bytes) -> None:
        """Raw output of an exec or cold run."""
        if not self._shipper.enabled or self._stopped:
            return
        splitter = self._splitters.get(stream)
        if splitter is None:
            splitter = self._splitters[stream] = LineSplitter()
        now = time.time()
        for line in splitter.feed(data):
            self._add(stream, line, now)

    def end(self) -> None:
        """The task's process has ended: its unterminated last lines."""
        if self._ended:
            return
        self._ended = True
        now = time.time()
        for stream, splitter in self._splitters.items():
            for line in splitter.close():
                self._add(stream, line, now)

    def take_final(self) -> list[TaskLogLine]:
        """The lines not appended yet, for the task's result (none when there are too many)."""
        self.end()
        if not self._pending or len(self._pending) > FINAL_MAX_LINES or self._pending_bytes > FINAL_MAX_BYTES:
            return []
        lines = [TaskLogLine(stream=e.stream, line=e.line, ts=e.ts) for e in self._pending]
        self._shipper._unmark(self, len(self._pending))
        self._pending, self._pending_bytes = [], 0
        return lines

    async def finish(self) -> None:
        """Before the result is answered: the lines not handed over are appended, and earlier ones
        still on their way have arrived."""
        self.end()
        if self._pending:
            await self._shipper.wait(None)
        elif self._in_flight is not None and not self._in_flight.done():
            await self._shipper.wait(self._in_flight)
