"""The arq worker: its functions, settings and lifecycle.

Job payloads are JSON (never pickle). An idle worker does not poll: it blocks on the wake-up list
that every commit enqueueing jobs pushes to (:mod:`workers.wakeup`, ADR 010); ``poll_delay`` (5 ms)
only spaces the polls of a busy worker. Jobs stay thin: they hand over to
:class:`workers.runner.TaskRunner`. The worker is arq's, made to ride out Redis outages
(:mod:`workers.resilience`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from arq.worker import func

from flowcore import pooltoken, redisconn
from flowcore.aiotasks import cancel_and_wait
from flowcore.keyspace import Keyspace
from flowcore.secretstore import SecretCipher, SecretStore, resolve_key
from flowcore.settings import WorkerSettings
from flowcore.store import RUN_TASK, WORKFLOW_DEADLINE, job_deserializer, job_serializer
from flowcore.waitcommits import WAIT_JOB
from workers.debounce_timer import close_on_time_forever
from workers.flow_sweeper import sweep_forever
from workers.pool_client import PoolClient
from workers.reaper import reap_forever
from workers.resilience import ResilientWorker
from workers.routing import PoolRouter
from workers.runner import TaskRunner
from workers.waits import wait_wake
from workers.wakeup import WakingWorker

log = logging.getLogger(__name__)

# arq's own timeout is a backstop only: step timeouts are enforced by the pool, and a dead worker's
# task is taken over through its lease (or, before its claim, through ``{p}:queued``) within seconds.
# arq's in-progress marker does not follow this timeout: it is ``job_marker_ttl_s``, renewed with the lease.
JOB_TIMEOUT_S = 8 * 86400


async def run_task(
    ctx: dict[str, Any], workflow_id: str, step_id: str, index: int, token: str, traceparent: str | None = None
) -> str:
    # traceparent: the workflow's root span (jobs enqueued before tracing existed have none).
    runner: TaskRunner = ctx["runner"]
    return await runner.run(workflow_id, step_id, index, token, traceparent)


async def workflow_deadline(ctx: dict[str, Any], workflow_id: str) -> None:
    runner: TaskRunner = ctx["runner"]
    await runner.deadline(workflow_id)


def build_worker(settings: WorkerSettings, *, handle_signals: bool = True) -> ResilientWorker:
    keys = Keyspace(settings.redis.prefix)
    pool_token = pooltoken.resolve(settings.pool_token, settings.pool_token_file)
    secrets_key = resolve_key(settings.secrets_key, settings.secrets_key_file)
    cipher = SecretCipher(secrets_key) if secrets_key is not None else None

    async def on_startup(ctx: dict[str, Any]) -> None:
        pool = PoolClient(margin_s=settings.pool.request_timeout_s, token=pool_token)
        runner = TaskRunner(
            redis=ctx["redis"],
            keys=keys,
            pool=pool,
            router=PoolRouter(ctx["redis"], keys, settings.pool.url, token=pool_token, policy=settings.policy),
            lease_ttl_s=settings.lease_ttl_s,
            lease_renew_s=settings.lease_renew_s,
            max_takeovers=settings.max_takeovers,
            pool_grace_s=settings.pool_grace_s,
            marker_ttl_s=settings.job_marker_ttl_s,
            commit_patience_s=settings.commit_patience_s,
            secrets=SecretStore(ctx["redis"], keys, cipher),
        )
        ctx["runner"] = runner
        ctx["pool_client"] = pool
        ctx["reaper"] = asyncio.create_task(
            reap_forever(runner, settings.reaper_interval_s, settings.claim_timeout_s)
        )
        ctx["flow_sweeper"] = asyncio.create_task(sweep_forever(runner.store, settings.reaper_interval_s))
        ctx["debounce_timer"] = asyncio.create_task(close_on_time_forever(runner.store))  # ms resolution

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        # Idempotent: the entrypoint calls it again when arq's own close failed half-way.
        for name in ("reaper", "flow_sweeper", "debounce_timer"):
            await cancel_and_wait(ctx.pop(name, None))
        pool = ctx.pop("pool_client", None)
        if pool is not None:
            await pool.aclose()

    return WakingWorker(
        functions=[
            func(run_task, name=RUN_TASK, timeout=JOB_TIMEOUT_S, max_tries=1000),
            func(workflow_deadline, name=WORKFLOW_DEADLINE, timeout=60, max_tries=1000),
            func(wait_wake, name=WAIT_JOB, timeout=60, max_tries=1000),  # durable waits (ADR 012)
        ],
        redis_settings=redisconn.arq_settings(settings.redis),
        redis_pool=redisconn.arq_pool(settings.redis),  # through Sentinel when configured (ADR 021), else None
        queue_name=keys.queue,
        poll_delay=settings.poll_delay_s,
        max_jobs=settings.max_jobs,
        keep_result=0,
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        handle_signals=handle_signals,
        allow_abort_jobs=False,
        marker_ttl_s=settings.job_marker_ttl_s,
        backoff_max_s=settings.redis_backoff_max_s,
        wake_key=keys.wake,
        idle_wait_s=settings.idle_wait_s,
    )
