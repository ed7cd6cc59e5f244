"""Bounded pools and the pool's own policy check, against the real engine.

- A pool service never holds more than ``max_containers`` (pooled and one-shot): at the cap the least
  recently used idle container of another pool is evicted; when every container is busy a request
  waits, then follows ``on_exhausted``.
- Idle containers of a workflow-scoped pool go after ``workflow_idle_timeout_s`` whatever its
  ``min_size``, and the empty pool is forgotten; an image-scoped pool keeps its ``min_size``.
- A task sent straight to the pool service (not through the gateway) asking for the host's network,
  another container's, or more than the operator allows is refused 422 naming the field.
"""

# ruff: noqa: F811  (pytest fixtures imported from tests.pool_fixtures are parameters here)

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from flowcore.errors import PoolExhausted
from flowcore.pool_api import DispatchMode
from flowcore.settings import PoolSettings
from pool.services import PoolServices
from tests.pool_fixtures import (  # noqa: F401
    client,
    eventually,
    make_task,
    pool_settings,
    service_containers,
    work_dir,
)


@contextlib.asynccontextmanager
async def services(settings: PoolSettings, **changes: Any) -> AsyncIterator[PoolServices]:
    opened = await PoolServices.open(settings.model_copy(update=changes))
    try:
        yield opened
    finally:
        await opened.close()


@contextlib.asynccontextmanager
async def engine_count_watch(docker_host: str, service_id: str) -> AsyncIterator[list[int]]:
    """Samples how many containers the engine holds for this service, while the block runs."""
    counts: list[int] = []

    async def sample() -> None:
        while True:
            found = await asyncio.to_thread(service_containers, docker_host, service_id)
            counts.append(len(found))
            await asyncio.sleep(0.05)

    task = asyncio.create_task(sample())
    try:
        yield counts
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_container_cap_holds_evicting_the_least_recently_used(
    pool_settings: PoolSettings, base_image: str, docker_host: str
) -> None:
    async with services(pool_settings, max_containers=2, acquire_timeout_s=1.0, on_exhausted="error") as svc:
        async with engine_count_watch(docker_host, pool_settings.service_id) as counts:
            first = await svc.dispatcher.execute(make_task(base_image, workflow_id="wf-a", command="echo 1"))
            second = await svc.dispatcher.execute(make_task(base_image, workflow_id="wf-b", command="echo 2"))
            assert first.ok and second.ok and first.pool_key != second.pool_key
            assert svc.manager.budget.used == 2
            # A third workflow at the cap: wf-a's idle container (the least recently used) makes room.
            third = await svc.dispatcher.execute(make_task(base_image, workflow_id="wf-c", command="echo 3"))
            assert third.ok, third
            assert first.pool_key is not None
            assert first.container_id not in (third.container_id, second.container_id)
            await eventually(
                lambda: first.container_id not in " ".join(service_containers(docker_host, pool_settings.service_id)),
                what="the evicted container to be removed",
            )
            # Both slots busy: a fourth workflow waits acquire_timeout_s, then on_exhausted=error.
            busy = [
                asyncio.create_task(
                    svc.dispatcher.execute(make_task(base_image, workflow_id=wf, command="sleep 4"))
                )
                for wf in ("wf-b", "wf-c")
            ]
            await eventually(lambda: svc.manager.busy() == 2, what="two busy containers")
            with pytest.raises(PoolExhausted):
                await svc.dispatcher.execute(make_task(base_image, workflow_id="wf-d", command="echo 4"))
            with pytest.raises(PoolExhausted):  # a one-shot container respects the cap too
                async with svc.manager.oneshot_slot(0.3):
                    pass
            assert all(r.ok for r in await asyncio.gather(*busy))
            # Once they are idle, a new workflow evicts one and runs.
            fifth = await svc.dispatcher.execute(make_task(base_image, workflow_id="wf-e", command="echo 5"))
            assert fifth.ok and fifth.output == 5
        assert counts and max(counts) <= 2, counts
        report = svc.manager.report()
        assert report["capacity"]["max_containers"] == 2 and report["capacity"]["containers"] <= 2
        assert report["overall"]["evicted"] >= 2


async def test_a_waiting_request_gets_the_next_container_that_goes_idle(
    pool_settings: PoolSettings, base_image: str, docker_host: str
) -> None:
    async with services(pool_settings, max_containers=1, acquire_timeout_s=20.0) as svc:
        async with engine_count_watch(docker_host, pool_settings.service_id) as counts:
            blocker = asyncio.create_task(
                svc.dispatcher.execute(make_task(base_image, workflow_id="wf-x", command="sleep 2"))
            )
            await eventually(lambda: svc.manager.busy() == 1, what="the blocker to run")
            waited = await svc.dispatcher.execute(make_task(base_image, workflow_id="wf-y", command="echo 7"))
            assert waited.ok and waited.output == 7 and waited.mode == DispatchMode.AGENT
            assert (await blocker).ok
        assert counts and max(counts) <= 1, counts


async def test_idle_workflow_containers_are_reaped_whatever_min_size(
    pool_settings: PoolSettings, base_image: str, docker_host: str
) -> None:
    async with services(pool_settings, workflow_idle_timeout_s=1.0) as svc:
        scoped = await svc.dispatcher.execute(
            make_task(base_image, workflow_id="wf-done", command="echo 1", pool={"min_size": 2, "idle_timeout": "1h"})
        )
        shared = await svc.dispatcher.execute(
            make_task(base_image, command="echo 1", pool={"min_size": 1, "scope": "image", "idle_timeout": "1h"})
        )
        assert scoped.ok and shared.ok and scoped.pool_key and shared.pool_key
        warm = svc.manager.get(scoped.pool_key)
        assert warm.key.scope == "workflow" and warm.key.workflow_id == "wf-done"
        await eventually(lambda: scoped.pool_key not in svc.manager.pools, what="the workflow's pool to be dropped")
        assert not warm.containers and warm.stats.reaped >= 1
        await eventually(
            lambda: scoped.container_id not in " ".join(service_containers(docker_host, pool_settings.service_id)),
            what="the workflow's containers to be removed",
        )
        # The image-scoped pool (an explicit opt-in) keeps its min_size.
        assert svc.manager.get(shared.pool_key).idle_count >= 1
        assert svc.manager.report()["overall"]["reaped"] >= 1  # a dropped pool's stats stay counted
        assert svc.manager.budget.used == len(svc.manager.get(shared.pool_key).containers)


REFUSED = [
    ({"network": "host"}, "network"),
    ({"network": "container:flow-pool"}, "network"),
    ({"network": "host", "mode": "cold"}, "network"),
    ({"network": "bridge"}, "network"),
    ({"user": "0"}, "user"),
    ({"resources": {"memory_mb": 999_999}}, "resources.memory_mb"),
]


@pytest.mark.parametrize(("fields", "field"), REFUSED, ids=[f"{r[1]}-{i}" for i, r in enumerate(REFUSED)])
async def test_the_pool_refuses_what_the_policy_does_not_allow(
    client: httpx.AsyncClient, pool_settings: PoolSettings, base_image: str, docker_host: str,
    fields: dict[str, Any], field: str,
) -> None:
    """Defense in depth: a request that never went through the gateway (or a stale definition)."""
    body = {"task_id": "t-policy", "workflow_id": "wf-p", "step_id": "s", "image": base_image, "command": "id"}
    r = await client.post("/v1/tasks", json={**body, **fields})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field, r.json()
    assert (await client.get("/v1/pools")).json()["pools"] == []
    assert service_containers(docker_host, pool_settings.service_id) == []
