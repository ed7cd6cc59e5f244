"""The answers of the HTTP API as pydantic models: what the OpenAPI document says each route returns.

These describe, they do not build: the routes still assemble their JSON (``gateway.views`` and the
route modules). Two tests hold them together: ``tests/unit/test_api_contract.py`` checks that the views
send every field these models declare and nothing they do not (workflows with their steps, tasks and
attempts; triggers), and that the SDK's models read only declared fields; the fuzz pass
(``tests/integration/test_openapi_fuzz.py``) checks every answer it provokes against these schemas.
Records and enums of the engine (``Origin``, ``TaskError``, the statuses) are used as they are. A model lists the fields a client can rely on; ``extra="allow"`` keeps
an answer that carries more (a newer field, a step's free-form output) valid. Fields that may be
``null`` say so. Where an answer has no stable shape (the pool service's reports, a workflow's
metrics), the model names the stable part and leaves the rest open.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flowcore.models import StepStatus, WorkflowStatus
from flowcore.pool_api import TaskError
from flowcore.records import AttemptSummary, Origin, TaskStatus
from flowcore.triggers import TriggerType

Open = ConfigDict(extra="allow")


class ErrorBody(BaseModel):
    """Every error the gateway answers (4xx and 5xx): a code, a message, the field it is about."""

    model_config = Open
    error: str = Field(description="A stable code: invalid_input, not_found, conflict, unauthorized, ...")
    message: str = Field(description="What went wrong, for a person.")
    field: str | None = Field(None, description="The field, parameter or header the error is about.")
    details: list[Any] | None = Field(None, description="Every problem found (validation errors), at most 20.")


class Health(BaseModel):
    model_config = Open
    status: str
    redis: str
    version: str | None = None


Time = str | None  # ISO 8601 UTC with a Z (gateway.views.iso), or null


class Task(BaseModel):
    """One task of a step (``gateway.views.task_view``): a container run of a task, map item or replica."""

    model_config = Open
    index: int
    status: TaskStatus
    attempt: int
    takeovers: int
    queued_at: Time
    run_at: Time = Field(description="Earliest start of a retry's attempt (its backoff), if any.")
    started_at: Time
    finished_at: Time
    duration_s: float | None
    exit_code: int | None
    error: TaskError | None
    log_tail: str
    container_id: str | None
    pooled: bool
    mode: str | None
    pool_key: str | None
    pool_service: str | None
    acquire_ms: float | None
    exec_ms: float | None
    cpu_time_s: float | None
    peak_memory_bytes: int | None
    attempts: list[AttemptSummary] = Field(description="Earlier attempts (times in epoch seconds).")
    waiting_on: str | None = Field(None, description="A queued task waiting for its step's concurrency key.")


class Step(BaseModel):
    """One step of a workflow (``gateway.views.step_view``)."""

    model_config = Open
    id: str
    type: str
    status: StepStatus
    attempts: int
    started_at: Time = Field(description="When the step became ready (the same as ready_at).")
    finished_at: Time
    duration_s: float | None
    ready_at: Time
    first_task_started_at: Time = Field(description="When a worker began its first task.")
    run_duration_s: float | None = Field(description="From the first task's start to the step's end.")
    output: Any
    error: str | None
    reason: str | None
    total: int
    succeeded: int
    failed: int
    failures: list[dict[str, Any]]
    chosen: list[str] | None
    wait: dict[str, Any] | None = Field(description="A durable wait: its kind, what it waits for, until when.")
    waiting_on: str | None = None
    tasks: list[Task] = Field(default_factory=list)


class Edge(BaseModel):
    model_config = Open
    from_: str = Field(alias="from")
    to: str
    kind: Literal["dep", "control", "data"]
    label: str


class Graph(BaseModel):
    """The edges the engine schedules by (``flowcore.dag.graph_edges``)."""

    model_config = Open
    edges: list[Edge]


class Workflow(BaseModel):
    """A workflow (``gateway.views.workflow_view``); the detail view adds input, steps, definition, graph."""

    model_config = Open
    id: str
    name: str
    description: str | None = None
    status: WorkflowStatus
    created_at: Time
    started_at: Time
    finished_at: Time
    duration_s: float | None
    error: str | None = None
    config: dict[str, Any] = Field(default_factory=dict, description="The definition's config (flowcore.models).")
    labels: dict[str, Any] = Field(default_factory=dict)
    origin: Origin
    step_count: int
    queued_reason: str | None = Field(None, description="Flow control: why the run waits (status queued).")
    estimated_start: Time = None
    priority: int | None = None
    admitted_at: Time = None
    input: Any = None
    steps: list[Step] | None = Field(None, description="Detail view only, in definition order.")
    definition: dict[str, Any] | None = Field(None, description="Detail view only: the definition as stored.")
    graph: Graph | None = Field(None, description="Detail view only.")


class WorkflowPage(BaseModel):
    model_config = Open
    items: list[Workflow]
    total: int
    limit: int
    offset: int


class DeleteOutcome(BaseModel):
    """``DELETE /v1/workflows`` by filter (``flowcore.retention``)."""

    model_config = Open
    dry_run: bool
    deleted: list[str]
    matched: int
    count: int
    would_delete: list[str]
    scanned: int
    skipped_running: int
    skipped_templates: int
    more: bool


class Job(BaseModel):
    """A container that ran tasks of a workflow (``GET /v1/workflows/{id}/jobs``)."""

    model_config = Open
    id: str
    name: str
    container_id: str
    step_id: str | None = None
    index: int | None = None
    pooled: bool | None = None
    mode: str | None = None
    status: str | None = None


class JobList(BaseModel):
    model_config = Open
    items: list[Job]
    total: int


class Items(BaseModel):
    """A list of documented objects with its length."""

    model_config = Open
    items: list[dict[str, Any]]
    total: int


class StateAll(BaseModel):
    model_config = Open
    workflow_id: str
    state: dict[str, Any]


class StateValue(BaseModel):
    model_config = Open
    key: str
    value: Any


class CasAnswer(BaseModel):
    model_config = Open
    key: str
    swapped: bool


class Trigger(BaseModel):
    """A trigger (``flowcore.triggers.trigger_view``); a webhook's secret is shown once, at creation."""

    model_config = Open
    id: str
    workflow_id: str
    type: TriggerType
    name: str | None = None
    enabled: bool
    cron_expression: str | None = None
    timezone: str | None = None
    input_data: Any = None
    config: dict[str, Any] = Field(default_factory=dict)
    next_run: Time = None
    last_run: Time = None
    run_count: int = 0
    last_workflow_id: str | None = None
    skipped: dict[str, int] = Field(default_factory=dict, description="Fires skipped, by reason.")
    skipped_count: int = 0
    created_at: Time = None
    webhook_url: str | None = Field(None, description="Webhook triggers: the path deliveries are posted to.")


class TriggerList(BaseModel):
    model_config = Open
    items: list[Trigger]
    total: int


class TriggerPage(TriggerList):
    limit: int
    offset: int


class FireAnswer(BaseModel):
    """A fire's outcome (``flowcore.firing.FireResult.view``): 201 when it started a workflow."""

    model_config = Open
    status: str
    workflow_id: str | None
    reason: str | None = None
    duplicate: bool


class WebhookAnswer(FireAnswer):
    delivery_id: str | None
    trigger_id: str


class EventAnswer(BaseModel):
    model_config = Open
    event_id: str
    type: str
    duplicate: bool
    matched: int
    started: int
    fires: list[dict[str, Any]]
    woke: int


class LogPage(BaseModel):
    model_config = Open
    items: list[dict[str, Any]]
    next: str


class RetryAnswer(BaseModel):
    model_config = Open
    workflow_id: str
    retry_of: str
    status: str


class Secret(BaseModel):
    """A stored secret's name, scope and times; no answer ever carries its value."""

    model_config = Open
    name: str
    created_at: str | None
    updated_at: str | None
    workflows: list[str] | None = None


class SecretList(BaseModel):
    model_config = Open
    items: list[Secret]
    total: int


class Decision(BaseModel):
    model_config = Open
    workflow_id: str
    step_id: str
    decision: str
    step: Step
    workflow: Workflow


class Spans(BaseModel):
    model_config = Open
    trace_id: str | None
    items: list[dict[str, Any]]


class MetricsWindow(BaseModel):
    """The part every window answer shares (history, series, aggregate)."""

    model_config = Open
    window: str
    window_s: float


class History(MetricsWindow):
    items: list[dict[str, Any]]
    limit: int
    truncated: bool


class Series(MetricsWindow):
    bucket_s: float
    buckets: list[dict[str, Any]]
    scanned: int
    truncated: bool


class Aggregate(MetricsWindow):
    total_workflows: int
    finished_workflows: int
    success_rate: float
    scanned: int
    truncated: bool


class FlowControlCounts(BaseModel):
    model_config = Open
    totals: dict[str, int]
    by_workflow: dict[str, dict[str, int]]
    queued_now: int


class WorkflowMetrics(BaseModel):
    model_config = Open
    workflow_id: str
    name: str
    status: str
    step_metrics: dict[str, dict[str, Any]]  # by step id, in definition order


class PoolAnswer(BaseModel):
    """An answer of the pool service, relayed unchanged (see docs/pool.md for its fields)."""

    model_config = Open


class AgentList(BaseModel):
    model_config = Open
    agents: list[dict[str, Any]]


class KeptList(BaseModel):
    model_config = Open
    kept: list[dict[str, Any]]


class KeptRemoved(BaseModel):
    model_config = Open
    removed: Any


class AgentSpec(BaseModel):
    """``POST /v1/agents`` as the pool service accepts it (``pool.agents.AgentSpec``; a unit test keeps the
    two in step: the gateway does not import the pool's code)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    image: str = Field(min_length=1, max_length=512)
    command: list[str] | str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    cpu: float | None = Field(None, gt=0, le=64)
    memory_mb: int | None = Field(None, ge=6)
    network: str = Field("none", min_length=1)
    workflow_id: str | None = None
    step_id: str | None = None
    on_error: Literal["restart", "keep", "remove"] = "keep"
    max_restarts: int = Field(3, ge=0, le=100)
    restart_backoff: float | str = 1.0
    restart_backoff_max: float | str = 60.0


class Resize(BaseModel):
    """``POST /v1/pools/{key}/resize`` as the pool service accepts it (``pool.routes.tasks.ResizeRequest``)."""

    model_config = ConfigDict(extra="forbid")
    min_size: int = Field(ge=0, le=256)
    max_size: int = Field(ge=1, le=256)
