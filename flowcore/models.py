"""Workflow definitions as users submit them, validated with pydantic.

This is the schema of ``POST /v1/workflows`` (JSON or YAML). Cross-step checks (unknown ids,
cycles, branch targets) live in :mod:`flowcore.dag`; this module checks each object on its own.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The SDK defines the statuses users see; the server re-exports them (it depends on the SDK, not back).
from agentainer_flow.models import StepStatus as StepStatus
from agentainer_flow.models import WorkflowStatus as WorkflowStatus
from flowcore import patterns
from flowcore.durations import DurationS
from flowcore.flowcontrol import (
    MAX_LIMIT,
    MAX_PRIORITY,
    MIN_PRIORITY,
    ConcurrencyConfig,
    DebounceConfig,
    RateLimitConfig,
)
from flowcore.stepkeys import StepConcurrency

STEP_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_PATH_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FailureStrategy(str, enum.Enum):
    FAIL_FAST = "fail_fast"
    CONTINUE = "continue"


class Backoff(str, enum.Enum):
    EXPONENTIAL = "exponential"
    LINEAR = "linear"
    CONSTANT = "constant"


def check_path(path: str) -> str:
    """A dotted path into the workflow view: ``input.x``, ``steps.a.output.items``, ``state.k``, ``item``."""
    if not _PATH_PATTERN.match(path):
        raise ValueError(f"invalid path {path!r}: use dotted names like 'steps.list.output.files'")
    root = path.split(".", 1)[0]
    if root not in ("input", "steps", "state", "item", "workflow"):
        raise ValueError(f"invalid path {path!r}: it must start with input, steps, state, item or workflow")
    return path


class RetryPolicy(_Strict):
    max_attempts: int = Field(1, ge=1, le=100, description="Attempts in all, the first one included.")
    backoff: Backoff = Backoff.EXPONENTIAL
    initial_delay_s: DurationS = Field(1.0, le=86400, description="Delay before the second attempt.")
    max_delay_s: DurationS = Field(60.0, le=86400, description="Upper bound of any delay.")
    multiplier: float = Field(2.0, ge=1.0, le=100.0, description="Growth factor of exponential backoff.")
    jitter: float = Field(0.1, ge=0.0, le=1.0, description="Fraction of the delay randomised (+/-).")


class Resources(_Strict):
    cpu: float | None = Field(None, gt=0, le=64, description="CPU cores (1.5 = one and a half).")
    memory_mb: int | None = Field(None, ge=6, le=1048576, description="Memory limit in MiB.")
    pids: int | None = Field(None, ge=8, le=1_000_000, description="Process count limit.")


class PoolOptions(_Strict):
    min_size: int = Field(0, ge=0, le=256)
    max_size: int = Field(8, ge=1, le=256)
    warm_up: bool = True
    idle_timeout_s: DurationS = Field(300.0, alias="idle_timeout")
    max_uses: int = Field(1000, ge=1)
    scope: Literal["workflow", "image"] = Field(
        "workflow",
        description=(
            "Reuse warm containers only within one workflow (default), or across workflows ('image': an"
            " opt-in the operator may forbid with policy.allow_cross_workflow_reuse)."
        ),
    )

    @model_validator(mode="after")
    def _sizes(self) -> PoolOptions:
        if self.min_size > self.max_size:
            raise ValueError("pool.min_size must not exceed pool.max_size")
        return self


MAX_KEEP_FOR_S = 7 * 86400.0  # the longest keep_for a definition may ask for (the pool may cap lower)


class CleanupPolicy(_Strict):
    """What happens to a task's container once the task has ended (docs/pool.md, ADR 014).

    ``return``: back to the warm pool (successes only, and only when the container is clean);
    ``remove``: removed at once; ``keep``: quarantined for inspection for ``keep_for``.
    """

    on_success: Literal["return", "remove", "keep"] = "return"
    on_failure: Literal["remove", "keep"] = "remove"
    keep_for_s: DurationS = Field(
        3600.0, alias="keep_for", gt=0, le=MAX_KEEP_FOR_S, description="How long a kept container stays."
    )


class ConditionLeaf(_Strict):
    field: str = Field(description="Dotted path into the workflow view.")
    op: Literal["==", "!=", ">", ">=", "<", "<=", "in", "not_in", "contains", "matches", "exists"] = "=="
    value: Any = None

    @field_validator("field")
    @classmethod
    def _path(cls, value: str) -> str:
        return check_path(value)

    @model_validator(mode="after")
    def _regex(self) -> ConditionLeaf:
        if self.op == "matches":
            if not isinstance(self.value, str):
                raise ValueError("'matches' needs a string regular expression as value")
            try:
                patterns.check(self.value)  # the engine that will run it (RE2: linear time)
            except patterns.PatternError as exc:
                raise ValueError(str(exc)) from None
        if self.op in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"'{self.op}' needs a list as value")
        return self


class ConditionAll(_Strict):
    all_: list[Condition] = Field(alias="and", min_length=1)


class ConditionAny(_Strict):
    any_: list[Condition] = Field(alias="or", min_length=1)


class ConditionNot(_Strict):
    not_: Condition = Field(alias="not")


Condition = ConditionLeaf | ConditionAll | ConditionAny | ConditionNot


class DecisionCase(_Strict):
    condition: Condition
    targets: list[str] = Field(min_length=1)


class FunctionRef(_Strict):
    """A Python-function step: ``module`` imported inside the container, ``qualname`` called.

    This is also what the pool receives per task (:class:`flowcore.pool_api.TaskRequest`), with the
    module's ``source`` always inline there.
    """

    module: str = Field(min_length=1)
    qualname: str = Field(min_length=1)
    source: str | None = Field(None, description="Module source shipped with the definition.")


MODULE_KEY_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$"
MAX_MODULES = 64
MAX_MODULE_SOURCE_CHARS = 4 * 1024 * 1024  # under the pool's request limit, which gets it inline per task


class StepFunction(FunctionRef):
    """The ``function`` of a step: the module's ``source`` inline, or ``source_ref``, the key of the
    definition's ``modules`` entry that holds it (shipped once for all the steps that share it)."""

    source_ref: str | None = Field(
        None, pattern=MODULE_KEY_PATTERN, description="Key of the definition's `modules` entry holding the source."
    )

    @model_validator(mode="after")
    def _one_source(self) -> StepFunction:
        if self.source is not None and self.source_ref is not None:
            raise ValueError("a function has either source or source_ref, not both")
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, f"<{len(value)} chars>" if name == "source" and isinstance(value, str) else value


class _StepBase(_Strict):
    id: str = Field(pattern=STEP_ID_PATTERN)
    name: str | None = None
    depends_on: list[str] = Field(default_factory=list)
    image: str | None = Field(None, min_length=1, max_length=512)
    command: list[str] | str | None = None
    function: StepFunction | None = None
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    input: Any = Field(None, description="Literal JSON; {'$path': 'steps.a.output'} values are resolved.")
    output: Literal["json", "text"] = "json"
    output_overflow: Literal["fail", "truncate"] = Field(
        "fail",
        description="stdout past 16 MiB: fail the step (default), or, for text output, keep its start and "
        "mark the task output_truncated.",
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout_s: DurationS | None = Field(None, alias="timeout", gt=0, le=7 * 86400)
    continue_on_error: bool = False
    resources: Resources = Field(default_factory=Resources)
    network: str = Field("none", min_length=1, max_length=128)
    pool: PoolOptions | None = None
    cleanup: CleanupPolicy | None = Field(
        None, description="What happens to the task's container afterwards; overrides config.cleanup."
    )
    mode: Literal["auto", "agent", "exec", "cold"] = "auto"
    user: str | None = Field(
        None,
        pattern=r"^[0-9]{1,10}(:[0-9]{1,10})?$",
        description="uid[:gid] the task runs as; default from the pool's settings (never root unless allowed).",
    )
    read_only_root: bool | None = Field(
        None, description="Read-only root filesystem with a writable /tmp; default from the pool's settings."
    )

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        for key in env:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                raise ValueError(f"invalid environment variable name {key!r}")
        return env

    @field_validator("command")
    @classmethod
    def _command(cls, command: list[str] | str | None) -> list[str] | str | None:
        if command is not None and len(command) == 0:
            raise ValueError("command must not be empty")
        return command

    @property
    def runs_container(self) -> bool:
        return True


class _ContainerStep(_StepBase):
    concurrency: StepConcurrency | None = Field(
        None, description="A key per task and how many tasks of one key run at once, in all workflows (ADR 019)."
    )

    @model_validator(mode="after")
    def _runnable(self) -> _ContainerStep:
        if self.image is None:
            raise ValueError(f"step {self.id!r} needs an image")
        if self.command is None and self.function is None:
            raise ValueError(f"step {self.id!r} needs a command or a function")
        if self.command is not None and self.function is not None:
            raise ValueError(f"step {self.id!r} has both a command and a function: choose one")
        return self


class SequentialStep(_ContainerStep):
    type: Literal["sequential"] = "sequential"


class ReduceStep(_ContainerStep):
    """Runs after its dependencies; its input carries their outputs, list outputs concatenated."""

    type: Literal["reduce"]


class _FanOut(_ContainerStep):
    max_concurrency: int | None = Field(None, ge=1, le=10_000)
    tolerated_failures: int = Field(0, ge=0, description="Item failures allowed before the step fails.")
    tolerated_failure_percent: float | None = Field(None, ge=0, le=100)


class ParallelStep(_FanOut):
    type: Literal["parallel"]
    replicas: int | None = Field(None, ge=1, le=10_000)
    inputs: list[Any] | None = Field(None, min_length=1, max_length=10_000)

    @model_validator(mode="after")
    def _one_source(self) -> ParallelStep:
        if (self.replicas is None) == (self.inputs is None):
            raise ValueError(f"parallel step {self.id!r} needs exactly one of replicas or inputs")
        return self


class MapStep(_FanOut):
    type: Literal["map"]
    items: str = Field(description="Path of the array to map over, e.g. 'steps.list.output.files'.")

    @field_validator("items")
    @classmethod
    def _items(cls, value: str) -> str:
        return check_path(value)


class BranchStep(_StepBase):
    """Evaluated by the engine (no container): runs ``then`` or ``else`` targets, skips the others."""

    type: Literal["branch"]
    condition: Condition
    then: list[str] = Field(default_factory=list)
    else_: list[str] = Field(default_factory=list, alias="else")

    @model_validator(mode="after")
    def _targets(self) -> BranchStep:
        if not self.then and not self.else_:
            raise ValueError(f"branch step {self.id!r} needs 'then' or 'else' targets")
        return self

    @property
    def runs_container(self) -> bool:
        return False


class DecisionStep(_StepBase):
    """Evaluated by the engine: the first matching case's targets run, the rest are skipped."""

    type: Literal["decision"]
    cases: list[DecisionCase] = Field(min_length=1)
    default: list[str] = Field(default_factory=list)

    @property
    def runs_container(self) -> bool:
        return False


EVENT_TYPE_PATTERN = r"^[A-Za-z0-9_.:/-]+$"
WORKFLOW_REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
MAX_APPROVAL_MESSAGE_CHARS = 2000


class _WaitStep(_StepBase):
    """A durable wait (ADR 012): parked in Redis by the engine, no worker or container held.

    ``timeout`` (the step's) bounds the wait; ``on_timeout`` says what then happens.
    """

    @property
    def runs_container(self) -> bool:
        return False


class SleepStep(_WaitStep):
    """Succeeds once ``duration`` has passed since it began, or at ``until`` (an ISO 8601 time)."""

    type: Literal["sleep"]
    duration_s: DurationS | None = Field(None, alias="duration", ge=0, le=366 * 86400)
    until: str | None = Field(None, max_length=64, description="ISO 8601 time (UTC when it has no offset).")

    @model_validator(mode="after")
    def _one_time(self) -> SleepStep:
        if (self.duration_s is None) == (self.until is None):
            raise ValueError(f"sleep step {self.id!r} needs exactly one of duration or until")
        if self.until is not None:
            from flowcore.waitrules import parse_until  # the parsing rule lives with the pure decisions

            parse_until(self.until)
        return self


class WaitForEventStep(_WaitStep):
    """Succeeds with the first event of ``event_type`` matching ``filter`` published since the workflow
    was created; ``{"$path": ...}`` values in the filter are resolved when the wait begins."""

    type: Literal["wait_for_event"]
    event_type: str = Field(min_length=1, max_length=200, pattern=EVENT_TYPE_PATTERN)
    filter_: dict[str, Any] = Field(default_factory=dict, alias="filter")
    on_timeout: Literal["fail", "succeed"] = "fail"
    default_output: Any = Field(None, description="The output when the wait times out with on_timeout: succeed.")

    @field_validator("filter_")
    @classmethod
    def _filter(cls, value: dict[str, Any]) -> dict[str, Any]:
        from flowcore.waitrules import check_filter

        check_filter(value)
        return value


class ApprovalStep(_WaitStep):
    """Waits for a person's decision (API, SDK, CLI or dashboard); output: who decided, when, the comment."""

    type: Literal["approval"]
    message: str | None = Field(None, max_length=MAX_APPROVAL_MESSAGE_CHARS)
    on_timeout: Literal["fail", "approve", "reject"] = "fail"
    on_reject: Literal["fail", "continue"] = Field(
        "fail", description="A rejection fails the step (default), or it succeeds with approved: false."
    )


class WorkflowStep(_WaitStep):
    """Runs workflow ``workflow`` (a template: its definition, with ``input`` merged over its input) as a
    child and waits for it; its output is the child's step outputs, or ``output_step``'s output."""

    type: Literal["workflow"]
    workflow: str = Field(pattern=WORKFLOW_REF_PATTERN, description="Id of the template workflow.")
    output_step: str | None = Field(None, pattern=STEP_ID_PATTERN)


WAIT_STEP_TYPES = (SleepStep, WaitForEventStep, ApprovalStep, WorkflowStep)

Step = Annotated[
    SequentialStep
    | ParallelStep
    | MapStep
    | ReduceStep
    | BranchStep
    | DecisionStep
    | SleepStep
    | WaitForEventStep
    | ApprovalStep
    | WorkflowStep,
    Field(discriminator="type"),
]


def task_function(function: StepFunction | None, modules: Mapping[str, str]) -> FunctionRef | None:
    """What the pool gets for a step's ``function``: the module source inline, taken from the
    definition's ``modules`` when the step refers to it (``source_ref``).

    The pool's task API receives the source with every task (``TaskRequest.function.source``); a
    definition ships it once. Pure, and cheap (one lookup): call it per task with the definition's
    ``modules``. A validated :class:`WorkflowDefinition` has every referenced key; a missing one is a
    ``KeyError`` naming it.
    """
    if function is None:
        return None
    source = function.source
    if function.source_ref is not None:
        try:
            source = modules[function.source_ref]
        except KeyError:
            raise KeyError(f"module {function.source_ref!r} is not in the definition's modules") from None
    return FunctionRef(module=function.module, qualname=function.qualname, source=source)


ModuleKey = Annotated[str, Field(pattern=MODULE_KEY_PATTERN)]
ModuleSource = Annotated[str, Field(min_length=1, max_length=MAX_MODULE_SOURCE_CHARS)]


class WorkflowConfig(_Strict):
    max_parallel: int = Field(10, ge=1, le=1000, description="Tasks (containers) running at once.")
    timeout_s: DurationS | None = Field(None, alias="timeout", gt=0, le=30 * 86400)
    failure_strategy: FailureStrategy = FailureStrategy.FAIL_FAST
    cleanup: CleanupPolicy = Field(
        default_factory=CleanupPolicy, description="Containers after a task: return, remove or keep (ADR 014)."
    )
    # flow control of starts (ADR 013, flowcore.flowcontrol)
    concurrency: ConcurrencyConfig | None = Field(None, description="A key per start, a limit per key, a strategy.")
    max_concurrent_runs: int | None = Field(
        None, ge=1, le=MAX_LIMIT, description="Runs of this definition name active at once (more wait)."
    )
    rate_limit: RateLimitConfig | None = Field(None, description="At most `limit` starts per `period` (more wait).")
    debounce: DebounceConfig | None = Field(None, description="Start once per key after a quiet period.")
    priority: int = Field(0, ge=MIN_PRIORITY, le=MAX_PRIORITY, description="Order of waiting starts, higher first.")

    @property
    def cleanup_if_set(self) -> CleanupPolicy | None:
        """The workflow's cleanup policy when the definition names one (None: the pool's defaults)."""
        return self.cleanup if "cleanup" in self.model_fields_set else None


class WorkflowDefinition(_Strict):
    """What ``POST /v1/workflows`` accepts."""

    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    config: WorkflowConfig = Field(default_factory=WorkflowConfig)
    steps: list[Step] = Field(default_factory=list, max_length=10_000)
    input: Any = None
    labels: dict[str, str] = Field(default_factory=dict)
    modules: dict[ModuleKey, ModuleSource] = Field(
        default_factory=dict,
        max_length=MAX_MODULES,
        description=(
            "Module sources shipped once for the definition, by key; a function step names its module's"
            " key in function.source_ref. Every entry must be referenced."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _default_step_type(cls, data: Any) -> Any:
        # A step without a type is sequential, as in the product overview's YAML.
        if isinstance(data, dict) and isinstance(data.get("steps"), list):
            data = dict(data)
            data["steps"] = [
                {**s, "type": "sequential"} if isinstance(s, dict) and "type" not in s else s
                for s in data["steps"]
            ]
        return data

    @model_validator(mode="after")
    def _module_refs(self) -> WorkflowDefinition:
        used: set[str] = set()
        for index, step in enumerate(self.steps):
            ref = step.function.source_ref if step.function is not None else None
            if ref is None:
                continue
            if ref not in self.modules:
                known = ", ".join(sorted(self.modules)) or "none"
                raise ValueError(
                    f"steps[{index}].function.source_ref: step {step.id!r} refers to module {ref!r}, which is"
                    f" not in the definition's modules (known: {known})"
                )
            used.add(ref)
        unused = sorted(set(self.modules) - used)
        if unused:
            raise ValueError(f"modules.{unused[0]}: no step's function.source_ref refers to it")
        return self

    def __repr_args__(self) -> Iterator[tuple[str, Any]]:
        yield "name", self.name
        yield "steps", len(self.steps)
        if self.modules:
            yield "modules", {key: f"<{len(source)} chars>" for key, source in self.modules.items()}

    def step(self, step_id: str) -> Any:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)


for _model in (ConditionAll, ConditionAny, ConditionNot, DecisionCase, BranchStep, DecisionStep):
    _model.model_rebuild()
