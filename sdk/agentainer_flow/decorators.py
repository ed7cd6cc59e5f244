"""``@workflow`` and ``@step``: workflows written as Python classes.

::

    from agentainer_flow import step, workflow

    @workflow("greet", max_parallel=4)
    class Greet:
        @step(image="agentainer-flow/python:3.11")
        def names(self, ctx):
            return ["ada", "grace"]

        @step(image="agentainer-flow/python:3.11", type="map", items="names", depends_on=["names"])
        async def hello(self, ctx):
            return f"hello {ctx.item}"

Step order comes from ``depends_on`` (and from what a step reads: a map's ``items``, a branch's
condition), never from the order of the methods. A step without ``command`` is a Python-function
step: its method body runs inside its container (see :mod:`agentainer_flow.shipping`). A step with a
``command`` runs that command instead and its method body is never called (it documents the step).
The decorators leave the class and its methods unchanged, so they stay plain Python objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, overload

from agentainer_flow.capture import remember_scope
from agentainer_flow.errors import ValidationError

StepKind = Literal["sequential", "parallel", "map", "reduce"]
F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)

STEP_ATTR = "__flow_step__"
WORKFLOW_ATTR = "__flow_workflow__"


@dataclass
class StepSpec:
    """The options of one ``@step`` (see :func:`step` for their meaning)."""

    image: str | None = None
    name: str | None = None
    depends_on: list[Any] = field(default_factory=list)
    type: StepKind = "sequential"
    items: Any = None
    replicas: int | None = None
    inputs: list[Any] | None = None
    max_concurrency: int | None = None
    tolerated_failures: int | None = None
    tolerated_failure_percent: float | None = None
    retry: int | dict[str, Any] | None = None
    timeout: float | str | None = None
    resources: dict[str, Any] | None = None
    pool: bool | dict[str, Any] | None = None
    command: list[str] | str | None = None
    env: dict[str, str] | None = None
    input: Any = None
    output: Literal["json", "text"] | None = None
    network: str | None = None
    mode: str | None = None
    continue_on_error: bool = False
    workdir: str | None = None
    concurrency: dict[str, Any] | None = None  # a key per task and a limit per key (the server's ADR 019)


@dataclass
class WorkflowSpec:
    """The options of one ``@workflow``."""

    name: str
    description: str | None = None
    max_parallel: int | None = None
    timeout: float | str | None = None
    failure_strategy: str | None = None
    image: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    # flow control of starts (the server's ADR 013)
    concurrency: dict[str, Any] | None = None
    max_concurrent_runs: int | None = None
    rate_limit: dict[str, Any] | None = None
    priority: int | None = None
    debounce: dict[str, Any] | None = None


def _check_timeout(value: Any, name: str) -> None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
        raise ValidationError(f"{name} must be positive, got {value!r}", field=name)


def _check_step_concurrency(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or not isinstance(value.get("key"), str) or not value["key"]:
        raise ValidationError(
            "concurrency is a dict such as {'key': 'payments:{input.customer}', 'limit': 2}", field="concurrency"
        )
    limit = value.get("limit", 1)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValidationError(f"concurrency limit must be a whole number of at least 1, got {limit!r}",
                              field="concurrency.limit")


@overload
def step(fn: F, /) -> F: ...
@overload
def step(
    fn: None = None,
    /,
    *,
    image: str | None = None,
    name: str | None = None,
    depends_on: Iterable[Any] = (),
    type: StepKind = "sequential",
    items: Any = None,
    replicas: int | None = None,
    inputs: Sequence[Any] | None = None,
    max_concurrency: int | None = None,
    tolerated_failures: int | None = None,
    tolerated_failure_percent: float | None = None,
    retry: int | dict[str, Any] | None = None,
    timeout: float | str | None = None,
    resources: dict[str, Any] | None = None,
    pool: bool | dict[str, Any] | None = None,
    command: list[str] | str | None = None,
    env: dict[str, str] | None = None,
    input: Any = None,
    output: Literal["json", "text"] | None = None,
    network: str | None = None,
    mode: str | None = None,
    continue_on_error: bool = False,
    workdir: str | None = None,
    concurrency: dict[str, Any] | None = None,
) -> Callable[[F], F]: ...
def step(fn: Any = None, /, **options: Any) -> Any:
    """Mark a method ``def name(self, ctx)`` (or ``async def``) as a step of its ``@workflow`` class.

    - ``image``: the container image (defaults to the workflow's ``image=``).
    - ``depends_on``: other steps, by name or as the methods themselves.
    - ``type``: ``"sequential"`` (default), ``"map"`` (one task per element of ``items``: a path such
      as ``"steps.list.output.files"`` or the name of a step whose output is the list), ``"parallel"``
      (``replicas=N`` tasks, or one per element of ``inputs``), ``"reduce"`` (gets its dependencies'
      outputs as ``ctx.items``). Fan-outs take ``max_concurrency``, ``tolerated_failures`` and
      ``tolerated_failure_percent``.
    - ``retry``: attempts in all (``3``) or a policy dict (``{"max_attempts": 3, "backoff": "constant",
      "initial_delay_s": 0.1}``); ``timeout``: seconds or ``"30s"``; ``resources``: ``{"cpu": 0.5,
      "memory_mb": 256, "pids": 64}``; ``pool``: ``True`` or pool options (``{"min_size": 1}``).
    - ``command``: run this command instead of the method body; ``env``, ``workdir``, ``network``
      (``"none"`` by default, ``"host"`` to reach 127.0.0.1), ``input`` (JSON with ``{"$path": ...}``
      templates), ``output`` (``"json"``/``"text"``, command steps), ``mode``, ``continue_on_error``.
    - ``concurrency``: ``{"key": "payments:{input.customer}", "limit": 2}``: at most ``limit`` tasks whose
      key has the same value run at once, across all workflows; the others wait for a slot, holding no
      worker (a map's key may read its ``item``).
    """
    if fn is not None:
        if not callable(fn):
            raise ValidationError("@step takes keyword arguments only: @step(image=...)")
        setattr(fn, STEP_ATTR, StepSpec())
        return fn
    unknown = set(options) - set(StepSpec.__dataclass_fields__)
    if unknown:
        raise ValidationError(f"unknown @step option(s): {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
    options["depends_on"] = list(options.get("depends_on") or ())
    if options.get("inputs") is not None:
        options["inputs"] = list(options["inputs"])
    _check_timeout(options.get("timeout"), "timeout")
    kind = options.get("type", "sequential")
    if kind not in ("sequential", "parallel", "map", "reduce"):
        raise ValidationError(
            f"@step type must be sequential, parallel, map or reduce, got {kind!r} (branches: use branch())",
            field="type",
        )
    if kind == "map" and options.get("items") is None:
        raise ValidationError("a map step needs items= (a path or the name of the step listing them)", field="items")
    _check_step_concurrency(options.get("concurrency"))
    spec = StepSpec(**options)

    def decorate(method: F) -> F:
        if not callable(method):
            raise ValidationError("@step decorates methods")
        setattr(method, STEP_ATTR, spec)
        return method

    return decorate


def workflow(
    name: str,
    *,
    description: str | None = None,
    max_parallel: int | None = None,
    timeout: float | str | None = None,
    failure_strategy: Literal["fail_fast", "continue"] | None = None,
    image: str | None = None,
    labels: dict[str, str] | None = None,
    concurrency: dict[str, Any] | None = None,
    max_concurrent_runs: int | None = None,
    rate_limit: dict[str, Any] | None = None,
    priority: int | None = None,
    debounce: dict[str, Any] | None = None,
) -> Callable[[C], C]:
    """Mark a class as a workflow named ``name``; its ``@step`` methods and branch attributes are the steps.

    Flow control of its starts: ``concurrency={"key": "input.customer_id", "limit": 1, "strategy":
    "queue"}`` (or ``cancel_in_progress``, ``cancel_newest``), ``max_concurrent_runs=5``,
    ``rate_limit={"limit": 10, "period": "1m"}``, ``priority=5`` (waiting starts, higher first),
    ``debounce={"key": "input.user", "period": "30s", "max_wait": "5m", "inputs": "all"}``.

    ``image`` is the default image of its steps. The class must be constructible without arguments:
    each Python-function step runs ``YourClass().method(ctx)``. It may be defined inside a function
    (a test): the variables it reads from there are shipped with it (:mod:`agentainer_flow.capture`).
    """
    if not isinstance(name, str) or not name:
        raise ValidationError("@workflow needs a name: @workflow('my-workflow')", field="name")
    _check_timeout(timeout, "timeout")
    if max_parallel is not None and max_parallel < 1:
        raise ValidationError(f"max_parallel must be at least 1, got {max_parallel}", field="max_parallel")
    if failure_strategy not in (None, "fail_fast", "continue"):
        raise ValidationError("failure_strategy must be 'fail_fast' or 'continue'", field="failure_strategy")
    for option, value in (("concurrency", concurrency), ("rate_limit", rate_limit), ("debounce", debounce)):
        if value is not None and not isinstance(value, dict):
            raise ValidationError(f"{option} is a dict such as {{'key': 'input.id', 'limit': 1}}", field=option)
    if max_concurrent_runs is not None and max_concurrent_runs < 1:
        raise ValidationError(f"max_concurrent_runs must be at least 1, got {max_concurrent_runs}", field="max_concurrent_runs")
    spec = WorkflowSpec(
        name, description, max_parallel, timeout, failure_strategy, image, dict(labels or {}),
        concurrency=concurrency, max_concurrent_runs=max_concurrent_runs, rate_limit=rate_limit, priority=priority,
        debounce=debounce,
    )

    def decorate(cls: C) -> C:
        if not isinstance(cls, type):
            raise ValidationError("@workflow decorates classes")
        setattr(cls, WORKFLOW_ATTR, spec)
        remember_scope(cls)  # a class defined in a function ships the variables it reads from there
        return cls

    return decorate


def workflow_spec(obj: Any) -> tuple[type, WorkflowSpec]:
    """The class and :class:`WorkflowSpec` of a decorated class or instance."""
    cls = obj if isinstance(obj, type) else type(obj)
    spec = cls.__dict__.get(WORKFLOW_ATTR) or getattr(cls, WORKFLOW_ATTR, None)
    if not isinstance(spec, WorkflowSpec):
        raise ValidationError(f"{cls.__name__} is not a workflow: decorate the class with @workflow('name')")
    return cls, spec
