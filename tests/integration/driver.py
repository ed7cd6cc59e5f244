"""Playing the worker's part against real Redis: claim a queued task and commit its result through the
same store transactions the worker uses (no pool, no Docker), so gateway tests can move workflows on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from flowcore import engine
from flowcore.engine import EngineEnv
from flowcore.keyspace import Keyspace
from flowcore.logstream import LogLine
from flowcore.pool_api import DispatchMode, ErrorKind, TaskError, TaskResult, TaskTimings
from flowcore.store import WorkflowStore


def ok(container: str = "c-warm", *, pooled: bool = True, output: Any = None, **extra: Any) -> TaskResult:
    return TaskResult(
        task_id="t", ok=True, exit_code=0, output=output, container_id=container, pooled=pooled,
        mode=DispatchMode.AGENT if pooled else DispatchMode.COLD,
        timings=TaskTimings(acquire_ms=1.0 if pooled else 0.0, exec_ms=20.0), **extra,
    )


def failed(message: str = "exited with code 3", container: str = "c-warm", pooled: bool = True) -> TaskResult:
    return TaskResult(
        task_id="t", ok=False, exit_code=3, container_id=container, pooled=pooled,
        mode=DispatchMode.AGENT if pooled else DispatchMode.COLD,
        error=TaskError(kind=ErrorKind.EXIT_CODE, message=message), timings=TaskTimings(exec_ms=5.0),
    )


class Worker:
    def __init__(self, redis: Redis, keys: Keyspace | None = None) -> None:
        self.keys = keys or Keyspace()
        self.redis = redis
        self.store = WorkflowStore(redis, self.keys)

    async def token(self, wf_id: str, step_id: str, index: int = 0) -> str:
        snap = await self.store.load(wf_id)
        return snap.tasks[f"{step_id}:{index}"].token

    async def claim(self, wf_id: str, step_id: str, index: int = 0) -> str:
        token = await self.token(wf_id, step_id, index)
        plan = await self.store.transact(wf_id, lambda s: engine.claim(s, EngineEnv(), step_id, index, token))
        assert plan.request is not None, f"{step_id}[{index}] was not claimable"
        return token

    async def complete(self, wf_id: str, step_id: str, token: str, result: TaskResult, index: int = 0) -> None:
        await self.store.transact(wf_id, lambda s: engine.complete(s, EngineEnv(), step_id, index, token, result))

    async def run(self, wf_id: str, step_id: str, result: TaskResult, index: int = 0, logs: Sequence[str] = ()) -> None:
        token = await self.claim(wf_id, step_id, index)
        snap = await self.store.load(wf_id)
        attempt = snap.tasks[f"{step_id}:{index}"].attempt
        for line in logs:  # as the pool does: lines first, then the result
            entry = LogLine(step_id=step_id, index=index, attempt=attempt, stream="stdout", line=line, ts=0.0)
            await self.redis.xadd(self.keys.logs(wf_id), entry.to_fields())
        await self.complete(wf_id, step_id, token, result, index)
