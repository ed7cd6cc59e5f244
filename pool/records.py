"""Which containers served a workflow: ``keys.containers(workflow_id)`` (the API's "jobs").

Each task's container is written as ``container id -> JSON`` in the background, off the hot path;
a pooled container that serves several tasks of a workflow keeps its latest task's entry.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from flowcore.keyspace import Keyspace
from flowcore.pool_api import TaskRequest, TaskResult
from pool.redisio import aw as _aw

log = logging.getLogger(__name__)


def container_record(
    request: TaskRequest, result: TaskResult, *, started_at: str, finished_at: str
) -> dict[str, Any]:
    return {
        "container_id": result.container_id,
        "task_id": request.task_id,
        "step_id": request.step_id,
        "index": request.index,
        "attempt": request.attempt,
        "pooled": result.pooled,
        "mode": result.mode.value,
        "image": request.image,
        "started_at": started_at,
        "finished_at": finished_at,
        "status": "succeeded" if result.ok else "failed",
        "error": result.error.kind.value if result.error is not None else None,
        "pool_service": result.pool_service,
    }


class ContainerRecorder:
    def __init__(self, redis: Redis, keys: Keyspace) -> None:
        self._redis = redis
        self._keys = keys
        self._pending: set[asyncio.Task[None]] = set()

    def record(self, request: TaskRequest, result: TaskResult, *, started_at: str, finished_at: str) -> None:
        record = container_record(request, result, started_at=started_at, finished_at=finished_at)
        task = asyncio.create_task(self._write(request.workflow_id, record))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, workflow_id: str, record: dict[str, Any]) -> None:
        try:
            await _aw(
                self._redis.hset(
                    self._keys.containers(workflow_id), str(record["container_id"]), json.dumps(record)
                )
            )
        except RedisError as exc:
            log.warning(
                "cannot record container %s of workflow %s: %s", record["container_id"], workflow_id, exc
            )

    async def flush(self) -> None:
        """Wait for the writes in flight (tests, shutdown)."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
