"""The flow-control sweep every worker runs (ADR 013): nothing a crashed process left stays stuck.

Admission, starts, evictions and releases are done by the process that causes them; this loop
redoes any of them that a crash interrupted (:meth:`flowcore.admission_store.FlowControl.sweep_once`)
and admits runs waiting on a rate limit whose window reopened. Several workers sweeping at once is
harmless: every step is atomic and idempotent.
"""

from __future__ import annotations

import asyncio
import logging

from flowcore.admission_store import FlowControl
from flowcore.debounce_store import Debouncer
from flowcore.stepkey_store import StepKeys
from flowcore.store import WorkflowStore
from workers.resilience import REDIS_DOWN

log = logging.getLogger(__name__)


async def sweep_forever(store: WorkflowStore, interval_s: float, grace_s: float = 5.0) -> None:
    control, debouncer, slots = FlowControl(store), Debouncer(store), StepKeys(store)
    redis_down = False
    while True:
        try:
            await debouncer.sweep_once(grace_s=grace_s)
            done = await control.sweep_once(grace_s=grace_s)
            if done["admitted"] or done["started"] or done["released"] or done["evicted"]:
                log.warning("flow-control sweep finished work a process left: %s", done)
            keyed = await slots.sweep_once(grace_s=grace_s)  # step-level concurrency keys (ADR 019)
            if keyed["released"] or keyed["unparked"]:
                log.warning("step concurrency-key sweep finished work a process left: %s", keyed)
            redis_down = False
        except asyncio.CancelledError:
            raise
        except REDIS_DOWN as exc:
            if not redis_down:
                log.warning("flow-control sweeps skipped while redis is unreachable (%s)", type(exc).__name__)
            redis_down = True
        except Exception:  # keep sweeping whatever one pass met
            log.exception("flow-control sweep failed")
        await asyncio.sleep(interval_s)
