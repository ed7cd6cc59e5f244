"""Dispatch mode ``cold``: a one-shot container per task (the baseline that always works, and the
fallback when a pool stays exhausted). Images with python3 run the task through a one-shot agent (the
same contract as warm ones, :mod:`pool.mode_agent`); others run the wrapped command as the container's
own process. A cleanup policy ``keep`` keeps either kind instead of removing it (ADR 014): the agent's
paused, the command's exited.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time

from redis.exceptions import RedisError

from flowcore.errors import FlowError, ImageNotFound
from flowcore.pool_api import DispatchMode, ErrorKind, TaskRequest, TaskResult, TaskTimings
from pool import cleanup, contract
from pool.containers import PooledContainer, safe_name, scratch_mounts
from pool.kept import Keeper
from pool.keys import PoolKey, key_for
from pool.manager import PoolManager
from pool.mode_agent import run_agent
from pool.records import ContainerRecorder
from pool.runtime import LABEL_STEP, LABEL_TASK, LABEL_WORKFLOW, ContainerSpec
from pool.taskrun import Running, cancelled_result, cleanup_action, failed, now_iso, record, task_result

log = logging.getLogger(__name__)


class ColdRunner:
    def __init__(self, manager: PoolManager, keeper: Keeper | None, recorder: ContainerRecorder | None) -> None:
        self.manager = manager
        self.runtime = manager.runtime
        self.settings = manager.settings
        self.keeper = keeper
        self.recorder = recorder

    async def run(self, request: TaskRequest, running: Running, *, pool_key: str | None) -> TaskResult:
        """Create, start, run, remove (or keep) a one-shot container for ``request``."""
        started = time.perf_counter()
        container_id: str | None = None
        if await self._has_python(request.image):
            key = key_for(request, "agent", self.settings)
            async with self.manager.oneshot_slot():
                try:
                    container = await self.manager.factory.create(key, kind="oneshot")
                except FlowError as exc:
                    return failed(request, ErrorKind.RUNTIME, exc.message, mode=DispatchMode.COLD)
                running.container = container
                kept = False
                try:
                    raw = await run_agent(self.runtime, request, container, running,
                                          grace_s=self.settings.task_grace_s, may_keep=self.keeper is not None)
                    kept = await self._keep(request, raw, container_id=container.container_id,
                                            name=container.name, key=key, agent=container)
                finally:
                    if not kept:
                        await self.manager.factory.destroy(container)
            container_id = container.container_id
        elif request.function is not None:
            return failed(request, ErrorKind.RUNTIME,
                          f"function steps need python3 in the image; {request.image} has none")
        else:
            raw, container_id = await self._command(request, running)
        exec_ms = (time.perf_counter() - started) * 1000
        result = task_result(request, raw, mode=DispatchMode.COLD, pooled=False, container_id=container_id,
                             pool_key=pool_key)
        result.timings = TaskTimings(acquire_ms=0.0, exec_ms=round(exec_ms, 3))
        result.pool_hit = False
        self.manager.cold_stats.record_task(exec_ms, result.ok)
        record(self.recorder, request, result, started=started, finished_at=now_iso())
        return result

    async def _has_python(self, image: str) -> bool:
        try:
            return await self.manager.has_python(image)
        except FlowError:
            return False

    async def _command(self, request: TaskRequest, running: Running) -> tuple[contract.RawOutcome, str | None]:
        """The wrapped command as a one-shot container's own process (images without python3)."""
        assert request.command is not None
        too_large = contract.input_too_large(request)
        if too_large is not None:
            return contract.RawOutcome(exit_code=None, output_error=too_large), None
        key = key_for(request, "exec", self.settings)
        name = f"flow-{safe_name(self.settings.service_id)}-t{secrets.token_hex(6)}"
        running.oneshot_name = name
        labels = {
            **self.manager.factory.base_labels("oneshot"),
            LABEL_WORKFLOW: request.workflow_id,
            LABEL_STEP: request.step_id,
            LABEL_TASK: request.task_id[:200],
        }
        spec = ContainerSpec(
            image=request.image,
            entrypoint=contract.task_wrapped(contract.command_argv(request.command), "task"),
            command=[],
            env=contract.wrapped_env(request),
            labels=labels,
            network=key.network,
            cpu=key.cpu,
            memory_mb=key.memory_mb,
            pids=key.pids,
            workdir=request.workdir or "/",
            name=name,
            user=key.user,
            read_only_root=key.read_only_root,
            tmpfs=scratch_mounts(key, tasks_mode="1777"),
        )
        if running.cancelled:
            return contract.RawOutcome(exit_code=None, cancelled=True), None
        may_keep = self.keeper is not None and any(cleanup.may_keep(request.cleanup))
        run = self.runtime.run_once_keep if may_keep else self.runtime.run_once
        try:
            async with self.manager.oneshot_slot():
                res = await run(spec, request.timeout_s, running.log.feed if running.log is not None else None)
        except ImageNotFound:
            raise
        except FlowError as exc:
            return contract.RawOutcome(exit_code=None, lost=exc.message, cancelled=running.is_cancelled()), None
        raw = contract.RawOutcome(
            exit_code=res.exit_code,
            stdout=res.stdout.decode(errors="replace"),
            log_tail=res.combined_tail.decode(errors="replace"),
            timed_out=res.timed_out,
            oom=res.oom_killed and not res.timed_out,
            cancelled=running.cancelled,
            stdout_truncated=res.stdout_truncated,
        )
        if may_keep and res.container_id is not None:
            kept = await self._keep(request, raw, container_id=res.container_id, name=name, key=key)
            if not kept:
                with contextlib.suppress(FlowError):
                    await self.runtime.remove(res.container_id)
        return raw, res.container_id

    async def _keep(
        self, request: TaskRequest, raw: contract.RawOutcome, *, container_id: str, name: str, key: PoolKey,
        agent: PooledContainer | None = None,
    ) -> bool:
        """Keep a one-shot container when the cleanup policy says so (ADR 014); False: the caller removes it."""
        if self.keeper is None:
            return False
        result = task_result(request, raw, mode=DispatchMode.COLD, pooled=False, container_id=container_id,
                             pool_key=key.hash)
        if cleanup_action(request, self.keeper, ok=result.ok, cancelled=cancelled_result(result)) != "keep":
            return False
        try:
            if agent is not None:
                await self.keeper.keep(agent, request, result)
            else:
                await self.keeper.keep_exited(container_id, name, key, request, result)
        except (FlowError, RedisError) as exc:
            log.warning("cannot keep one-shot container %s: %s; removing it", container_id[:12], exc)
            return False
        return True
