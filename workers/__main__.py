"""``python -m workers``: run one arq worker with settings from the environment."""

from __future__ import annotations

import asyncio
import logging

from flowcore.settings import WorkerSettings
from workers.app import build_worker


def main() -> None:
    settings = WorkerSettings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s worker %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(_run(settings))


async def _run(settings: WorkerSettings) -> None:
    # arq binds the running loop when the worker is built, so build it inside the loop.
    worker = build_worker(settings)
    try:
        await worker.async_run()
    finally:
        await worker.close()


if __name__ == "__main__":
    main()
