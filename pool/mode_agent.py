"""Dispatch mode ``agent``: a container's in-container agent runs the task, a command as a child
process or a Python function in a child forked from its module's zygote (ADR 009). A warm container's
agent serves many tasks; a one-shot container's (:mod:`pool.mode_cold`) serves one.

The task message carries what the agent needs and the limits it applies (``FLOW_LIMITS__*``); the
reply is typed field by field, since everything in it comes from inside the container.
"""

from __future__ import annotations

import asyncio
from typing import Any

from flowcore import limits
from flowcore.pool_api import TaskRequest
from flowcore.secretrefs import Redactor
from pool import cleanup, contract
from pool.containers import PooledContainer
from pool.errors import ChannelClosed
from pool.runtime import ContainerRuntime
from pool.taskrun import (
    Running,
    lost,
    reply_int_or_none,
    reply_non_negative,
    reply_non_negative_int,
    reply_text,
    reply_text_or_none,
)


def task_message(request: TaskRequest, container: PooledContainer, *, may_keep: bool) -> dict[str, Any]:
    """The ``run`` message of the agent protocol for ``request`` in ``container``."""
    message: dict[str, Any] = {
        "id": request.task_id,
        "env": contract.task_env(request),
        "cwd": request.workdir,
        "timeout_s": request.timeout_s,
        "user": container.key.user,
        # FLOW_LIMITS__*: its stdout, output files and function result; its live log
        "max_file_bytes": limits.current().max_output_bytes,
        "max_log_bytes": limits.current().max_log_bytes,
    }
    on_success, on_failure = cleanup.may_keep(request.cleanup)
    if may_keep and (on_success or on_failure):
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
    return message


def reply_outcome(request: TaskRequest, reply: dict[str, Any], running: Running) -> contract.RawOutcome:
    """The agent's ``result`` reply as the step contract reads it. The agent keeps stdout to the task's
    output limit; the pool holds it to the limit too, whatever the reply says."""
    stdout = reply_text(reply.get("stdout"))
    cap = limits.current().max_output_bytes
    over = len(stdout) > cap  # characters: at least as many bytes
    raw = contract.RawOutcome(
        exit_code=reply_int_or_none(reply.get("exit_code")),
        stdout=stdout[:cap] if over else stdout,
        log_tail=reply_text(reply.get("log_tail")),
        timed_out=reply.get("timed_out") is True,
        oom=reply.get("oom") is True,
        cancelled=reply.get("cancelled") is True or running.cancelled,
        function=request.function is not None,
        function_error=reply_text_or_none(reply.get("error")),
        function_output=reply.get("output"),
        has_function_output=reply.get("has_output") is True,
        output_error=reply_text_or_none(reply.get("output_error")) or reply_text_or_none(reply.get("file_error")),
        stdout_truncated=over or reply.get("stdout_truncated") is True,
        output_file=reply_text_or_none(reply.get("output_file")),
        state_file=reply_text_or_none(reply.get("state_file")),
        cpu_time_s=reply_non_negative(reply.get("cpu_time_s")),
        peak_memory_bytes=reply_non_negative_int(reply.get("peak_memory_bytes")),
    )
    if request.function is None and raw.function_error:
        raw.lost = raw.function_error  # an agent error on a command: the container is not to be trusted
    return raw


async def run_agent(
    runtime: ContainerRuntime, request: TaskRequest, container: PooledContainer, running: Running, *,
    grace_s: float, may_keep: bool,
) -> contract.RawOutcome:
    """Run ``request`` through ``container``'s agent; a task past its timeout plus ``grace_s`` without an
    answer kills the container (its agent is stuck)."""
    assert container.channel is not None
    message = task_message(request, container, may_keep=may_keep)
    backstop = request.timeout_s + grace_s if request.timeout_s else None
    try:
        on_log = running.log.agent_lines if running.log is not None else None
        reply = await asyncio.wait_for(
            container.channel.run(message, request.workflow_id, on_log, Redactor(request.redact)), backstop
        )
    except TimeoutError:
        container.broken = True
        await runtime.kill(container.container_id)
        return contract.RawOutcome(exit_code=None, timed_out=True, log_tail="(the agent did not answer)")
    except ChannelClosed as exc:
        container.broken = True
        return await lost(runtime, container, running, exc.message)
    return reply_outcome(request, reply, running)
