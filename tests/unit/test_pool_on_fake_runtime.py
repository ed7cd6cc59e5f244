"""Pool logic on the fake runtime, in milliseconds (ADR 022).

:class:`pool.manager.PoolManager`, :class:`pool.warm.WarmPool`, :class:`pool.containers.ContainerFactory`
and :class:`pool.budget.ContainerBudget` run here unchanged over :class:`tests.fakes.runtime.FakeRuntime`:
reuse and retirement, dead and lost containers, reaping, the FIFO queue, the service's container cap
and its evictions, workflow-scoped pools, adoption after a restart, shutdown, an engine that goes away
and the python3 probe. The engine-backed tests they mirror stay (``tests/integration/test_pool_lifecycle.py``,
``test_pool_bounds.py``); the fake's faithfulness is checked by ``test_runtime_contract.py``.

Pools here use ``exec`` keys (a sleeper container driven by exec): the fake starts no in-container
agent, so ``agent`` keys are left to the engine-backed tests. Time is moved by ageing a pool's
timestamps (:func:`age`), never by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from flowcore.errors import RuntimeFailure, ServiceUnavailable
from flowcore.models import PoolOptions
from flowcore.settings import PoolSettings
from pool.errors import PoolWaitTimeout
from pool.keys import PoolKey
from pool.manager import PoolManager
from pool.runtime import LABEL_SERVICE, ContainerRuntime, ContainerSpec
from pool.warm import WarmPool
from tests.fakes.runtime import FakeRuntime

IMAGE = "agentainer-flow/python:3.11"
NOPYTHON = "agentainer-flow/nopython:test"


@pytest.fixture
def work_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="ff", dir="/tmp")  # unix socket paths hold 108 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fake() -> FakeRuntime:
    runtime = FakeRuntime()
    runtime.add_image(IMAGE)
    runtime.add_image(NOPYTHON, python=False)
    return runtime


def settings_for(work_dir: str, **changes: Any) -> PoolSettings:
    values: dict[str, Any] = {
        "service_id": f"t-{uuid.uuid4().hex[:10]}",
        "work_dir": work_dir,
        "acquire_timeout_s": 5.0,
        **changes,
    }
    return PoolSettings(**values)


@contextlib.asynccontextmanager
async def manager_on(runtime: ContainerRuntime, settings: PoolSettings) -> AsyncIterator[PoolManager]:
    """A manager without its maintenance loop: the tests call reap, refill and health checks themselves."""
    manager = PoolManager(runtime, settings, None)
    manager.factory.service_dir.mkdir(parents=True, exist_ok=True)
    await manager.adopt()
    try:
        yield manager
    finally:
        await manager.stop()


@pytest.fixture
async def manager(fake: FakeRuntime, work_dir: str) -> AsyncIterator[PoolManager]:
    async with manager_on(fake, settings_for(work_dir)) as opened:
        yield opened


def key(workflow_id: str = "wf-1", image: str = IMAGE, scope: str = "workflow") -> PoolKey:
    return PoolKey(image=image, kind="exec", workflow_id=workflow_id if scope == "workflow" else None, scope=scope)  # type: ignore[arg-type]


def pool_of(manager: PoolManager, workflow_id: str = "wf-1", **options: Any) -> WarmPool:
    scope = options.get("scope", "workflow")
    return manager.pool_for(key(workflow_id, scope=scope), PoolOptions(**options))


async def settle(*pools: WarmPool) -> None:
    """Let the pools' background starts and removals finish."""
    for _ in range(100):
        pending = [t for p in pools for t in p._background]
        if not pending:
            return
        await asyncio.gather(*pending, return_exceptions=True)
    raise AssertionError("background work did not settle")


def age(pool: WarmPool, seconds: float) -> None:
    """Move the pool ``seconds`` into the past: its activity and its containers' idle times."""
    pool.last_active_s -= seconds
    for container in pool.containers.values():
        container.idle_since_s -= seconds


def own(fake: FakeRuntime, manager: PoolManager) -> list[str]:
    return [c.container_id for c in fake.containers.values() if c.labels.get(LABEL_SERVICE) == manager.settings.service_id]


async def test_a_released_container_is_reused_then_retired_after_max_uses(
    fake: FakeRuntime, manager: PoolManager
) -> None:
    pool = pool_of(manager, max_uses=2)
    ids = []
    for n in range(3):
        lease = await pool.acquire(1.0)
        assert lease.hit == (n == 1), n  # miss, hit, then a new one (the first was retired)
        ids.append(lease.container.container_id)
        pool.release(lease.container)
        await settle(pool)
    assert ids[0] == ids[1] != ids[2]
    assert pool.stats.retired == 1 and pool.stats.warm_hits == 1
    assert ids[0] not in fake.containers and own(fake, manager) == [ids[2]]
    spec = fake.containers[ids[2]].spec
    assert spec.network == "none" and spec.user == "65534:65534" and spec.read_only_root  # the exec key's spec
    assert manager.budget.used == 1


async def test_a_dead_idle_container_is_replaced(fake: FakeRuntime, manager: PoolManager) -> None:
    pool = pool_of(manager, min_size=1, max_size=2)
    await settle(pool)
    (first,) = pool.containers
    fake.die(first)
    await manager.health_check_now()
    await settle(pool)
    assert first not in pool.containers and first not in fake.containers
    assert pool.idle_count == 1 and pool.stats.replaced == 1
    lease = await pool.acquire(1.0)
    assert lease.hit and lease.container.container_id != first


async def test_a_busy_container_that_dies_is_killed_and_never_served_again(
    fake: FakeRuntime, manager: PoolManager
) -> None:
    pool = pool_of(manager)
    lease = await pool.acquire(1.0)
    cid = lease.container.container_id
    running = asyncio.create_task(fake.exec(cid, ["sleep", "60"], {}, None, 30.0))
    await asyncio.sleep(0)
    fake.die(cid, oom=True)
    result = await running  # the task's exec ends with its container
    assert result.exit_code == 137 and not result.timed_out
    assert (await fake.inspect(cid)).oom_killed
    await manager.health_check_now()
    assert lease.container.lost_reason == "the container is exited"
    assert ("kill", cid) in fake.calls  # a busy lost container is killed, ending its task at once
    pool.release(lease.container)
    await settle(pool)
    assert cid not in pool.containers and cid not in fake.containers and pool.idle_count == 0


async def test_a_health_check_survives_an_engine_hiccup(fake: FakeRuntime, manager: PoolManager) -> None:
    pool = pool_of(manager, min_size=1)
    await settle(pool)
    fake.fail_next("inspect", RuntimeFailure("inspect container: hiccup"))
    await manager.health_check_now()
    assert pool.idle_count == 1 and pool.stats.replaced == 0


async def test_idle_containers_are_reaped_down_to_min_size(fake: FakeRuntime, manager: PoolManager) -> None:
    pool = pool_of(manager, min_size=1, max_size=3, idle_timeout="500ms", scope="image")
    leases = [await pool.acquire(1.0) for _ in range(3)]
    for lease in leases:
        pool.release(lease.container)
    assert pool.reap(pool.last_active_s + 0.1) == 0  # not idle long enough
    age(pool, 1.0)
    pool.reap(pool.last_active_s + 1.0)
    await settle(pool)
    assert len(pool.containers) == 1 and pool.stats.reaped == 2 and len(own(fake, manager)) == 1


async def test_a_full_pool_serves_waiters_first_come_then_times_out(manager: PoolManager) -> None:
    pool = pool_of(manager, max_size=1)
    first = await pool.acquire(1.0)
    second = asyncio.create_task(pool.acquire(5.0))
    third = asyncio.create_task(pool.acquire(5.0))
    await asyncio.sleep(0)
    assert pool.waiting == 2
    pool.release(first.container)
    handed = await second
    assert handed.waited and handed.hit and handed.container is first.container
    assert not third.done()
    third.cancel()
    with pytest.raises(asyncio.CancelledError):
        await third
    with pytest.raises(PoolWaitTimeout):
        await pool.acquire(0.01)
    assert pool.stats.exhausted == 1 and len(pool.containers) == 1


async def test_the_container_cap_evicts_the_least_recently_used(fake: FakeRuntime, work_dir: str) -> None:
    async with manager_on(fake, settings_for(work_dir, max_containers=2)) as manager:
        a, b = pool_of(manager, "wf-a"), pool_of(manager, "wf-b")
        for pool in (a, b):
            lease = await pool.acquire(1.0)
            pool.release(lease.container)
        (evicted,) = a.containers
        c = pool_of(manager, "wf-c")
        lease_c = await c.acquire(1.0)  # wf-a's idle container (the least recently used) makes room
        await settle(a, b, c)
        assert evicted not in fake.containers and not a.containers and a.stats.evicted == 1
        assert fake.peak_containers <= 2 and manager.budget.used == 2
        lease_b = await b.acquire(1.0)
        with pytest.raises(PoolWaitTimeout):  # every slot busy
            await pool_of(manager, "wf-d").acquire(0.05)
        with pytest.raises(PoolWaitTimeout):  # a one-shot container respects the cap too
            async with manager.oneshot_slot(0.05):
                pass
        b.release(lease_b.container)
        c.release(lease_c.container)
        e = pool_of(manager, "wf-e")
        lease_e = await e.acquire(1.0)
        await settle(a, b, c, e)
        assert not lease_e.hit and fake.peak_containers <= 2
        assert manager.report()["overall"]["evicted"] == 2 and manager.report()["capacity"]["containers"] == 2


async def test_a_request_at_the_cap_gets_the_slot_of_the_next_idle_container(
    fake: FakeRuntime, work_dir: str
) -> None:
    async with manager_on(fake, settings_for(work_dir, max_containers=1)) as manager:
        x, y = pool_of(manager, "wf-x"), pool_of(manager, "wf-y")
        blocker = await x.acquire(1.0)
        waiting = asyncio.create_task(y.acquire(5.0))
        await asyncio.sleep(0)
        assert not waiting.done() and manager.budget.waiting == 1
        x.release(blocker.container)  # idle now, and someone waits at the cap: evicted
        lease = await waiting
        await settle(x, y)
        assert lease.waited and not lease.hit and not x.containers
        assert fake.peak_containers == 1 and manager.budget.used == 1


async def test_a_quiet_workflow_pool_is_reaped_whatever_its_min_size_and_dropped(
    fake: FakeRuntime, work_dir: str
) -> None:
    async with manager_on(fake, settings_for(work_dir, workflow_idle_timeout_s=1.0)) as manager:
        scoped = pool_of(manager, "wf-done", min_size=2, idle_timeout="1h")
        shared = pool_of(manager, min_size=1, idle_timeout="1h", scope="image")
        await settle(scoped, shared)
        assert len(scoped.containers) == 2 and len(shared.containers) == 1
        for pool in (scoped, shared):
            age(pool, 2.0)
            pool.reap(pool.last_active_s + 2.0)
            pool.refill()
        await settle(scoped, shared)
        assert not scoped.containers and scoped.stats.reaped == 2
        assert manager.drop_settled(scoped.last_active_s + 2.0) == 1
        assert scoped.key.hash not in manager.pools and shared.key.hash in manager.pools
        assert shared.idle_count == 1  # an image-scoped pool keeps its min_size
        assert manager.report()["overall"]["reaped"] == 2 and manager.budget.used == 1


async def test_a_restarted_service_adopts_its_idle_containers_and_removes_the_rest(
    fake: FakeRuntime, work_dir: str
) -> None:
    settings = settings_for(work_dir, keep_containers_on_shutdown=True)
    async with manager_on(fake, settings) as first:
        pool = pool_of(first)
        idle, busy = await pool.acquire(1.0), await pool.acquire(1.0)
        pool.release(idle.container)
        left = {}
        for wf in ("wf-dies", "wf-kept"):
            lease = await pool_of(first, wf).acquire(1.0)
            first.get(lease.container.key.hash).release(lease.container)
            left[wf] = lease.container.container_id
        oneshot = await fake.start(
            ContainerSpec(image=IMAGE, entrypoint=["sleep", "60"], labels=first.factory.base_labels("oneshot"))
        )
    adoptable = idle.container.container_id
    assert adoptable in fake.containers and busy.container.container_id not in fake.containers  # busy: removed
    fake.die(left["wf-dies"])  # died while no pool service ran
    await fake.rename(left["wf-kept"], f"flow-{settings.service_id}-kept-0123456789ab")  # kept for inspection
    stray = await fake.start(  # pooled, but not named as this service names its containers
        ContainerSpec(image=IMAGE, entrypoint=["sleep", "60"], labels=first.factory.base_labels("pooled"))
    )
    async with manager_on(fake, settings.model_copy(update={"keep_containers_on_shutdown": False})) as second:
        for gone in (oneshot, stray, left["wf-dies"]):
            assert gone not in fake.containers  # not adoptable: removed
        assert left["wf-kept"] in fake.containers  # a kept name: neither adopted nor removed
        assert second.budget.used == 1 and list(second.pools) == [key().hash]
        again = await second.pool_for(key(), None).acquire(1.0)
        assert again.hit and again.container.container_id == adoptable
        second.get(key().hash).release(again.container)
    assert list(fake.containers) == [left["wf-kept"]]  # this run removes its own on shutdown; kept stays


async def test_no_container_outlives_a_shutdown(fake: FakeRuntime, work_dir: str) -> None:
    async with manager_on(fake, settings_for(work_dir)) as manager:
        warm = pool_of(manager, min_size=2)
        other = pool_of(manager, "wf-2")
        busy = await other.acquire(1.0)
        await settle(warm, other)
        async with manager.oneshot_slot():
            oneshot = await fake.start(
                ContainerSpec(image=IMAGE, entrypoint=["sleep", "60"], labels=manager.factory.base_labels("oneshot"))
            )
        assert len(own(fake, manager)) == 4 and busy.container.busy
    assert own(fake, manager) == [] and oneshot not in fake.containers


async def test_an_engine_outage_while_growing_gives_the_slot_back(fake: FakeRuntime, manager: PoolManager) -> None:
    pool = pool_of(manager)
    fake.available = False
    with pytest.raises(ServiceUnavailable):
        await pool.acquire(1.0)
    assert manager.budget.used == 0 and pool.starting == 0
    assert "cannot be reached" in str(pool.report()["last_error"])
    fake.available = True
    lease = await pool.acquire(1.0)
    assert not lease.hit and pool.last_error is None and manager.budget.used == 1


async def test_the_python_probe_runs_once_per_image(fake: FakeRuntime, manager: PoolManager) -> None:
    results = await asyncio.gather(*(manager.has_python(i) for i in (IMAGE, IMAGE, NOPYTHON, NOPYTHON, IMAGE)))
    assert results == [True, True, False, False, True]
    assert [c for c in fake.calls if c[0] == "start"] == [("start", IMAGE), ("start", NOPYTHON)]
    assert fake.containers == {} and manager.budget.used == 0  # probes are one-shot: removed, slot back


async def test_drain_removes_idle_now_and_busy_when_their_task_ends(fake: FakeRuntime, manager: PoolManager) -> None:
    pool = pool_of(manager, max_size=3)
    busy = await pool.acquire(1.0)
    idle = await pool.acquire(1.0)
    pool.release(idle.container)
    await settle(pool)
    assert await pool.drain() == 1
    pool.release(busy.container)  # an older generation: not reused
    await settle(pool)
    assert not pool.containers and own(fake, manager) == [] and manager.budget.used == 0
