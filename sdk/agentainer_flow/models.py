"""What the API answers, as pydantic models, and the enums and configs users pass in.

Response models are tolerant readers (``extra="allow"``): a field the server adds later is kept as an
attribute instead of breaking older clients. Times are timezone-aware ``datetime`` values; durations
are seconds (``duration_s``). ``repr()`` of a run's models is one short line (ids, status, counts),
never its definition, outputs or logs.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Self

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentainer_flow.errors import ClientError


class WorkflowStatus(enum.StrEnum):
    PENDING = "pending"
    QUEUED = "queued"  # started, waiting for a concurrency key, rate limit or overlap policy (ADR 013)
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED)


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (StepStatus.PENDING, StepStatus.RUNNING)


class StepType(enum.StrEnum):
    SEQUENTIAL = "sequential"
    PARALLEL = "parallel"
    MAP = "map"
    REDUCE = "reduce"
    BRANCH = "branch"
    DECISION = "decision"
    # durable waits: parked by the engine, no container (agentainer_flow.waits)
    SLEEP = "sleep"
    WAIT_FOR_EVENT = "wait_for_event"
    APPROVAL = "approval"
    WORKFLOW = "workflow"


class TriggerType(enum.StrEnum):
    """How a trigger fires. ``CRON`` is another name for ``SCHEDULE``."""

    SCHEDULE = "schedule"
    CRON = "schedule"
    EVENT = "event"
    WEBHOOK = "webhook"
    MANUAL = "manual"


class _Reader(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @classmethod
    def read(cls, data: Any) -> Self:
        """Parse an API answer; an unexpected shape is a ClientError, never a pydantic traceback."""
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as exc:
            first = exc.errors(include_url=False)[0] if exc.errors() else {"loc": (), "msg": "invalid"}
            where = ".".join(str(p) for p in first["loc"])
            raise ClientError(
                200, f"unexpected {cls.__name__} in the answer: {where}: {first['msg']}", code="bad_response"
            ) from exc


ReprArgs = Iterator[tuple[str, Any]]


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _present(**fields: Any) -> ReprArgs:
    """The fields worth a repr: the ones that are set, enums as their values."""
    for name, value in fields.items():
        if value is None:
            continue
        yield name, value.value if isinstance(value, enum.Enum) else value


class Task(_Reader):
    """One container run of a step (a map step has one per item)."""

    index: int = 0
    status: str = "queued"  # queued, running, succeeded, failed, cancelled
    attempt: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    exit_code: int | None = None
    error: dict[str, Any] | None = None
    log_tail: str = ""
    container_id: str | None = None
    pooled: bool = False
    mode: str | None = None
    acquire_ms: float | None = None
    exec_ms: float | None = None
    cpu_time_s: float | None = None  # user + system CPU seconds; None where not measured
    peak_memory_bytes: int | None = None  # peak resident memory
    waiting_on: str | None = None  # queued for a slot of its step's concurrency key, and why

    def __repr_args__(self) -> ReprArgs:
        error = _short(error_text(self.error)) if self.error else None
        yield from _present(index=self.index, status=self.status, attempt=self.attempt,
                            duration_s=self.duration_s, exit_code=self.exit_code, error=error)


class Step(_Reader):
    """A step as it runs in one workflow: status, timings, output or error, and its tasks."""

    id: str
    type: StepType = StepType.SEQUENTIAL
    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    output: Any = None
    error: Any = None
    reason: str | None = None
    total: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    failures: Any = None
    chosen: Any = None
    wait: Any = None  # a durable wait: its kind, what it waits for, until when, a child run's id
    waiting_on: str | None = None  # a task of it waits for a slot of its concurrency key, and why
    tasks: list[Task] = Field(default_factory=list)

    @property
    def log_tail(self) -> str:
        """The log tails of the step's tasks, in item order."""
        return "".join(t.log_tail for t in self.tasks if t.log_tail)

    def __repr_args__(self) -> ReprArgs:
        error = _short(error_text(self.error)) if self.error else None
        yield from _present(id=self.id, type=self.type, status=self.status, attempts=self.attempts,
                            duration_s=self.duration_s, tasks=len(self.tasks) or None, error=error)


class Workflow(_Reader):
    """One workflow execution. Listings carry the summary fields only (``steps`` empty there)."""

    id: str
    name: str
    description: str | None = None
    status: WorkflowStatus = WorkflowStatus.PENDING
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    error: Any = None
    config: dict[str, Any] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    origin: dict[str, Any] = Field(default_factory=dict)
    step_count: int = 0
    # flow control: why a queued (or refused) run waits, its estimated start, its priority
    queued_reason: str | None = None
    estimated_start: datetime | None = None
    priority: int = 0
    admitted_at: datetime | None = None
    input: Any = None
    steps: list[Step] = Field(default_factory=list)
    definition: dict[str, Any] | None = None

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    @property
    def outputs(self) -> dict[str, Any]:
        """Step id -> output, for the steps that produced one."""
        return {s.id: s.output for s in self.steps if s.status == StepStatus.SUCCEEDED}

    def failed_steps(self) -> dict[str, str]:
        """Step id -> error message for each failed step."""
        out: dict[str, str] = {}
        for s in self.steps:
            if s.status == StepStatus.FAILED:
                out[s.id] = error_text(s.error) or "failed"
        return out

    def __repr_args__(self) -> ReprArgs:
        error = _short(error_text(self.error)) if self.error else None
        steps = len(self.steps) or self.step_count or None
        yield from _present(id=self.id, name=self.name, status=self.status, duration_s=self.duration_s,
                            steps=steps, error=error)


def error_text(error: Any) -> str:
    """A one-line message out of the server's error values (a string or ``{"kind", "message"}``)."""
    if error is None:
        return ""
    if isinstance(error, dict):
        message = error.get("message") or error.get("error") or ""
        kind = error.get("kind")
        return f"{kind}: {message}" if kind and message else str(message or kind or error)
    return str(error)


class Job(_Reader):
    """A container that ran (or runs) tasks of a workflow (``GET /v1/workflows/{id}/jobs``)."""

    id: str
    name: str = ""
    status: str | None = None
    container_id: str | None = None
    step_id: str | None = None
    index: int | None = None
    pooled: bool = False
    mode: str | None = None


class Agent(_Reader):
    """A long-running container deployed with ``deploy_agent``."""

    id: str
    name: str = ""
    image: str = ""
    status: str = "created"
    container_id: str | None = None
    workflow_id: str | None = None
    step_id: str | None = None
    env_vars: dict[str, str] = Field(default_factory=dict)
    cpu_limit: int | None = None
    memory_limit: int | None = None
    created_at: datetime | None = None
    on_error: str = Field("keep", description="When it exits with an error: restart, keep (stopped) or remove.")
    restarts: int = Field(0, description="Restarts its on_error: restart policy made.")
    reason: str | None = Field(None, description="Why it is stopped, removed or lost.")

    @model_validator(mode="before")
    @classmethod
    def _from_service(cls, data: Any) -> Any:
        """The service's record names (env, cpu cores, memory_mb) in the SDK's units."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "env" in data and "env_vars" not in data:
            data["env_vars"] = data.pop("env") or {}
        if data.get("cpu") is not None and data.get("cpu_limit") is None:
            data["cpu_limit"] = int(float(data["cpu"]) * 1e9)
        if data.get("memory_mb") is not None and data.get("memory_limit") is None:
            data["memory_limit"] = int(data["memory_mb"]) * 1_048_576
        return data


class TriggerConfig(BaseModel):
    """Options of a trigger. Unknown keys are sent along, for options the server adds later."""

    model_config = ConfigDict(extra="allow")

    event_type: str | None = Field(None, description="Event triggers: the event type that fires it.")
    event_filter: dict[str, Any] = Field(default_factory=dict, description="Payload fields that must match.")
    skip_if_running: bool = Field(False, description="Skip a fire while a run from this trigger is active.")
    overlap: str | None = Field(
        None, description="A fire while a run is active: skip, buffer_one, buffer_all, cancel_other, allow_all."
    )
    priority: int | None = Field(None, description="Order of this trigger's waiting starts, higher first.")
    signature: str | None = Field(None, description="Webhook triggers: signature preset (github, stripe, ...).")
    secret: str | None = Field(None, description="Webhook triggers: the HMAC secret.")


class Trigger(_Reader):
    """A trigger of a template workflow: schedule, event, webhook or manual."""

    id: str
    workflow_id: str | None = None
    type: TriggerType = TriggerType.MANUAL
    enabled: bool = True
    cron_expression: str | None = None
    timezone: str | None = None
    input_data: Any = None
    config: dict[str, Any] = Field(default_factory=dict)
    next_run: datetime | None = None
    last_run: datetime | None = None
    run_count: int = 0
    last_workflow_id: str | None = None
    skipped: dict[str, int] = Field(default_factory=dict, description="Skipped fires by reason (running, missed).")
    webhook_url: str | None = Field(None, description="Webhook triggers: the path providers post to.")
    created_at: datetime | None = None
