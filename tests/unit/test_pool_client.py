"""The worker's pool client turns transport failures into task errors the engine understands."""

from __future__ import annotations

import socket

from flowcore.pool_api import ErrorKind, TaskRequest
from workers.pool_client import PoolClient


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_pool_is_pool_unavailable_not_a_step_failure() -> None:
    client = PoolClient()
    request = TaskRequest(task_id="t", workflow_id="w", step_id="s", image="i", command="true")
    try:
        result = await client.execute(f"http://127.0.0.1:{closed_port()}", request)
    finally:
        await client.aclose()
    assert not result.ok and result.error is not None
    assert result.error.kind == ErrorKind.POOL_UNAVAILABLE and "unreachable" in result.error.message
