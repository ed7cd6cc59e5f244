"""``python -m workers``: run one arq worker with settings from the environment."""

from __future__ import annotations

import asyncio
import logging

from flowcore import tracing_setup
from flowcore.settings import WorkerSettings
from workers.app import build_worker


def main() -> None:
    settings = WorkerSettings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s worker %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    tracing = tracing_setup.configure(
        settings.tracing, default_service="flow-worker", redis_url=settings.redis.url, prefix=settings.redis.prefix
    )
    try:
        asyncio.run(_run(settings))
    finally:
        tracing.shutdown()  # flush the last spans


async def _run(settings: WorkerSettings) -> None:
    # arq binds the running loop when the worker is built, so build it inside the loop.
    worker = build_worker(settings)
    try:
        await worker.async_run()
    finally:
        await worker.close()


if __name__ == "__main__":
    main()
