"""Kept one-shot (cold) containers and the overall cap across pool services, on the real engine and Redis
(ADR 014, 2026-11-29 section)."""

# ruff: noqa: F811  (pytest fixtures imported from tests.pool_fixtures are parameters here)

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis as redis_sync

from flowcore.errors import Conflict
from flowcore.keyspace import Keyspace
from flowcore.settings import PoolSettings
from pool.services import PoolServices
from tests.pool_fixtures import (  # noqa: F401
    docker_cli,
    eventually,
    keep_settings,
    make_task,
    nopython_image,
    pool_settings,
    running_pool,
    service_containers,
    work_dir,
)

KEYS = Keyspace("flow")


def _workflow(redis_url: str) -> str:
    wf_id = f"wf-{uuid.uuid4().hex[:8]}"
    with redis_sync.Redis.from_url(redis_url) as client:
        client.hset(KEYS.workflow(wf_id), "status", "running")
    return wf_id


def _inspect(docker_host: str, container_id: str) -> dict[str, Any] | None:
    out = docker_cli(docker_host, "inspect", container_id, check=False)
    data = json.loads(out) if out.strip() else []
    return data[0] if data else None


def _cold(image: str, wf: str, command: str, **cleanup: Any) -> Any:
    return make_task(image, workflow_id=wf, command=command, mode="cold", cleanup=cleanup or None)


@pytest.fixture
async def pool(keep_settings: PoolSettings) -> AsyncIterator[PoolServices]:
    async with running_pool(keep_settings) as services:
        yield services


@pytest.fixture
def other_settings(keep_settings: PoolSettings, docker_host: str, tmp_path_factory: Any) -> Iterator[PoolSettings]:
    """A second pool service on the same Redis (its own id, labels, work dir)."""
    other = keep_settings.model_copy(deep=True)
    other.service_id = f"t-{uuid.uuid4().hex[:10]}"
    other.work_dir = str(tmp_path_factory.mktemp("fp2"))
    yield other
    leftover = service_containers(docker_host, other.service_id)
    if leftover:
        docker_cli(docker_host, "rm", "-f", *leftover, check=False)


async def test_failed_cold_tasks_kept_listed_then_expired(
    pool: PoolServices, base_image: str, nopython_image: str, docker_host: str, redis_url: str
) -> None:
    wf = _workflow(redis_url)
    # With python3: a one-shot agent, kept paused with its files.
    agent = await pool.dispatcher.execute(
        _cold(base_image, wf, "echo evidence > $HOME/note.txt; exit 4", on_failure="keep", keep_for="3s")
    )
    # Without: the command was the container's process; kept exited, its logs readable.
    command = await pool.dispatcher.execute(
        _cold(nopython_image, wf, "echo oops >&2; exit 3", on_failure="keep", keep_for="3s")
    )
    assert not agent.ok and not command.ok and agent.mode == command.mode == "cold"
    assert agent.container_id and command.container_id
    kept = {k.container_id: k for k in await pool.keeper.list(wf)}
    assert set(kept) == {agent.container_id, command.container_id}
    assert kept[command.container_id].status == "exited" and "exited with code 3" in kept[command.container_id].reason
    assert kept[agent.container_id].status == "paused" and kept[agent.container_id].step_id == "step"
    for cid in kept:
        state = _inspect(docker_host, cid)
        assert state is not None and "-kept-" in state["Name"]
    assert (_inspect(docker_host, agent.container_id) or {})["State"]["Paused"] is True
    packed = await pool.keeper.copy(agent.container_id, None)
    assert packed.files >= 1
    assert "oops" in await pool.keeper.logs(command.container_id)
    with pytest.raises(Conflict):  # its tmpfs died with its process: said, not an empty archive
        await pool.keeper.copy(command.container_id, None)
    # Not adopted by any warm pool, and a success of the same policy is not kept (on_success: return).
    pooled = {cid for p in pool.manager.pools.values() for cid in p.containers}
    assert not pooled & set(kept)
    ok = await pool.dispatcher.execute(_cold(base_image, wf, "echo 1", on_failure="keep"))
    assert ok.ok and ok.container_id not in {k.container_id for k in await pool.keeper.list(wf)}
    await eventually(lambda: _inspect(docker_host, ok.container_id or "") is None, what="the success's removal")
    # Expired: both go, records and index entries too.
    for cid in kept:
        await eventually(lambda cid=cid: _inspect(docker_host, cid) is None, what="expiry")

    async def forgotten() -> bool:
        return await pool.keeper.list(wf) == []

    await eventually(forgotten, what="the records to go")
    with redis_sync.Redis.from_url(redis_url) as client:
        assert client.zcard(KEYS.kept_order) == 0 and client.hlen(KEYS.kept_owner) == 0


async def test_cold_kept_removed_now_and_default_removes(
    pool: PoolServices, nopython_image: str, docker_host: str, redis_url: str
) -> None:
    wf = _workflow(redis_url)
    plain = await pool.dispatcher.execute(_cold(nopython_image, wf, "exit 1"))  # default: failures removed
    assert not plain.ok and plain.container_id and _inspect(docker_host, plain.container_id) is None
    kept = await pool.dispatcher.execute(_cold(nopython_image, wf, "exit 1", on_failure="keep"))
    assert kept.container_id and _inspect(docker_host, kept.container_id) is not None
    await pool.keeper.remove(kept.container_id)
    assert _inspect(docker_host, kept.container_id) is None and await pool.keeper.list() == []


async def test_restart_keeps_cold_kept_containers(
    keep_settings: PoolSettings, base_image: str, nopython_image: str, docker_host: str, redis_url: str
) -> None:
    wf = _workflow(redis_url)
    services = await PoolServices.open(keep_settings)
    try:
        agent = await services.dispatcher.execute(_cold(base_image, wf, "exit 1", on_failure="keep", keep_for="1h"))
        command = await services.dispatcher.execute(
            _cold(nopython_image, wf, "exit 2", on_failure="keep", keep_for="1h")
        )
    finally:
        await services.close()
    ids = {agent.container_id, command.container_id}
    assert None not in ids
    services = await PoolServices.open(keep_settings)
    try:
        assert {k.container_id for k in await services.keeper.list(wf)} == ids
        pooled = {cid for p in services.manager.pools.values() for cid in p.containers}
        assert not pooled & ids
        assert (_inspect(docker_host, agent.container_id or "") or {})["State"]["Paused"] is True
        again = await services.dispatcher.execute(make_task(base_image, workflow_id=wf, command="echo 1"))
        assert again.ok and again.container_id not in ids
    finally:
        await services.close()
    with redis_sync.Redis.from_url(redis_url) as client:
        assert client.zcard(KEYS.kept_order) == 2  # still indexed for the overall cap


async def test_overall_cap_evicts_the_oldest_through_its_owner(
    keep_settings: PoolSettings, other_settings: PoolSettings, base_image: str, docker_host: str, redis_url: str
) -> None:
    keep_settings.keep_max_total = other_settings.keep_max_total = 2
    wf = _workflow(redis_url)
    a = await PoolServices.open(keep_settings)
    b = await PoolServices.open(other_settings)
    try:
        a1 = await a.dispatcher.execute(_cold(base_image, wf, "exit 1", on_failure="keep"))
        b1 = await b.dispatcher.execute(_cold(base_image, wf, "exit 1", on_failure="keep"))
        # b keeps a third: the oldest overall is a's; b asks, a removes it (b never touches a's containers).
        b2 = await b.dispatcher.execute(make_task(base_image, workflow_id=wf, command="exit 2",
                                                  cleanup={"on_failure": "keep"}))
        assert a1.container_id and b1.container_id and b2.container_id
        await eventually(lambda: _inspect(docker_host, a1.container_id or "") is None, what="a's eviction")

        async def a_forgot() -> bool:
            return await a.keeper.list() == []

        await eventually(a_forgot, what="a's record to go")
        assert [k.container_id for k in await b.keeper.list()] == [b1.container_id, b2.container_id]
        assert a.keeper.removed == 1 and b.keeper.removed == 0
        # a keeps one more: now b's oldest goes, by b.
        a2 = await a.dispatcher.execute(_cold(base_image, wf, "exit 3", on_failure="keep"))
        await eventually(lambda: _inspect(docker_host, b1.container_id or "") is None, what="b's eviction")
        with redis_sync.Redis.from_url(redis_url) as client:
            order = [m.decode() for m in client.zrange(KEYS.kept_order, 0, -1)]
        assert order == [b2.container_id, a2.container_id]
    finally:
        await a.close()
        await b.close()


async def test_a_gone_services_records_are_forgotten_then_its_containers_removed_on_return(
    keep_settings: PoolSettings, other_settings: PoolSettings, base_image: str, docker_host: str, redis_url: str
) -> None:
    wf = _workflow(redis_url)
    gone = await PoolServices.open(other_settings)
    try:
        orphan = await gone.dispatcher.execute(_cold(base_image, wf, "exit 1", on_failure="keep", keep_for="1h"))
    finally:
        await gone.close()  # and never seen again (as after a crash: nothing is cleaned on the way out)
    assert orphan.container_id
    keep_settings.kept_owner_gone_s = 1.0
    watcher = await PoolServices.open(keep_settings)
    try:
        def forgotten() -> bool:
            with redis_sync.Redis.from_url(redis_url) as client:
                return not client.exists(KEYS.kept(other_settings.service_id)) and client.zcard(KEYS.kept_order) == 0

        await eventually(forgotten, what="the gone service's records to be forgotten")
        assert _inspect(docker_host, orphan.container_id) is not None  # never another service's container
    finally:
        await watcher.close()
    back = await PoolServices.open(other_settings)  # it returns: a kept container without a record goes
    try:
        assert _inspect(docker_host, orphan.container_id) is None
        assert await back.keeper.list() == []
    finally:
        await back.close()


async def test_an_eviction_for_an_owner_that_is_down_is_done_when_it_restarts(
    keep_settings: PoolSettings, other_settings: PoolSettings, base_image: str, docker_host: str, redis_url: str
) -> None:
    keep_settings.keep_max_total = other_settings.keep_max_total = 1
    wf = _workflow(redis_url)
    down = await PoolServices.open(other_settings)
    try:
        old = await down.dispatcher.execute(_cold(base_image, wf, "exit 1", on_failure="keep", keep_for="1h"))
    finally:
        await down.close()  # down (a crash, a deploy): its kept container stays
    assert old.container_id
    up = await PoolServices.open(keep_settings)
    try:
        new = await up.dispatcher.execute(_cold(base_image, wf, "exit 2", on_failure="keep", keep_for="1h"))
        with redis_sync.Redis.from_url(redis_url) as client:
            assert client.hget(KEYS.kept_evict, old.container_id) == other_settings.service_id.encode()
        assert _inspect(docker_host, old.container_id) is not None  # not up's to remove
        assert [k.container_id for k in await up.keeper.list()] == [new.container_id]
    finally:
        await up.close()
    back = await PoolServices.open(other_settings)
    try:
        assert _inspect(docker_host, old.container_id) is None  # done on its restart
        assert await back.keeper.list() == []
        with redis_sync.Redis.from_url(redis_url) as client:
            assert client.hlen(KEYS.kept_evict) == 0
            assert [m.decode() for m in client.zrange(KEYS.kept_order, 0, -1)] == [new.container_id]
    finally:
        await back.close()
