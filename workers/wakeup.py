"""Waking idle workers without polling (ADR 010).

arq finds work by polling its queue; at the 5 ms poll delay a hop needs, an idle worker made 165
polls a second (5 % of a core here). :class:`WakingWorker` keeps arq's queue and job handling and
replaces the idle wait: every engine commit that enqueues jobs also pushes wake-up tokens onto
``{p}:wake`` (:func:`flowcore.commits.plan_commands`), and an idle worker blocks on that list
(``BLPOP``) until a token arrives, the next deferred job (a retry's backoff, a workflow deadline)
falls due, or ``idle_wait_s`` passes — whichever comes first. A worker with every job slot taken
does not take tokens (another worker should): it waits for one of its own jobs to finish.

Nothing depends on a token for correctness: a lost or surplus token costs at most one idle wait or
one empty poll, because the queue itself stays the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from workers.resilience import ResilientWorker

DUE_NOW_S = 0.002  # a job due this soon is polled for at once


class WakingWorker(ResilientWorker):
    """arq's worker (made resilient) that sleeps on a wake-up list instead of polling while idle."""

    def __init__(self, *args: Any, wake_key: str, idle_wait_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wake_key = wake_key
        self.idle_wait_s = idle_wait_s
        self.slot_freed = asyncio.Event()
        self.wakeups = 0  # tokens taken (for tests and benchmarks)

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self.slot_freed.set()

    async def idle_wait(self) -> None:
        if self.job_counter >= self.max_jobs:
            # Full: a poll is of use only once one of this worker's jobs finished.
            self.slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.slot_freed.wait(), timeout=self.idle_wait_s)
            return
        timeout_s = await self._until_next_due()
        if timeout_s < DUE_NOW_S:
            return
        if await self.pool.blpop([self.wake_key], timeout=timeout_s) is not None:
            self.wakeups += 1

    async def _until_next_due(self) -> float:
        """Seconds until the earliest job that is not due yet (a deferred one), at most ``idle_wait_s``."""
        now_ms = time.time() * 1000
        upcoming = await self.pool.zrangebyscore(
            self.queue_name, min=f"({int(now_ms)}", max="+inf", start=0, num=1, withscores=True
        )
        if not upcoming:
            return self.idle_wait_s
        return max(0.0, min(self.idle_wait_s, (float(upcoming[0][1]) - now_ms) / 1000))
