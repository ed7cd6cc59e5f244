"""What every dispatch mode shares (:mod:`pool.dispatch`): the task in flight, the container lost under
it, the cleanup policy's verdict, and the task's result built from what its container reported.

Everything a container reports is data from inside it: :func:`reply_text` and its siblings type a
field or drop it, never trusting its shape.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flowcore.errors import FlowError
from flowcore.pool_api import DispatchMode, ErrorKind, TaskError, TaskRequest, TaskResult
from pool import cleanup, contract
from pool.containers import PooledContainer
from pool.kept import Keeper
from pool.records import ContainerRecorder
from pool.runtime import ContainerRuntime
from pool.tasklogs import TaskLog

LOST_VERDICT_S = 3.0  # how long a lost container is watched for the engine's OOM verdict


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


async def lost(runtime: ContainerRuntime, container: PooledContainer, running: Running,
               reason: str) -> contract.RawOutcome:
    """The container died under a task: OOM, a cancel, or lost (retriable)."""
    if running.cancelled:
        return contract.RawOutcome(exit_code=None, cancelled=True)
    # The engine records an OOM kill a moment after the process died: ask until the container
    # has stopped (or the flag is set), for at most LOST_VERDICT_S.
    deadline = time.monotonic() + LOST_VERDICT_S
    while True:
        try:
            state = await runtime.inspect(container.container_id)
        except FlowError:
            break
        if state.oom_killed:
            return contract.RawOutcome(exit_code=137, oom=True)
        if not state.running or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.05)
    return contract.RawOutcome(exit_code=None, lost=container.lost_reason or reason)


def cleanup_action(request: TaskRequest, keeper: Keeper | None, *, ok: bool, cancelled: bool) -> cleanup.Action:
    """The cleanup policy's verdict; a cancelled task's container is never kept (nobody asked why),
    and without a keeper keep means remove."""
    action = cleanup.after_task(request.cleanup, ok=ok)
    if action == "keep" and (keeper is None or cancelled):
        return "remove"
    return action


def task_result(
    request: TaskRequest,
    raw: contract.RawOutcome,
    *,
    mode: DispatchMode,
    pooled: bool,
    container_id: str | None,
    pool_key: str | None,
) -> TaskResult:
    """The step contract applied to what the container reported (:func:`pool.contract.build_outcome`)."""
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


def failed(
    request: TaskRequest, kind: ErrorKind, message: str, *, pool_key: str | None = None,
    mode: DispatchMode = DispatchMode.COLD,
) -> TaskResult:
    """A task that did not get to run (no image, no container, no python3 for a function)."""
    return TaskResult(task_id=request.task_id, ok=False, error=TaskError(kind=kind, message=message), mode=mode,
                      pool_key=pool_key)


def record(recorder: ContainerRecorder | None, request: TaskRequest, result: TaskResult, *, started: float,
           finished_at: str) -> None:
    """The container that ran the task, for ``GET /v1/workflows/{id}/jobs`` (``started``: perf_counter)."""
    if recorder is None or result.container_id is None:
        return
    elapsed_s = time.perf_counter() - started
    recorder.record(request, result, started_at=now_iso(-elapsed_s), finished_at=finished_at or now_iso())


def cancelled_result(result: TaskResult) -> bool:
    return result.error is not None and result.error.kind == ErrorKind.CANCELLED


def reply_text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def reply_text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def reply_int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def reply_non_negative(value: Any) -> float | None:
    """A usage figure the agent sent, when it is one."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < float("inf"):
        return float(value)
    return None


def reply_non_negative_int(value: Any) -> int | None:
    number = reply_non_negative(value)
    return int(number) if number is not None else None


def now_iso(offset_s: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).isoformat(timespec="milliseconds")
