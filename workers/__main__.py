"""``python -m workers``: run one arq worker with settings from the environment."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from flowcore import limits, redisconn, tracing_setup
from flowcore.settings import WorkerSettings
from workers.app import build_worker
from workers.resilience import REDIS_DOWN, Backoff, ResilientWorker

log = logging.getLogger("workers")


def main() -> None:
    settings = WorkerSettings()
    limits.configure(settings.limits)  # FLOW_LIMITS__*: read where each limit is enforced
    logging.basicConfig(level=settings.log_level, format="%(asctime)s worker %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    tracing = tracing_setup.configure(
        settings.tracing, default_service="flow-worker", redis_url=settings.redis.url, prefix=settings.redis.prefix,
        redis_options=redisconn.credentials(settings.redis), redis_section=settings.redis,
    )
    try:
        asyncio.run(_run(settings))
    finally:
        tracing.shutdown()  # flush the last spans


async def _run(settings: WorkerSettings) -> None:
    """Run the worker until a signal stops it.

    Once running, the worker's poll loop rides out Redis outages itself (:mod:`workers.resilience`);
    a worker that cannot even start (Redis down at start-up) is rebuilt here, with backoff.
    """
    backoff = Backoff(max_s=settings.redis_backoff_max_s)
    while True:
        # arq binds the running loop when the worker is built, so build it inside the loop.
        worker = build_worker(settings)
        try:
            await worker.async_run()
            return
        except asyncio.CancelledError:
            if not worker.stopping:
                raise
            return
        except REDIS_DOWN as exc:
            log.warning("worker could not start: redis is unreachable (%s: %s)", type(exc).__name__, exc)
        finally:
            await _close(worker)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(worker.stop_requested.wait(), timeout=backoff.next_delay_s())
        if worker.stopping:
            return


async def _close(worker: ResilientWorker) -> None:
    try:
        await asyncio.wait_for(worker.close(), timeout=30)
    except Exception as exc:  # Redis down: arq's close stops at its first command
        log.warning("worker closed uncleanly: %s: %s", type(exc).__name__, exc)
    # Whatever arq's close skipped: our shutdown hook is idempotent, and the connections must go.
    if worker.on_shutdown is not None:
        with contextlib.suppress(Exception):
            await worker.on_shutdown(worker.ctx)
    with contextlib.suppress(Exception):
        await worker.pool.close(close_connection_pool=True)


if __name__ == "__main__":
    main()
