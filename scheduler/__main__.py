"""Entrypoint: ``python -m scheduler`` (the ``scheduler`` line of the Procfile)."""

from __future__ import annotations

import asyncio
import logging
import signal

from flowcore.settings import SchedulerSettings

log = logging.getLogger("scheduler")


async def run(settings: SchedulerSettings, stop: asyncio.Event) -> None:
    """Idle until ``stop`` is set; the trigger loop replaces this body in the triggers release."""
    log.info("scheduler idle: triggers arrive in a later release (tick %.2fs)", settings.tick_s)
    await stop.wait()
    log.info("scheduler stopped")


async def _main() -> None:
    settings = SchedulerSettings()
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
    asyncio.run(_main())


if __name__ == "__main__":
    main()
