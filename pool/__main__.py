"""``python -m pool``: run the pool service with uvicorn on ``settings.host:settings.port``."""

from __future__ import annotations

import logging

import uvicorn

from flowcore import limits, redisconn, tracing_setup
from flowcore.settings import PoolSettings
from pool.app import create_app


def main() -> None:
    settings = PoolSettings()
    limits.configure(settings.limits)  # FLOW_LIMITS__*: read where each limit is enforced
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tracing = tracing_setup.configure(
        settings.tracing, default_service="flow-pool", redis_url=settings.redis.url, prefix=settings.redis.prefix,
        redis_options=redisconn.credentials(settings.redis), redis_section=settings.redis,
    )
    try:
        # No access-log line per task (a step's cost): tasks are in the records, traces and metrics.
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            access_log=False,
        )
    finally:
        tracing.shutdown()  # flush the last spans


if __name__ == "__main__":
    main()
