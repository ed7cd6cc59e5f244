"""Live task logs: output lines of running tasks to their workflow's Redis log stream.

Lines come from the agent (``log`` messages, already split and batched in the container) or, for
``exec`` and ``cold`` runs, as raw output chunks that :class:`TaskLog` splits with the agent's own
:class:`~pool.agent.flow_agent.LineSplitter`. :class:`LogShipper` (one per pool service) buffers
the entries of every task and appends them in one pipeline of ``XADD ... MAXLEN ~ N`` commands,
``flush_s`` after the first unsent entry, and when a task ends: the dispatcher awaits that last
flush before it answers the task's result (:meth:`TaskLog.finish`), so the lines of a finished task
are in Redis before its result is. A task that printed nothing costs nothing here; one that printed
costs one pipelined round trip to Redis.

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

from flowcore.keyspace import Keyspace
from flowcore.logstream import LOG_STREAM_MAXLEN, LogLine, StreamName
from flowcore.pool_api import TaskRequest
from pool.agent.flow_agent import MAX_LOG_BYTES, LineSplitter

log = logging.getLogger(__name__)

FLUSH_S = 0.05
MAX_BUFFERED = 5000  # entries; past it a flush starts at once


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
        self._buffer: list[tuple[str, dict[str, str]]] = []
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self.dropped = 0

    def task(self, request: TaskRequest) -> TaskLog:
        return TaskLog(self, request)

    @property
    def enabled(self) -> bool:
        return self._redis is not None

    def append(self, key: str, entry: LogLine) -> None:
        self._buffer.append((key, entry.to_fields()))
        if len(self._buffer) >= MAX_BUFFERED:
            self.start_flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_s, self.start_flush)

    def start_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task = asyncio.ensure_future(self.flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def flush(self) -> None:
        """Append everything buffered, in one pipeline; one flush at a time, so lines keep their order."""
        async with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            batch, self._buffer = self._buffer, []
            if not batch or self._redis is None:
                return
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key, fields in batch:
                        pipe.xadd(key, fields, maxlen=self.maxlen, approximate=True)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                self.dropped += len(batch)
                log.warning("dropped %d log lines: redis failed: %s", len(batch), exc)

    async def flush_for_task_end(self) -> None:
        """What a task's end awaits: its lines are in Redis (bounded by ``end_timeout_s``)."""
        try:
            async with asyncio.timeout(self.end_timeout_s):
                await self.flush()
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
        self._key = shipper.keys.logs(request.workflow_id)
        self._step_id = request.step_id
        self._index = request.index
        self._attempt = request.attempt
        self._splitters: dict[StreamName, LineSplitter] = {}
        self._bytes = 0
        self._stopped = False
        self._ended = False
        self.lines = 0

    def _add(self, stream: StreamName, line: str, ts: float) -> None:
        if self._stopped:
            return
        self._bytes += len(line) + 1
        if self._bytes > MAX_LOG_BYTES:
            self._stopped = True
            stream, line = "stderr", f"[flow: over {MAX_LOG_BYTES >> 20} MiB of output; the live log stops here]"
        entry = LogLine(self._step_id, self._index, self._attempt, stream, line, ts)
        self._shipper.append(self._key, entry)
        self.lines += 1

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

    async def finish(self) -> None:
        """Before the result is answered: the task's lines are in Redis."""
        self.end()
        if self.lines:
            await self._shipper.flush_for_task_end()
