"""Dispatch mode ``exec``: ``docker exec`` of the wrapped command into a warm container, for images
without python3 (no agent). The task's input travels in its environment; its processes are killed and
its files removed after it, so that nothing it started meets the next task (unless the container is
kept for inspection by a cleanup policy, ADR 014).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from flowcore.errors import FlowError
from flowcore.pool_api import TaskRequest
from pool import contract
from pool.containers import PooledContainer
from pool.runtime import ContainerRuntime
from pool.taskrun import Running, lost


async def run_exec(
    runtime: ContainerRuntime, request: TaskRequest, container: PooledContainer, running: Running, *,
    keeps: Callable[[contract.RawOutcome], bool],
) -> contract.RawOutcome:
    """Run ``request`` with ``docker exec``; ``keeps(raw)`` says whether its container will be kept."""
    assert request.command is not None
    too_large = contract.input_too_large(request)
    if too_large is not None:
        return contract.RawOutcome(exit_code=None, output_error=too_large)
    name = secrets.token_hex(8)
    try:
        res = await runtime.exec(
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
        return await lost(runtime, container, running, exc.message)
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
            state = await runtime.inspect(container.container_id)
        except FlowError:
            state = None
        if state is None or not state.running:
            container.broken = True
            if not running.cancelled:
                gone = await lost(runtime, container, running, "the container stopped during the task")
                gone.log_tail = raw.log_tail
                return gone
        elif state.oom_killed:
            container.broken = True  # the OOM flag sticks: do not blame the next task
            raw.oom = True
    if not container.broken and not keeps(raw):
        # Nothing the task started may meet the next one: kill its uid's processes, drop its files.
        # (A container kept for inspection meets no next task: it keeps them, frozen.)
        try:
            await runtime.exec(container.container_id, contract.cleanup_argv(name), {}, "/", 10.0,
                               user=container.key.user)
        except FlowError:
            container.broken = True
    return raw
