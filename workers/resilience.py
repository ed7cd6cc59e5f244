"""Riding out Redis outages in the worker process.

arq's worker ends its main loop (and with it the process) on the first Redis error of a poll:
a three-second outage used to stop every worker for good. :class:`ResilientWorker` keeps arq's
loop and its running jobs, and turns a failed poll into a wait with exponential backoff; the
process entrypoint (``workers/__main__.py``) rebuilds the whole worker, again with backoff, when
even its start-up cannot reach Redis.

It also shortens arq's in-progress marker from "longest function timeout + 10 s" (8 days for
``run_task``) to ``marker_ttl_s``: the worker running a task renews the marker together with the
task's lease (:mod:`workers.runner`), so a marker outlives its worker by seconds, and a job whose
worker died becomes visible again instead of being skipped by every poll for days.
"""

from __future__ import annotations

import asyncio
import logging
import random
from signal import Signals
from typing import Any

from arq.worker import Worker
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from flowcore.errors import ServiceUnavailable

log = logging.getLogger(__name__)

# What "Redis is unreachable" looks like from here: redis-py's own errors (BusyLoadingError, while a
# restarted Redis loads its AOF, is a ConnectionError) and the store's translation of them.
REDIS_DOWN: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, ServiceUnavailable, OSError)


class Backoff:
    """Exponential backoff with jitter: ``initial_s``, doubling up to ``max_s``; :meth:`reset` on success."""

    def __init__(self, initial_s: float = 0.1, max_s: float = 5.0) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._next_s = initial_s

    def next_delay_s(self) -> float:
        delay = self._next_s
        self._next_s = min(self._next_s * 2, self.max_s)
        return delay * random.uniform(0.8, 1.2)  # jitter, not security

    def reset(self) -> None:
        self._next_s = self.initial_s


class ResilientWorker(Worker):
    """arq's :class:`~arq.worker.Worker` whose poll loop survives Redis outages."""

    def __init__(self, *args: Any, marker_ttl_s: float, backoff_max_s: float = 5.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_progress_timeout_s = marker_ttl_s
        self.backoff = Backoff(max_s=backoff_max_s)
        self.stop_requested = asyncio.Event()  # the entrypoint must not rebuild a worker asked to stop
        self._down_since: float | None = None

    @property
    def stopping(self) -> bool:
        return self.stop_requested.is_set()

    def handle_sig(self, signum: Signals) -> None:
        self.stop_requested.set()
        super().handle_sig(signum)

    async def idle_wait(self) -> None:
        """Between two polls: nothing here (arq's poll delay); :class:`workers.wakeup.WakingWorker` blocks."""

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
            await self.idle_wait()
        except REDIS_DOWN as exc:
            await self._wait_for_redis(exc)
            return
        except Exception:  # a bug in one pass must not end the worker; the next pass runs anyway
            log.exception("worker poll failed")
            await asyncio.sleep(self.backoff.next_delay_s())
            return
        if self._down_since is not None:
            log.warning("redis is reachable again after %.1fs", self.loop.time() - self._down_since)
            self._down_since = None
        self.backoff.reset()

    async def _wait_for_redis(self, exc: Exception) -> None:
        delay_s = self.backoff.next_delay_s()
        if self._down_since is None:
            self._down_since = self.loop.time()
            log.warning("redis is unreachable (%s: %s); polling again with backoff", type(exc).__name__, exc)
        else:
            log.debug("redis still unreachable; next poll in %.2fs", delay_s)
        await asyncio.sleep(delay_s)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        # arq takes a job slot (counter and semaphore) before its Redis calls and gives it back only
        # on the paths it expects: a Redis error in between would leak the slot for good.
        for job_id in job_ids:
            try:
                await super().start_jobs([job_id])
            except REDIS_DOWN:
                self.job_counter -= 1
                self.sem.release()
                raise
