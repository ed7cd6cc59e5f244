"""Warm pool lifecycle against the real engine: exec fallback, health, retirement, reaping,
adoption after a restart, and no leaked containers."""

# ruff: noqa: F811  (pytest fixtures imported from tests.pool_fixtures are parameters here)

from __future__ import annotations

import asyncio

from flowcore.pool_api import DispatchMode, ErrorKind
from flowcore.settings import PoolSettings
from pool.services import PoolServices
from tests.pool_fixtures import (  # noqa: F401
    docker_cli,
    eventually,
    make_task,
    nopython_image,
    pool,
    pool_settings,
    service_containers,
    work_dir,
)


async def test_exec_fallback_on_an_image_without_python(pool: PoolServices, nopython_image: str) -> None:
    first = await pool.dispatcher.execute(
        make_task(nopython_image, command='read line; echo "{\\"got\\": $line}"', input=5, env={"A": "b"})
    )
    assert first.ok, first
    assert first.mode == DispatchMode.EXEC and first.pooled and first.output == {"got": 5}
    second = await pool.dispatcher.execute(make_task(nopython_image, command="echo $A; exit 2"))
    assert second.error is not None and second.error.kind == ErrorKind.EXIT_CODE
    assert second.container_id == first.container_id  # warm
    assert second.log_tail.strip() == ""  # env does not leak between tasks
    slow = await pool.dispatcher.execute(make_task(nopython_image, command="sleep 30", timeout_s=0.5))
    assert slow.error is not None and slow.error.kind == ErrorKind.TIMEOUT
    fn = await pool.dispatcher.execute(
        make_task(nopython_image, function={"module": "m", "qualname": "f", "source": "def f(ctx): return 1"})
    )
    assert fn.error is not None and fn.error.kind == ErrorKind.RUNTIME and "python3" in fn.error.message


async def test_dead_idle_container_is_replaced(pool: PoolServices, base_image: str, docker_host: str) -> None:
    first = await pool.dispatcher.execute(
        make_task(base_image, command="echo 1", pool={"min_size": 1, "max_size": 2})
    )
    assert first.ok and first.container_id and first.pool_key
    warm = pool.manager.get(first.pool_key)
    docker_cli(docker_host, "kill", first.container_id)
    await eventually(
        lambda: first.container_id not in warm.containers and warm.idle_count == 1,
        what="a replacement container",
    )
    assert warm.stats.replaced >= 1
    again = await pool.dispatcher.execute(make_task(base_image, command="echo 2", pool={"min_size": 1}))
    assert again.ok and again.container_id != first.container_id


async def test_busy_container_killed_fails_the_task_as_lost(
    pool: PoolServices,
    base_image: str,
    nopython_image: str,
    docker_host: str,
) -> None:
    for image in (base_image, nopython_image):
        request = make_task(image, command="sleep 60")
        running = asyncio.create_task(pool.dispatcher.execute(request))
        entry = await eventually(
            lambda r=request: (
                (pool.dispatcher.running.get(r.task_id) or None)
                and pool.dispatcher.running[r.task_id].container
            ),
            what="the task to start",
        )
        await asyncio.sleep(0.3)
        docker_cli(docker_host, "kill", entry.container_id)
        result = await asyncio.wait_for(running, 15)
        assert result.error is not None and result.error.kind == ErrorKind.CONTAINER_LOST, (image, result)
        assert result.error.retriable


async def test_max_uses_retires_a_container(pool: PoolServices, base_image: str) -> None:
    options = {"max_uses": 2}
    results = [
        await pool.dispatcher.execute(make_task(base_image, command="echo 1", pool=options)) for _ in range(3)
    ]
    ids = [r.container_id for r in results]
    assert ids[0] == ids[1] != ids[2]
    key = results[2].pool_key
    assert key is not None and pool.manager.get(key).stats.retired == 1


async def test_idle_containers_are_reaped(pool: PoolServices, base_image: str, docker_host: str) -> None:
    result = await pool.dispatcher.execute(
        make_task(base_image, command="echo 1", pool={"min_size": 0, "idle_timeout": "500ms"})
    )
    assert result.ok and result.pool_key
    warm = pool.manager.get(result.pool_key)
    await eventually(lambda: not warm.containers, what="the idle container to be reaped")
    assert warm.stats.reaped == 1
    await eventually(
        lambda: (
            result.container_id not in " ".join(service_containers(docker_host, pool.settings.service_id))
            or None
        ),
        what="the container to be removed",
    )


async def test_queue_then_cold_fallback(pool: PoolServices, base_image: str) -> None:
    pool.settings.acquire_timeout_s = 0.5
    options = {"max_size": 1}
    blocker = asyncio.create_task(
        pool.dispatcher.execute(make_task(base_image, command="sleep 3", pool=options))
    )
    await asyncio.sleep(1.0)
    fallback = await pool.dispatcher.execute(make_task(base_image, command="echo 9", pool=options))
    assert fallback.ok and fallback.output == 9 and fallback.mode == DispatchMode.COLD and not fallback.pooled
    assert (await blocker).ok
    assert fallback.pool_key is not None
    stats = pool.manager.get(fallback.pool_key).stats
    assert stats.exhausted == 1 and stats.queue_waits == 0


async def test_restart_adopts_idle_containers(
    pool_settings: PoolSettings, base_image: str, docker_host: str
) -> None:
    keep = pool_settings.model_copy(update={"keep_containers_on_shutdown": True})
    first = await PoolServices.open(keep)
    try:
        result = await first.dispatcher.execute(make_task(base_image, command="echo 1", mode="agent"))
        assert result.ok
    finally:
        await first.close()
    assert result.container_id in [c for c in docker_cli(docker_host, "ps", "-q", "--no-trunc").split()]
    second = await PoolServices.open(pool_settings)
    try:
        assert result.pool_key in second.manager.pools
        again = await second.dispatcher.execute(make_task(base_image, command="echo 2", mode="agent"))
        assert again.ok and again.container_id == result.container_id
        assert second.manager.get(result.pool_key).stats.warm_hits == 1
    finally:
        await second.close()
    assert service_containers(docker_host, pool_settings.service_id) == []


async def test_no_container_leaks_after_shutdown(
    pool_settings: PoolSettings,
    base_image: str,
    nopython_image: str,
    docker_host: str,
) -> None:
    services = await PoolServices.open(pool_settings)
    try:
        results = await asyncio.gather(
            services.dispatcher.execute(make_task(base_image, command="echo 1", pool={"min_size": 2})),
            services.dispatcher.execute(make_task(nopython_image, command="echo 1")),
            services.dispatcher.execute(make_task(base_image, command="echo 1", mode="cold")),
        )
        assert all(r.ok for r in results), results
        busy = asyncio.create_task(services.dispatcher.execute(make_task(base_image, command="sleep 30")))
        await asyncio.sleep(0.5)
        assert service_containers(docker_host, pool_settings.service_id)
    finally:
        await services.close()
    result = await asyncio.wait_for(busy, 10)
    assert not result.ok
    assert service_containers(docker_host, pool_settings.service_id) == []
