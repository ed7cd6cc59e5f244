"""Run one task: choose the dispatch mode, get a container, apply the step contract, time it.

- ``agent``: a warm container's agent runs the task (command as a child process, or a function):
  :mod:`pool.mode_agent`.
- ``exec``: a warm container, ``docker exec`` per task (images without python3): :mod:`pool.mode_exec`.
- ``cold``: a one-shot container per task (also the fallback when a pool stays exhausted):
  :mod:`pool.mode_cold`.
- ``auto``: agent when the image has python3 (probed once per image), else exec.

This module decides and keeps the books (the tasks in flight, supersession, cancel, the cleanup policy
after a warm task, the container records); each mode runs a task its own way and reports a
:class:`~pool.contract.RawOutcome`, which :func:`pool.taskrun.task_result` turns into the result.

While a task runs, its output lines go to the workflow's log stream (:mod:`pool.tasklogs`); those
not appended yet when it ends travel in the result, for the worker to append with the completion.
Its CPU time and peak memory come from the agent (rusage) or, for exec and cold runs, from the
container's cgroup counters (:func:`pool.contract.parse_usage`).

The step's own failure is data (a :class:`TaskResult` with ``ok=False``); only a malformed request
(:class:`~flowcore.errors.InvalidInput`), a duplicate task id (:class:`~flowcore.errors.Conflict`)
or an exhausted pool with ``on_exhausted="error"`` raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.exceptions import RedisError

from flowcore.errors import Conflict, FlowError, ImageNotFound, InvalidInput, NotFound
from flowcore.pool_api import DispatchMode, ErrorKind, TaskRequest, TaskResult, TaskTimings
from flowcore.secretrefs import Redactor, redact_result
from flowcore.tracing_spans import record_acquire
from pool import contract, sizing
from pool.containers import PooledContainer
from pool.errors import PoolWaitTimeout
from pool.kept import Keeper
from pool.keys import Kind, key_for, resolve_policy
from pool.manager import PoolManager
from pool.mode_agent import run_agent
from pool.mode_cold import ColdRunner
from pool.mode_exec import run_exec
from pool.records import ContainerRecorder
from pool.tasklogs import LogShipper
from pool.taskrun import Running, cancelled_result, cleanup_action, failed, now_iso, record, task_result
from pool.warm import WarmPool

log = logging.getLogger(__name__)

SUPERSEDE_WAIT_S = 10.0  # how long a newer dispatch waits for the older execution to stop


class Dispatcher:
    def __init__(
        self,
        manager: PoolManager,
        recorder: ContainerRecorder | None = None,
        logs: LogShipper | None = None,
        keeper: Keeper | None = None,
    ) -> None:
        self.manager = manager
        self.keeper = keeper  # cleanup policy keep (ADR 014); without one, keep means remove
        self.runtime = manager.runtime
        self.settings = manager.settings
        self.recorder = recorder
        self.logs = logs
        self.running: dict[str, Running] = {}
        self.cold = ColdRunner(manager, keeper, recorder)

    # ------------------------------------------------------------------ entry points
    async def execute(self, request: TaskRequest) -> TaskResult:
        if request.command is None and request.function is None:
            raise InvalidInput("a task needs a command or a function", field="command")
        if request.command is not None and request.function is not None:
            raise InvalidInput("a task has either a command or a function, not both", field="function")
        if request.command is not None and len(request.command) == 0:
            raise InvalidInput("command must not be empty", field="command")
        if request.function is not None and request.mode == DispatchMode.EXEC:
            raise InvalidInput("function steps need the agent: use mode auto, agent or cold", field="mode")
        resolve_policy(request, self.settings)  # refused asks answer 422 before any container starts
        if request.task_id in self.running:
            raise Conflict(f"task {request.task_id!r} is already running", field="task_id")
        # A newer dispatch of the same task (its attempt taken over by another worker) supersedes
        # the older execution here: it is stopped before the new one starts.
        slot = request.execution_key
        for older in [r for r in self.running.values() if slot is not None and r.slot == slot]:
            log.warning("task %s supersedes %s (the same task, dispatched again)", request.task_id, older.task_id)
            await self.cancel(older.task_id, reason=f"superseded by {request.task_id}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(older.done.wait(), SUPERSEDE_WAIT_S)
        running = Running(request.task_id, function=request.function is not None, slot=slot)
        if self.logs is not None:
            running.log = self.logs.task(request)
        self.running[request.task_id] = running
        started = time.perf_counter()
        try:
            result = await self._execute(request, running)
            if running.log is not None:
                result.logs = running.log.take_final()  # the worker appends them with the completion
                await running.log.finish()
            result = redact_result(result, Redactor(request.redact))  # the task's secrets, masked
        finally:
            self.running.pop(request.task_id, None)
            running.done.set()
        if running.cancel_reason and result.error is not None and result.error.kind == ErrorKind.CANCELLED:
            result.error.message = f"cancelled: {running.cancel_reason}"
        result.timings.total_ms = round((time.perf_counter() - started) * 1000, 3)
        result.pool_service = self.settings.service_id
        return result

    async def cancel(self, task_id: str, reason: str = "the task was cancelled") -> None:
        """Kill a running task; its own request answers ``cancelled``."""
        running = self.running.get(task_id)
        if running is None:
            raise NotFound(f"task {task_id!r} is not running here", field="task_id")
        running.cancelled = True
        running.cancel_reason = reason
        container = running.container
        if container is not None:
            if container.channel is not None and not running.function:
                container.channel.cancel(task_id)
            else:
                container.broken = True
                await self.runtime.kill(container.container_id)
        elif running.oneshot_name is not None:
            await self.runtime.kill(running.oneshot_name)

    # ------------------------------------------------------------------ modes
    async def _execute(self, request: TaskRequest, running: Running) -> TaskResult:
        try:
            await self.manager.ensure_image(request.image)
            mode = await self._resolve(request)
        except ImageNotFound:
            return failed(request, ErrorKind.IMAGE_NOT_FOUND, f"image not found: {request.image}")
        except FlowError as exc:
            if isinstance(exc, InvalidInput):
                raise
            return failed(request, ErrorKind.RUNTIME, exc.message)
        if mode == DispatchMode.COLD:
            self.manager.cold_stats.cold_starts += 1
            return await self.cold.run(request, running, pool_key=None)
        kind: Kind = "agent" if mode == DispatchMode.AGENT else "exec"
        key = key_for(request, kind, self.settings)
        pool = self.manager.pool_for(key, request.pool)
        try:
            lease = await pool.acquire(self.settings.acquire_timeout_s)
        except PoolWaitTimeout:
            if sizing.exhausted_action(self.settings.on_exhausted) == "error":
                raise
            pool.stats.cold_starts += 1
            return await self.cold.run(request, running, pool_key=key.hash)
        except FlowError as exc:
            return failed(request, ErrorKind.RUNTIME, exc.message, pool_key=key.hash, mode=mode)
        container = lease.container
        record_acquire(request, key.hash, hit=lease.hit, waited=lease.waited, acquire_ms=lease.acquire_ms)
        running.container = container
        exec_started = time.perf_counter()
        finished_at = ""
        try:
            if running.cancelled:
                raw = contract.RawOutcome(exit_code=None, cancelled=True)
            elif kind == "agent":
                raw = await run_agent(self.runtime, request, container, running,
                                      grace_s=self.settings.task_grace_s, may_keep=self.keeper is not None)
            else:
                raw = await run_exec(self.runtime, request, container, running, keeps=lambda raw: self._keeps(request, raw))
            finished_at = now_iso()
        except BaseException:
            pool.release(container)
            raise
        exec_ms = (time.perf_counter() - exec_started) * 1000
        result = task_result(request, raw, mode=mode, pooled=True, container_id=container.container_id,
                             pool_key=key.hash)
        await self._after_task(pool, container, request, result)
        result.timings = TaskTimings(acquire_ms=round(lease.acquire_ms, 3), exec_ms=round(exec_ms, 3))
        result.pool_hit = lease.hit
        pool.stats.record_task(exec_ms, result.ok)
        record(self.recorder, request, result, started=exec_started, finished_at=finished_at)
        return result

    def _keeps(self, request: TaskRequest, raw: contract.RawOutcome) -> bool:
        """Whether an exec task's container will be kept (then its processes and files stay, frozen)."""
        ok = contract.build_outcome(request, raw, request.timeout_s).ok
        return cleanup_action(request, self.keeper, ok=ok, cancelled=False) == "keep"

    async def _after_task(self, pool: WarmPool, container: PooledContainer, request: TaskRequest,
                          result: TaskResult) -> None:
        """Return the container to its pool, remove it, or keep it quarantined (ADR 014)."""
        action = cleanup_action(request, self.keeper, ok=result.ok, cancelled=cancelled_result(result))
        if action == "keep" and self.keeper is not None and pool.quarantine(container):
            try:
                await self.keeper.keep(container, request, result)
            except (FlowError, RedisError) as exc:
                log.warning("cannot keep container %s: %s; removing it", container.short_id, exc)
                await self.manager.factory.destroy(container)
            return
        if action != "return":
            container.broken = True  # release() removes it and starts what the pool now lacks
        pool.release(container)

    async def _resolve(self, request: TaskRequest) -> DispatchMode:
        mode = request.mode
        if mode in (DispatchMode.COLD, DispatchMode.EXEC):
            return mode
        has_python = await self.manager.has_python(request.image)
        if mode == DispatchMode.AUTO:
            mode = DispatchMode.AGENT if has_python else DispatchMode.EXEC
        if mode == DispatchMode.AGENT and not has_python:
            raise FlowError(
                f"image {request.image} has no python3: the agent cannot run there (use mode exec)"
            )
        if request.function is not None and mode != DispatchMode.AGENT:
            raise FlowError(f"function steps need python3 in the image; {request.image} has none")
        return mode
