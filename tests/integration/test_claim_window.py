"""The claim window: a worker SIGKILLed after arq handed it a job but before the engine claimed the task.

Such a worker leaves arq's in-progress marker on the job (arq set it to the job timeout + 10 s: eight
days for ``run_task``) and no lease, so the lease takeover cannot see the task; it used to stay
``queued`` for days. The test plays that worker exactly: it commits a started workflow (the task is
queued, its job enqueued) and sets the job's in-progress marker as arq's ``start_jobs`` does, then
nothing. A real worker process (``python -m workers``) and pool service must then run the task within
seconds, exactly once, and leave no job behind that workers would keep polling.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from redis.asyncio import Redis

from flowcore.keyspace import Keyspace, lease_member
from flowcore.records import TaskStatus
from flowcore.store import WorkflowStore, task_job_id
from tests.integration.faults import Services, python_step, submit, task_events, wait_finished

ARQ_MARKER_MS = (8 * 86400 + 10) * 1000  # what arq's start_jobs sets for run_task (JOB_TIMEOUT_S + 10 s)


@pytest.fixture
def services(
    tmp_path: Path, redis_url: str, docker_host: str, base_image: str, test_labels: dict[str, str]
) -> Iterator[Services]:
    started = Services.create(tmp_path, redis_url, docker_host, test_labels)
    try:
        started.start_pool()
        yield started
    finally:
        started.stop()


async def test_a_task_whose_worker_died_before_claiming_runs_within_seconds_exactly_once(
    conn: Redis, services: Services
) -> None:
    keys = Keyspace()
    store = WorkflowStore(conn, keys)
    wf_id, plan = await submit(store, {"name": "claim-window", "steps": [python_step("a", "print(1)")]})
    (dispatch,) = plan.dispatch
    job_id = task_job_id(wf_id, dispatch.step_id, dispatch.index, dispatch.token)
    assert await conn.zscore(keys.queue, job_id) is not None
    assert await conn.zscore(keys.queued, lease_member(wf_id, "a", 0, dispatch.token)) is not None

    # The dying worker: arq took the job (its in-progress marker, as start_jobs sets it), then SIGKILL.
    await conn.psetex(in_progress_key_prefix + job_id, ARQ_MARKER_MS, b"1")
    await conn.incr(retry_key_prefix + job_id)
    killed_at = time.monotonic()

    services.spawn("worker", "workers")
    snap = await wait_finished(store, wf_id, timeout_s=60, logs=services.logs)
    took_s = time.monotonic() - killed_at

    assert snap.status.value == "completed", services.logs()
    task = snap.tasks["a:0"]
    assert task.status == TaskStatus.SUCCEEDED and task.attempt == 1 and task.takeovers == 1
    assert task.token != dispatch.token  # run under a new token: the dead worker's job is stale
    # Exactly once: one claim, one result.
    assert await task_events(conn, keys, wf_id, "a") == ["requeued", "running", "succeeded"]
    # Nothing left that workers would keep polling: the abandoned job and its marker are gone.
    assert not await conn.exists(
        in_progress_key_prefix + job_id, job_key_prefix + job_id, retry_key_prefix + job_id
    )
    assert await conn.zscore(keys.queue, job_id) is None
    assert await conn.zcard(keys.queued) == 0 and await conn.zcard(keys.leases) == 0
    print(f"claim-window kill: the task ran {took_s:.1f}s after its worker died")
