"""Fixtures of the pool service's integration tests (import them explicitly in test modules).

They build on tests/conftest.py's ``redis_url``, ``docker_host``, ``base_image`` and
``test_labels``. Every test gets its own ``service_id`` (so its containers carry a unique
``io.agentainer.flow.service`` label), its own random pool token (``pool_headers`` authenticates
to the pool API with it) and a short work dir (unix socket paths hold 108 bytes); teardown removes
whatever still carries the label.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from flowcore.pool_api import TaskRequest
from flowcore.settings import PoolSettings, RedisSection
from pool.app import create_app
from pool.runtime import LABEL_SERVICE
from pool.services import PoolServices
from tests.ports import free_port

NOPYTHON_IMAGE = "agentainer-flow/nopython:test"
_ids = itertools.count()


def docker_cli(docker_host: str, *args: str, input_text: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        ["docker", *args],
        env={**os.environ, "DOCKER_HOST": docker_host},
        capture_output=True,
        text=True,
        input=input_text,
        timeout=300,
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed: {result.stderr}")
    return result.stdout


def service_containers(docker_host: str, service_id: str) -> list[str]:
    return docker_cli(docker_host, "ps", "-aq", "--filter", f"label={LABEL_SERVICE}={service_id}").split()


@pytest.fixture(scope="session")
def nopython_image(base_image: str, docker_host: str) -> str:
    """The base image without python3: only ``docker exec`` can drive it."""
    if not docker_cli(docker_host, "images", "-q", NOPYTHON_IMAGE).strip():
        dockerfile = f"FROM {base_image}\nRUN rm -f /usr/bin/python3* /usr/local/bin/python3*\n"
        docker_cli(
            docker_host,
            "build",
            "--network",
            "none",
            "--force-rm",
            "-t",
            NOPYTHON_IMAGE,
            "-",
            input_text=dockerfile,
        )
    return NOPYTHON_IMAGE


@pytest.fixture
def work_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="fp", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pool_settings(
    redis_url: str, docker_host: str, base_image: str, test_labels: dict[str, str], work_dir: str
) -> Iterator[PoolSettings]:
    settings = PoolSettings(
        service_id=f"t-{uuid.uuid4().hex[:10]}",
        docker_host=docker_host,
        work_dir=work_dir,
        redis=RedisSection(url=redis_url, prefix="flow"),
        default_image=base_image,
        health_interval_s=0.3,
        heartbeat_s=0.2,
        acquire_timeout_s=5.0,
        agent_start_timeout_s=20.0,
        task_grace_s=3.0,
        extra_labels=dict(test_labels),
        pool_token=SecretStr(f"test-pool-token-{uuid.uuid4().hex}"),
    )
    yield settings
    leftover = service_containers(docker_host, settings.service_id)
    if leftover:
        docker_cli(docker_host, "rm", "-f", *leftover, check=False)


@contextlib.asynccontextmanager
async def running_pool(settings: PoolSettings) -> AsyncIterator[PoolServices]:
    """The pool service's parts, opened in-process and closed after."""
    services = await PoolServices.open(settings)
    try:
        yield services
    finally:
        await services.close()


@pytest.fixture
async def pool(pool_settings: PoolSettings) -> AsyncIterator[PoolServices]:
    async with running_pool(pool_settings) as services:
        yield services


@pytest.fixture
def keep_settings(pool_settings: PoolSettings) -> PoolSettings:
    """A pool that sweeps its kept containers (cleanup policy keep) five times a second."""
    pool_settings.kept_sweep_s = 0.2
    return pool_settings


@contextlib.asynccontextmanager
async def served(settings: PoolSettings) -> AsyncIterator[str]:
    """The pool app under uvicorn on a free loopback port (real HTTP, real lifespan); its base URL."""
    settings = settings.model_copy(update={"port": free_port()})
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        await task


def pool_headers(settings: PoolSettings) -> dict[str, str]:
    """What the workers and the gateway send: ``Authorization: Bearer <pool token>``."""
    return {"Authorization": f"Bearer {settings.pool_token.get_secret_value()}"}


def make_task(image: str, **fields: Any) -> TaskRequest:
    n = next(_ids)
    data: dict[str, Any] = {
        "task_id": f"task-{uuid.uuid4().hex[:8]}-{n}",
        "workflow_id": "wf-test",
        "step_id": "step",
        "image": image,
    }
    data.update(fields)
    return TaskRequest.model_validate(data)


__all__ = [
    "NOPYTHON_IMAGE",
    "docker_cli",
    "keep_settings",
    "make_task",
    "nopython_image",
    "pool",
    "pool_headers",
    "pool_settings",
    "running_pool",
    "served",
    "service_containers",
    "work_dir",
]


@pytest.fixture
async def client(pool_settings: PoolSettings) -> AsyncIterator[httpx.AsyncClient]:
    """The pool app in-process (real lifespan, real engine and Redis) behind an httpx client."""
    app = create_app(pool_settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://pool", headers=pool_headers(pool_settings)) as c,
    ):
        yield c


async def eventually(predicate: Callable[[], Any], timeout_s: float = 20.0, what: str = "condition") -> Any:
    """The first truthy value of ``predicate()`` (awaited when it returns a coroutine), polled every 0.1 s;
    AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
