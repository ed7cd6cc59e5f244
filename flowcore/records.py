"""Runtime records of a workflow as stored in Redis (see :mod:`flowcore.keyspace`).

A *step record* summarises one step; a *task record* is one container task of a step (one for a
sequential or reduce step, one per replica, input or item for parallel and map steps). A task is
dispatched with a fresh *token*; only a completion carrying the current token changes anything,
which is what makes duplicate and late deliveries harmless.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from flowcore.models import StepStatus, WorkflowDefinition, WorkflowStatus
from flowcore.pool_api import TaskError

if TYPE_CHECKING:
    from flowcore.defcache import Shape


class TaskStatus(str, enum.Enum):
    QUEUED = "queued"  # enqueued (possibly deferred by a retry delay), not claimed yet
    RUNNING = "running"  # claimed by a worker holding a lease
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        return self in (TaskStatus.QUEUED, TaskStatus.RUNNING)


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AttemptSummary(_Record):
    attempt: int
    error: TaskError | None = None
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    container_id: str | None = None


class TaskRecord(_Record):
    step_id: str
    index: int = 0
    status: TaskStatus = TaskStatus.QUEUED
    attempt: int = 1
    token: str = ""
    takeovers: int = 0
    enqueued_at: float | None = None
    run_at: float | None = Field(None, description="Earliest start (retry backoff), epoch seconds.")
    started_at: float | None = None
    finished_at: float | None = None
    output: Any = None
    error: TaskError | None = None
    exit_code: int | None = None
    log_tail: str = ""
    container_id: str | None = None
    pooled: bool = False
    mode: str | None = None
    pool_key: str | None = None
    pool_service: str | None = None
    acquire_ms: float | None = None
    exec_ms: float | None = None
    cpu_time_s: float | None = Field(None, description="User + system CPU seconds of the last attempt.")
    peak_memory_bytes: int | None = Field(None, description="Peak resident memory of the last attempt, bytes.")
    pool_hit: bool | None = Field(None, description="A warm container served the last attempt (None: not pooled).")
    output_truncated: bool = Field(False, description="The output is the start of a longer stdout.")
    unavailable_since: float | None = Field(
        None, description="When the pool services first could not be reached for this task (it waits, up to a grace)."
    )
    unavailable_retries: int = 0
    waiting_on: str | None = Field(
        None, description="Why a queued task waits without a worker: its step's concurrency key is full (ADR 019)."
    )
    history: list[AttemptSummary] = Field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.step_id}:{self.index}"


class StepRecord(_Record):
    id: str
    type: str
    status: StepStatus = StepStatus.PENDING
    started_at: float | None = None
    finished_at: float | None = None
    output: Any = None
    error: str | None = None
    reason: str | None = Field(None, description="Why the step was skipped or cancelled.")
    skip_cause: str | None = Field(None, description="'branch', 'failure' or 'cancel' for skipped steps.")
    total: int = 0
    dispatched: int = 0
    succeeded: int = 0
    failed: int = 0
    failures: list[dict[str, Any]] = Field(default_factory=list)
    items: list[Any] | None = None
    chosen: list[str] | None = Field(None, description="Targets a branch or decision step picked.")
    wait: dict[str, Any] | None = Field(
        None, description="A durable wait in progress or done (ADR 012): kind, token, due_at, filter, child_id..."
    )


class Origin(_Record):
    kind: str = "api"  # api | schedule | event | webhook | manual
    trigger_id: str | None = None
    template_id: str | None = Field(None, description="The workflow whose definition a trigger fire copied.")
    fired_at: float | None = None
    scheduled_for: float | None = Field(None, description="Schedules: the cron time this fire stands for.")
    event_id: str | None = Field(None, description="The event id or webhook delivery id of the fire.")
    parent_id: str | None = Field(None, description="A child run: the workflow whose `workflow` step started it.")
    parent_step: str | None = None
    parent_token: str | None = None
    depth: int = Field(0, description="How deep a child run nests (0: not a child).")
    root_id: str | None = Field(
        None, description="A retry: the workflow its definition goes back to (the first run of a chain of "
        "retries, or the template that run was fired from); a secret limited to it is usable (ADR 016)."
    )


@dataclass
class Snapshot:
    """Everything the engine reads to decide one transition; a consistent read of one workflow."""

    wf_id: str
    definition: WorkflowDefinition
    status: WorkflowStatus
    input: Any
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    origin: Origin = field(default_factory=Origin)
    steps: dict[str, StepRecord] = field(default_factory=dict)
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    version: int = 0
    trace: str | None = None  # traceparent of the workflow's root span (flowcore.tracing)
    # A transition reads only what it concerns (ADR 010): ``loaded`` holds the task keys that were
    # read (present in ``tasks`` or known absent); None means every task record is in ``tasks``.
    loaded: set[str] | None = None
    # Map items read for this transition, ``{step}:{index}`` -> item (items live apart from the step
    # record, in ``{p}:wf:{id}:items``); a step record that still holds ``items`` needs none.
    items: dict[str, Any] = field(default_factory=dict)
    shape: Shape | None = None  # the definition's graph, when the store has it cached
    # Flow control (ADR 013): why the run waits or was refused, its estimated start, its priority.
    flow: dict[str, Any] | None = None


def first_task_start(tasks: Iterable[TaskRecord]) -> float | None:
    """When the first of ``tasks`` first started in a container (earliest attempt), if any did.

    A step's own ``started_at`` is when it became *ready* (its dependencies met, its tasks queued);
    this is when work began, so the difference is the time its tasks waited for a worker and a slot.
    """
    starts = [t.started_at for t in tasks if t.started_at is not None]
    starts += [a.started_at for t in tasks for a in t.history if a.started_at is not None]
    return min(starts) if starts else None
