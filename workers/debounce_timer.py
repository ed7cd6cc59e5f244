"""Closing debounce windows on time, to the millisecond (ADR 013 §7, ADR 019).

The flow-control sweep runs once a second; a debounce ``period`` of ``250ms`` needs better. Every
worker runs this timer: it sleeps until the earliest open window's close (``{p}:fc:debounce``) on a
``BLPOP`` of the wake-up list ``{p}:fc:debwake``, which every start that opens or moves a window
pushes onto (in its own MULTI), so a window opened while the timer sleeps wakes it. It then closes
what is due (:meth:`flowcore.debounce_store.Debouncer.sweep_once`; several timers closing the same
window are harmless: the close is under ``WATCH``). Tokens are hints: the schedule stays the truth,
and a lost token costs at most ``max_sleep_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from flowcore.debounce_store import Debouncer
from flowcore.store import WorkflowStore
from workers.resilience import REDIS_DOWN

log = logging.getLogger(__name__)

MIN_SLEEP_S = 0.001


def sleep_for_s(next_close: float | None, now: float, max_sleep_s: float) -> float:
    """How long the timer may sleep: until the next close, never longer than ``max_sleep_s``."""
    if next_close is None:
        return max_sleep_s
    return min(max(next_close - now, MIN_SLEEP_S), max_sleep_s)


async def close_on_time_forever(store: WorkflowStore, max_sleep_s: float = 1.0) -> None:
    debouncer = Debouncer(store)
    redis_down = False
    while True:
        try:
            await debouncer.sweep_once()
            wait_s = sleep_for_s(await debouncer.next_close(), time.time(), max_sleep_s)
            if wait_s > MIN_SLEEP_S:
                await store.redis.blpop([store.keys.fc_debounce_wake], timeout=wait_s)
            redis_down = False
        except asyncio.CancelledError:
            raise
        except REDIS_DOWN as exc:
            if not redis_down:
                log.warning("debounce timer paused while redis is unreachable (%s)", type(exc).__name__)
            redis_down = True
            await asyncio.sleep(max_sleep_s)
        except Exception:  # keep closing whatever one pass met
            log.exception("debounce timer pass failed")
            await asyncio.sleep(max_sleep_s)
