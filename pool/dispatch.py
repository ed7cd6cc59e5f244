"""Run one task: choose the dispatch mode, get a container, apply the step contract, time it.

- ``agent``: a warm container's agent runs the task (command as a child process, or a function).
- ``exec``: a warm container, ``docker exec`` per task (images without python3).
- ``cold``: a one-shot container per task (also the fallback when a pool stays exhausted).
- ``auto``: agent when the image has python3 (probed once per image), else exec.

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
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from flowcore import limits
from flowcore.errors import Conflict, FlowError, ImageNotFound, InvalidInput, NotFound
from flowcore.pool_api import DispatchMode, ErrorKind, TaskError, TaskRequest, TaskResult, TaskTimings
from flowcore.secretrefs import Redactor, redact_result
from flowcore.tracing_spans import record_acquire
from pool import cleanup, contract, sizing
from pool.containers import PooledContainer, safe_name, scratch_mounts
from pool.errors import ChannelClosed, PoolWaitTimeout
from pool.kept import Keeper
from pool.keys import Kind, PoolKey, key_for, resolve_policy
from pool.manager import PoolManager
from pool.records import ContainerRecorder
from pool.runtime import LABEL_STEP, LABEL_TASK, LABEL_WORKFLOW, ContainerSpec
from pool.tasklogs import LogShipper, TaskLog
from pool.warm import WarmPool

log = logging.getLogger(__name__)

LOST_VERDICT_S = 3.0  # how long a lost container is watched for the engine's OOM verdict
SUPERSEDE_WAIT_S = 10.0  # how long a newer dispatch waits for the older execution to stop

@dataclass
class Running:
    """A task in flight, so that ``DELETE /v1/tasks/{id}`` can reach it."""

    task_id: str
    cancelled: bool = False
    container: PooledContainer | None = None
    oneshot_name: str | None = None
    function: bool = False
    log: TaskLog | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    slot: str | None = None  # the request's execution_key: one execution each
    cancel_reason: str = ""

    def is_cancelled(self) -> bool:
        """Read anew after an await (a cancel may have come in meanwhile)."""
        return self.cancelled


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
            return self._failed(request, ErrorKind.IMAGE_NOT_FOUND, f"image not found: {request.image}")
        except FlowError as exc:
            if isinstance(exc, InvalidInput):
                raise
            return self._failed(request, ErrorKind.RUNTIME, exc.message)
        if mode == DispatchMode.COLD:
            self.manager.cold_stats.cold_starts += 1
            return await self._cold(request, running, pool_key=None)
        kind: Kind = "agent" if mode == DispatchMode.AGENT else "exec"
        key = key_for(request, kind, self.settings)
        pool = self.manager.pool_for(key, request.pool)
        try:
            lease = await pool.acquire(self.settings.acquire_timeout_s)
        except PoolWaitTimeout:
            if sizing.exhausted_action(self.settings.on_exhausted) == "error":
                raise
            pool.stats.cold_starts += 1
            return await self._cold(request, running, pool_key=key.hash)
        except FlowError as exc:
            return self._failed(request, ErrorKind.RUNTIME, exc.message, pool_key=key.hash, mode=mode)
        container = lease.container
        record_acquire(request, key.hash, hit=lease.hit, waited=lease.waited, acquire_ms=lease.acquire_ms)
        running.container = container
        exec_started = time.perf_counter()
        finished_at = ""
        try:
            if running.cancelled:
                raw = contract.RawOutcome(exit_code=None, cancelled=True)
            elif kind == "agent":
                raw = await self._run_agent(request, container, running)
            else:
                raw = await self._run_exec(request, container, running)
            finished_at = _now_iso()
        except BaseException:
            pool.release(container)
            raise
        exec_ms = (time.perf_counter() - exec_started) * 1000
        result = self._result(
            request, raw, mode=mode, pooled=True, container_id=container.container_id, pool_key=key.hash
        )
        await self._after_task(pool, container, request, result)
        result.timings = TaskTimings(acquire_ms=round(lease.acquire_ms, 3), exec_ms=round(exec_ms, 3))
        result.pool_hit = lease.hit
        pool.stats.record_task(exec_ms, result.ok)
        self._record(request, result, started_ms=exec_started, finished_at=finished_at)
        return result

    def _action(self, request: TaskRequest, ok: bool, cancelled: bool) -> cleanup.Action:
        """The cleanup policy's verdict; a cancelled task's container is never kept (nobody asked why)."""
        action = cleanup.after_task(request.cleanup, ok=ok)
        if action == "keep" and (self.keeper is None or cancelled):
            return "remove"
        return action

    async def _after_task(self, pool: WarmPool, container: PooledContainer, request: TaskRequest,
                          result: TaskResult) -> None:
        """Return the container to its pool, remove it, or keep it quarantined (ADR 014)."""
        cancelled = result.error is not None and result.error.kind == ErrorKind.CANCELLED
        action = self._action(request, result.ok, cancelled)
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

    async def _run_agent(
        self, request: TaskRequest, container: PooledContainer, running: Running
    ) -> contract.RawOutcome:
        assert container.channel is not None
        message: dict[str, Any] = {
            "id": request.task_id,
            "env": contract.task_env(request),
            "cwd": request.workdir,
            "timeout_s": request.timeout_s,
            "user": container.key.user,
            # FLOW_LIMITS__*: its output files and function result, its stdout, its live log
            "max_file_bytes": limits.current().max_output_bytes,
            "max_stdout_bytes": limits.current().max_output_bytes,
            "max_log_bytes": limits.current().max_log_bytes,
        }
        on_success, on_failure = cleanup.may_keep(request.cleanup)
        if self.keeper is not None and (on_success or on_failure):
            message["keep_files"] = {"success": on_success, "failure": on_failure}
        if request.function is not None:
            message["kind"] = "function"
            message["function"] = request.function.model_dump()
            message["ctx"] = {
                "workflow_id": request.workflow_id,
                "step_id": request.step_id,
                "task_id": request.task_id,
                "index": request.index,
                "attempt": request.attempt,
                "input": request.input,
                "traceparent": request.traceparent,
            }
        else:
            assert request.command is not None
            message["kind"] = "command"
            message["argv"] = contract.command_argv(request.command)
            message["input"] = request.input
        backstop = request.timeout_s + self.settings.task_grace_s if request.timeout_s else None
        try:
            on_log = running.log.agent_lines if running.log is not None else None
            reply = await asyncio.wait_for(container.channel.run(message, request.workflow_id, on_log, Redactor(request.redact)), backstop)
        except TimeoutError:
            container.broken = True
            await self.runtime.kill(container.container_id)
            return contract.RawOutcome(exit_code=None, timed_out=True, log_tail="(the agent did not answer)")
        except ChannelClosed as exc:
            container.broken = True
            return await self._lost(container, running, exc.message)
        # Everything in the reply is data from inside a container: typed here, never trusted.
        raw = contract.RawOutcome(
            exit_code=_int_or_none(reply.get("exit_code")),
            stdout=_text(reply.get("stdout")),
            log_tail=_text(reply.get("log_tail")),
            timed_out=reply.get("timed_out") is True,
            oom=reply.get("oom") is True,
            cancelled=reply.get("cancelled") is True or running.cancelled,
            function=request.function is not None,
            function_error=_text_or_none(reply.get("error")),
            function_output=reply.get("output"),
            has_function_output=reply.get("has_output") is True,
            output_error=_text_or_none(reply.get("output_error")) or _text_or_none(reply.get("file_error")),
            stdout_truncated=reply.get("stdout_truncated") is True,
            output_file=_text_or_none(reply.get("output_file")),
            state_file=_text_or_none(reply.get("state_file")),
            cpu_time_s=_non_negative(reply.get("cpu_time_s")),
            peak_memory_bytes=_non_negative_int(reply.get("peak_memory_bytes")),
        )
        if request.function is None and raw.function_error:
            raw.lost = raw.function_error
        return raw

    async def _lost(self, container: PooledContainer, running: Running, reason: str) -> contract.RawOutcome:
        """The container died under a task: OOM, a cancel, or lost (retriable)."""
        if running.cancelled:
            return contract.RawOutcome(exit_code=None, cancelled=True)
        # The engine records an OOM kill a moment after the process died: ask until the container
        # has stopped (or the flag is set), for at most LOST_VERDICT_S.
        deadline = time.monotonic() + LOST_VERDICT_S
        while True:
            try:
                state = await self.runtime.inspect(container.container_id)
            except FlowError:
                break
            if state.oom_killed:
                return contract.RawOutcome(exit_code=137, oom=True)
            if not state.running or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        return contract.RawOutcome(exit_code=None, lost=container.lost_reason or reason)

    async def _run_exec(
        self, request: TaskRequest, container: PooledContainer, running: Running
    ) -> contract.RawOutcome:
        assert request.command is not None
        too_large = contract.input_too_large(request)
        if too_large is not None:
            return contract.RawOutcome(exit_code=None, output_error=too_large)
        name = secrets.token_hex(8)
        try:
            res = await self.runtime.exec(
                container.container_id,
                contract.task_wrapped(contract.command_argv(request.command), name),
                contract.wrapped_env(request),
                request.workdir,
                request.timeout_s,
                running.log.feed if running.log is not None else None,
                user=container.key.user,
            )
        except FlowError as exc:
            container.broken = True
            return await self._lost(container, running, exc.message)
        raw = contract.RawOutcome(
            exit_code=res.exit_code,
            stdout=res.stdout.decode(errors="replace"),
            log_tail=res.combined_tail.decode(errors="replace"),
            timed_out=res.timed_out,
            cancelled=running.cancelled,
            stdout_truncated=res.stdout_truncated,
        )
        if res.timed_out:
            container.broken = True
        elif res.exit_code in (-1, 137) or container.lost_reason is not None:
            # Killed: by the memory limit, by a cancel, or the container died under it.
            try:
                state = await self.runtime.inspect(container.container_id)
            except FlowError:
                state = None
            if state is None or not state.running:
                container.broken = True
                if not running.cancelled:
                    lost = await self._lost(container, running, "the container stopped during the task")
                    lost.log_tail = raw.log_tail
                    return lost
            elif state.oom_killed:
                container.broken = True  # the OOM flag sticks: do not blame the next task
                raw.oom = True
        kept = self._action(request, contract.build_outcome(request, raw, request.timeout_s).ok, False) == "keep"
        if not container.broken and not kept:
            # Nothing the task started may meet the next one: kill its uid's processes, drop its files.
            # (A container kept for inspection meets no next task: it keeps them, frozen.)
            try:
                await self.runtime.exec(
                    container.container_id, contract.cleanup_argv(name), {}, "/", 10.0, user=container.key.user
                )
            except FlowError:
                container.broken = True
        return raw

    async def _cold(self, request: TaskRequest, running: Running, *, pool_key: str | None) -> TaskResult:
        """A one-shot container: create, start, run, remove (the baseline; always works).

        Images with python3 run the task through a one-shot agent (the same contract as warm ones);
        others run the wrapped command as the container's own process. A cleanup policy ``keep`` keeps
        either kind instead of removing it (ADR 014): the agent's paused, the command's exited.
        """
        started = time.perf_counter()
        container_id: str | None = None
        if await self._has_python(request.image):
            key = key_for(request, "agent", self.settings)
            async with self.manager.oneshot_slot():
                try:
                    container = await self.manager.factory.create(key, kind="oneshot")
                except FlowError as exc:
                    return self._failed(request, ErrorKind.RUNTIME, exc.message, mode=DispatchMode.COLD)
                running.container = container
                kept = False
                try:
                    raw = await self._run_agent(request, container, running)
                    kept = await self._keep_cold(request, raw, container_id=container.container_id,
                                                 name=container.name, key=key, agent=container)
                finally:
                    if not kept:
                        await self.manager.factory.destroy(container)
            container_id = container.container_id
        elif request.function is not None:
            return self._failed(
                request, ErrorKind.RUNTIME, f"function steps need python3 in the image; {request.image} has none"
            )
        else:
            raw, container_id = await self._cold_command(request, running)
        exec_ms = (time.perf_counter() - started) * 1000
        result = self._result(
            request, raw, mode=DispatchMode.COLD, pooled=False, container_id=container_id, pool_key=pool_key
        )
        result.timings = TaskTimings(acquire_ms=0.0, exec_ms=round(exec_ms, 3))
        result.pool_hit = False
        self.manager.cold_stats.record_task(exec_ms, result.ok)
        self._record(request, result, started_ms=started, finished_at=_now_iso())
        return result

    async def _has_python(self, image: str) -> bool:
        try:
            return await self.manager.has_python(image)
        except FlowError:
            return False

    async def _cold_command(
        self, request: TaskRequest, running: Running
    ) -> tuple[contract.RawOutcome, str | None]:
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
            kept = await self._keep_cold(request, raw, container_id=res.container_id, name=name, key=key)
            if not kept:
                with contextlib.suppress(FlowError):
                    await self.runtime.remove(res.container_id)
        return raw, res.container_id

    async def _keep_cold(
        self, request: TaskRequest, raw: contract.RawOutcome, *, container_id: str, name: str, key: PoolKey,
        agent: PooledContainer | None = None,
    ) -> bool:
        """Keep a one-shot container when the cleanup policy says so (ADR 014); False: the caller removes it."""
        if self.keeper is None:
            return False
        result = self._result(request, raw, mode=DispatchMode.COLD, pooled=False, container_id=container_id,
                              pool_key=key.hash)
        cancelled = result.error is not None and result.error.kind == ErrorKind.CANCELLED
        if self._action(request, result.ok, cancelled) != "keep":
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

    # ------------------------------------------------------------------ results
    def _result(
        self,
        request: TaskRequest,
        raw: contract.RawOutcome,
        *,
        mode: DispatchMode,
        pooled: bool,
        container_id: str | None,
        pool_key: str | None,
    ) -> TaskResult:
        outcome = contract.build_outcome(request, raw, request.timeout_s)
        if outcome.error is not None and outcome.error.kind == ErrorKind.CONTAINER_LOST and not raw.lost:
            outcome.error = TaskError(kind=ErrorKind.CONTAINER_LOST, message="container lost")
        return TaskResult(
            task_id=request.task_id,
            ok=outcome.ok,
            exit_code=outcome.exit_code,
            output=outcome.output,
            state_updates=outcome.state_updates,
            error=outcome.error,
            log_tail=outcome.log_tail,
            output_truncated=outcome.output_truncated,
            container_id=container_id,
            pooled=pooled,
            mode=mode,
            pool_key=pool_key,
            cpu_time_s=raw.cpu_time_s,
            peak_memory_bytes=raw.peak_memory_bytes,
        )

    def _failed(
        self,
        request: TaskRequest,
        kind: ErrorKind,
        message: str,
        *,
        pool_key: str | None = None,
        mode: DispatchMode = DispatchMode.COLD,
    ) -> TaskResult:
        return TaskResult(
            task_id=request.task_id,
            ok=False,
            error=TaskError(kind=kind, message=message),
            mode=mode,
            pool_key=pool_key,
        )

    def _record(
        self, request: TaskRequest, result: TaskResult, *, started_ms: float, finished_at: str
    ) -> None:
        if self.recorder is None or result.container_id is None:
            return
        elapsed_s = time.perf_counter() - started_ms
        self.recorder.record(
            request, result, started_at=_now_iso(-elapsed_s), finished_at=finished_at or _now_iso()
        )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _non_negative(value: Any) -> float | None:
    """A usage figure the agent sent, when it is one (it is data from inside a container)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < float("inf"):
        return float(value)
    return None


def _non_negative_int(value: Any) -> int | None:
    number = _non_negative(value)
    return int(number) if number is not None else None


def _now_iso(offset_s: float = 0.0) -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) + timedelta(seconds=offset_s)).isoformat(timespec="milliseconds")
