"""Entrypoint: ``python -m scheduler`` (the ``scheduler`` line of the Procfile)."""

from __future__ import annotations

import asyncio
import logging
import signal

from redis.asyncio import Redis

from flowcore import limits, redisconn, tracing_setup
from flowcore.keyspace import Keyspace
from flowcore.settings import SchedulerSettings
from scheduler.loop import Scheduler


async def run(settings: SchedulerSettings, stop: asyncio.Event) -> None:
    redis: Redis = redisconn.connect(settings.redis)
    try:
        scheduler = Scheduler(
            redis,
            Keyspace(settings.redis.prefix),
            tick_s=settings.tick_s,
            batch=settings.batch,
            retention_s=settings.idempotency_retention_s,
            workflow_retention_s=settings.retention_s,
            retention_sweep_s=settings.retention_sweep_s,
            retention_batch=settings.retention_batch,
        )
        await scheduler.run(stop)
    finally:
        await redis.aclose()


async def _main(settings: SchedulerSettings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(settings, stop)


def main() -> None:
    settings = SchedulerSettings()
    limits.configure(settings.limits)  # FLOW_LIMITS__*: read where each limit is enforced
    tracing = tracing_setup.configure(
        settings.tracing, default_service="flow-scheduler", redis_url=settings.redis.url, prefix=settings.redis.prefix,
        redis_options=redisconn.credentials(settings.redis), redis_section=settings.redis,
    )
    try:
        asyncio.run(_main(settings))
    finally:
        tracing.shutdown()  # flush the last spans


if __name__ == "__main__":
    main()
