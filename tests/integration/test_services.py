"""The session fixtures give real services: redis answers, the engine runs the base image."""

from __future__ import annotations

import uuid

import aiodocker
import redis.asyncio as aioredis


async def test_redis_answers_ping(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        assert await client.ping() is True
        await client.set("fixture-check", "1")
        assert await client.get("fixture-check") == b"1"
    finally:
        await client.aclose()


async def test_redis_url_is_flushed_between_tests(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        assert await client.dbsize() == 0
    finally:
        await client.aclose()


async def test_engine_runs_base_image_without_network(
    docker_host: str, base_image: str, test_labels: dict[str, str]
) -> None:
    async with aiodocker.Docker(url=docker_host) as docker:
        info = await docker.system.info()
        assert info["ServerVersion"]
        container = await docker.containers.create(
            {
                "Image": base_image,
                "Cmd": ["python3", "-c", "print(1)"],
                "Labels": test_labels,
                "HostConfig": {"NetworkMode": "none"},
            },
            name=f"flow-test-services-{uuid.uuid4().hex[:8]}",
        )
        try:
            await container.start()
            result = await container.wait(timeout=60)
            logs = await container.log(stdout=True, stderr=True)
            assert result["StatusCode"] == 0, logs
            assert "".join(logs).strip() == "1"
        finally:
            await container.delete(force=True)
