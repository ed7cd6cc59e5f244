"""An execution nobody can commit any more is stopped in its container (issue 12).

Two ways a task's execution is orphaned: the worker waiting on it dies (or gives up), or its
attempt is taken over and dispatched again. Either way the pool stops the old execution in its
container, instead of letting it run on beside the new attempt (a second writer of the same
step's effects).
"""

# ruff: noqa: F811  (pytest fixtures imported from tests.pool_fixtures are parameters here)

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from flowcore.pool_api import DispatchMode, ErrorKind
from flowcore.settings import PoolSettings
from pool.app import create_app
from pool.services import PoolServices
from tests.pool_fixtures import make_task, pool, pool_headers, pool_settings, work_dir  # noqa: F401
from tests.ports import free_port

AGENT = DispatchMode.AGENT


@contextlib.asynccontextmanager
async def served(settings: PoolSettings) -> AsyncIterator[tuple[str, Starlette]]:
    settings = settings.model_copy(update={"port": free_port()})
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{settings.port}", app
    finally:
        server.should_exit = True
        await task


async def wait_until(predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


async def test_a_task_whose_caller_went_away_is_stopped(pool_settings: PoolSettings, base_image: str) -> None:
    async with served(pool_settings) as (url, app), httpx.AsyncClient(
        base_url=url, headers=pool_headers(pool_settings), timeout=120
    ) as client:
        services: PoolServices = app.state.services
        body = make_task(base_image, command="sleep 60", mode=AGENT, workflow_id="wf-orphan").model_dump(mode="json")
        request = asyncio.create_task(client.post("/v1/tasks", json=body))
        await wait_until(lambda: body["task_id"] in services.dispatcher.running)
        started = time.monotonic()
        request.cancel()  # the worker dies: its connection closes
        with contextlib.suppress(asyncio.CancelledError):
            await request
        await wait_until(lambda: body["task_id"] not in services.dispatcher.running)
        assert time.monotonic() - started < 30, "the task ran on after its caller left"
        # Nothing of it is left in its container: the next task there sees no sleeping process.
        follow = make_task(base_image, command="ps -eo args | grep -c '^sleep 60' || true", mode=AGENT,
                           workflow_id="wf-orphan")
        after = (await client.post("/v1/tasks", json=follow.model_dump(mode="json"))).json()
        assert after["ok"] and after["output"] == 0, after


async def test_a_newer_dispatch_of_the_same_task_stops_the_older(pool: PoolServices, base_image: str) -> None:
    key = "wf-take/s/3"  # what the engine sends: workflow/step/index
    older = make_task(base_image, command="sleep 60; echo 1", mode=AGENT, workflow_id="wf-take", execution_key=key)
    first = asyncio.create_task(pool.dispatcher.execute(older))
    await wait_until(lambda: older.task_id in pool.dispatcher.running)
    newer = make_task(base_image, command="echo 2", mode=AGENT, workflow_id="wf-take", execution_key=key)
    other_item = make_task(base_image, command="sleep 1; echo 3", mode=AGENT, workflow_id="wf-take",
                           execution_key="wf-take/s/4")
    no_key = make_task(base_image, command="sleep 1; echo 4", mode=AGENT, workflow_id="wf-take")
    third = asyncio.create_task(pool.dispatcher.execute(other_item))
    fourth = asyncio.create_task(pool.dispatcher.execute(no_key))
    result = await pool.dispatcher.execute(newer)
    assert result.ok and result.output == 2
    stopped = await asyncio.wait_for(first, 30)
    assert not stopped.ok and stopped.error is not None and stopped.error.kind == ErrorKind.CANCELLED
    assert stopped.error.message == f"cancelled: superseded by {newer.task_id}"
    # Another item of the same step is another task, and a task without a key is nobody's: they run on.
    assert (await third).output == 3 and (await fourth).output == 4
