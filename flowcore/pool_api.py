"""The wire contract between workers (and the gateway) and the pool service.

``POST /v1/tasks`` takes a :class:`TaskRequest` and answers a :class:`TaskResult` once the task has
finished (HTTP 200 even when the step itself failed: the step's failure is data, not a transport
error). While it runs, the pool appends its output lines to the workflow's log stream
(:mod:`flowcore.logstream`), tagged with the request's ``workflow_id``, ``step_id``, ``index`` and
``attempt``; the lines it has not appended yet when the task ends come back in
``TaskResult.logs``, and the worker appends them in the same commit as the task's completion (so a
finished workflow has all its lines, at no extra round trip). ``DELETE /v1/tasks/{task_id}`` kills
a running task. Everything here is JSON.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flowcore.models import CleanupPolicy, FunctionRef, PoolOptions, Resources


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DispatchMode(str, enum.Enum):
    AUTO = "auto"  # agent when the image has python3, else exec, in a pooled container
    AGENT = "agent"  # warm container, the in-container agent runs the task
    EXEC = "exec"  # warm container, `docker exec` per task
    COLD = "cold"  # one-shot container per task (create, start, wait, remove)


class TaskRequest(_Wire):
    task_id: str = Field(min_length=1, max_length=300, description="Unique per dispatch (carries the token).")
    workflow_id: str
    step_id: str
    index: int = 0
    attempt: int = 1
    image: str
    command: list[str] | str | None = None
    function: FunctionRef | None = None
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    input: Any = None
    output: Literal["json", "text"] = "json"
    execution_key: str | None = Field(
        None,
        max_length=600,
        description="One execution at a time per key on a pool service: a newer dispatch with the same key "
        "stops the older execution first (the engine sends workflow/step/index).",
    )
    output_overflow: Literal["fail", "truncate"] = Field(
        "fail",
        description="When stdout goes past the pool's cap (16 MiB): fail the task, or (text output only) "
        "keep its start and mark the result output_truncated.",
    )
    timeout_s: float | None = Field(None, gt=0)
    resources: Resources = Field(default_factory=Resources)
    network: str = "none"
    mode: DispatchMode = DispatchMode.AUTO
    pool: PoolOptions | None = None
    traceparent: str | None = Field(None, description="W3C trace context; the step gets it as TRACEPARENT.")
    tracestate: str | None = Field(None, description="W3C tracestate; the step gets it as TRACESTATE.")
    user: str | None = Field(None, description="uid[:gid] of the task processes; None: the pool's default.")
    read_only_root: bool | None = Field(None, description="None: the pool's default.")
    state_token: str | None = Field(None, description="Lets step code reach the workflow state.")
    redact: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Values of the stored secrets the env carries: masked in the task's logs, output, log tail,"
        " error and state writes (flowcore.secretrefs). Never stored.",
        repr=False,
    )
    cleanup: CleanupPolicy | None = Field(
        None, description="The container afterwards: return, remove or keep (None: successes return, failures go)."
    )


class ErrorKind(str, enum.Enum):
    EXIT_CODE = "exit_code"  # the command exited non-zero
    TIMEOUT = "timeout"  # killed after timeout_s
    OOM = "oom"  # killed by the memory limit
    INVALID_OUTPUT = "invalid_output"  # output is not JSON
    IMAGE_NOT_FOUND = "image_not_found"
    CANCELLED = "cancelled"
    CONTAINER_LOST = "container_lost"  # the container died under the task (retriable)
    RUNTIME = "runtime"  # the engine refused or failed (retriable)
    FUNCTION_ERROR = "function_error"  # a Python-function step raised
    INPUT = "input_error"  # the step's input could not be built (missing path, bad map source)
    WORKER_LOST = "worker_lost"  # the worker running it died too often
    POOL_UNAVAILABLE = "pool_unavailable"  # the pool service could not be reached (handed elsewhere)


RETRIABLE_KINDS = frozenset(
    {
        ErrorKind.EXIT_CODE,
        ErrorKind.TIMEOUT,
        ErrorKind.OOM,
        ErrorKind.CONTAINER_LOST,
        ErrorKind.RUNTIME,
        ErrorKind.FUNCTION_ERROR,
        ErrorKind.INVALID_OUTPUT,
        ErrorKind.POOL_UNAVAILABLE,
    }
)

INFRASTRUCTURE_KINDS = frozenset({ErrorKind.CONTAINER_LOST, ErrorKind.POOL_UNAVAILABLE})
"""Failures of the platform, not of the step: the same attempt is handed over, not retried."""


class TaskError(_Wire):
    kind: ErrorKind
    message: str

    @property
    def retriable(self) -> bool:
        return self.kind in RETRIABLE_KINDS


class StateOp(_Wire):
    """One state update a step asks for; applied atomically with the step's completion."""

    op: Literal["set", "delete", "increment", "append"]
    key: str = Field(min_length=1, max_length=512)
    value: Any = None


class TaskLogLine(_Wire):
    """An output line of the task (without its newline), as the pool hands it to the worker."""

    stream: Literal["stdout", "stderr"] = "stdout"
    line: str
    ts: float = Field(description="Epoch seconds when the line was read.")


class TaskTimings(_Wire):
    acquire_ms: float = 0.0
    exec_ms: float = 0.0
    total_ms: float = 0.0


class TaskResult(_Wire):
    task_id: str
    ok: bool
    exit_code: int | None = None
    output: Any = None
    state_updates: list[StateOp] = Field(default_factory=list)
    error: TaskError | None = None
    log_tail: str = ""
    container_id: str | None = None
    pooled: bool = False
    mode: DispatchMode = DispatchMode.COLD
    pool_key: str | None = None
    pool_service: str | None = None
    pool_hit: bool | None = Field(None, description="A warm container served it (None: no pool was asked).")
    output_truncated: bool = Field(
        False, description="The output is the start of a longer stdout (output_overflow: truncate)."
    )
    timings: TaskTimings = Field(default_factory=TaskTimings)
    cpu_time_s: float | None = Field(
        None, ge=0, description="User + system CPU seconds of the task; None where it cannot be measured."
    )
    peak_memory_bytes: int | None = Field(
        None, ge=0, description="Peak resident memory of the task in bytes; None where it cannot be measured."
    )
    logs: list[TaskLogLine] = Field(
        default_factory=list,
        description="The task's last output lines, not yet in the log stream: appended with its completion.",
    )


class KeptContainer(_Wire):
    """A container quarantined by a cleanup policy ``keep`` (``GET /v1/kept``; ADR 014)."""

    container_id: str
    name: str
    service_id: str
    workflow_id: str
    step_id: str
    task_id: str
    index: int = 0
    attempt: int = 1
    outcome: Literal["succeeded", "failed"]
    reason: str = Field(description="Why it was kept: the policy and, for a failure, the error.")
    error_kind: str | None = None
    image: str = ""
    pool_key: str = ""
    user: str | None = Field(None, description="uid[:gid] its task ran as (files are copied out as it).")
    kept_at: str = ""
    expires_at: str = ""
    kept_at_s: float = 0.0
    expires_at_s: float = 0.0
    status: str = Field("paused", description="paused (frozen, no CPU), or exited when it had died.")
