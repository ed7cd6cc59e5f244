"""Run a decorated workflow in-process, for unit tests of step code: :func:`run_locally`.

The runner follows the engine's rules on the same plan the definition is built from: steps start when
their (effective) dependencies have finished, independent ready steps run concurrently, map/parallel
steps call the method once per item (``ctx.item``, ``ctx.index``), reduce steps get ``ctx.items``,
branch and decision steps pick their targets and the others are skipped, a failed step fails the run
(``fail_fast``) or only skips its dependents (``continue``, or ``continue_on_error`` on the step),
retries re-call the method. ``ctx`` is the same :class:`~agentainer_flow.context.StepContext` as in a
container, over a :class:`~agentainer_flow.context.MemoryState` (whose awaitable forms,
``await ctx.state.aincrement(...)`` and the rest, yield to the event loop once, as a round trip to the
server would). Outputs must be JSON, as there.
Differences: no containers, no images, no retry delays; a step with a ``command`` calls its method
body instead (as a local stand-in), and ``print`` goes to this process's stdout.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import io
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from agentainer_flow.branching import _MISSING, branch, evaluate, resolve
from agentainer_flow.context import MemoryState, StepContext
from agentainer_flow.definition import Plan, PlannedStep, plan
from agentainer_flow.errors import WorkflowError
from agentainer_flow.models import StepStatus, WorkflowStatus
from agentainer_flow.waits import _Wait


@dataclass
class LocalStepResult:
    id: str
    status: StepStatus = StepStatus.PENDING
    output: Any = None
    error: str | None = None
    reason: str | None = None
    attempts: int = 0
    chosen: list[str] | None = None
    logs: str = ""


@dataclass
class LocalRun:
    """The outcome of :func:`run_locally`."""

    name: str
    status: WorkflowStatus
    steps: dict[str, LocalStepResult]
    state: dict[str, Any]
    input: Any = None
    order: list[str] = field(default_factory=list)  # the order steps finished in

    @property
    def outputs(self) -> dict[str, Any]:
        return {k: s.output for k, s in self.steps.items() if s.status == StepStatus.SUCCEEDED}

    def failed_steps(self) -> dict[str, str]:
        return {k: s.error or "failed" for k, s in self.steps.items() if s.status == StepStatus.FAILED}

    def raise_for_status(self) -> LocalRun:
        if self.status != WorkflowStatus.COMPLETED:
            failed = self.failed_steps()
            detail = "; ".join(f"{k}: {v}" for k, v in failed.items())
            raise WorkflowError(f"workflow {self.name!r} (local) {self.status.value}: {detail}", failed_steps=failed)
        return self


class _Runner:
    def __init__(self, p: Plan, instance: Any, input_data: Any, state: MemoryState, env: dict[str, str]) -> None:
        self.plan = p
        self.instance = instance
        self.input = copy.deepcopy(input_data)
        self.state = state
        self.env = env
        self.results = {s.id: LocalStepResult(s.id) for s in p.steps}
        self.targets_of: dict[str, list[str]] = {}
        for s in p.steps:
            for key in ("then", "else", "default"):
                for t in s.targets.get(key, []):
                    self.targets_of.setdefault(t, []).append(s.id)
            for case in s.targets.get("cases", []):
                for t in case["targets"]:
                    self.targets_of.setdefault(t, []).append(s.id)
        self.order: list[str] = []
        self.failed = False

    def view(self, item: Any = None) -> dict[str, Any]:
        return {
            "input": self.input,
            "state": self.state.data,
            "steps": {k: {"output": r.output, "status": r.status.value, "error": r.error} for k, r in self.results.items()},
            "workflow": {"id": "local", "name": self.plan.spec.name},
            "item": item,
        }

    def verdict(self, ps: PlannedStep) -> str | bool | None:
        """False: wait; None: ready; a string: skip it, for that reason (the engine's rules)."""
        recs = [self.results[d] for d in ps.waits_for]
        if any(r.status in (StepStatus.PENDING, StepStatus.RUNNING) for r in recs):
            return False
        for r in recs:
            dep = self.plan.step(r.id)
            if r.status == StepStatus.FAILED and not (dep.spec and dep.spec.continue_on_error):
                return f"dependency {r.id!r} failed"
            if r.status == StepStatus.SKIPPED and (r.reason or "").startswith("dependency"):
                return f"dependency {r.id!r} was skipped after a failure"
        controllers = self.targets_of.get(ps.id, [])
        if controllers and not any(ps.id in (self.results[c].chosen or []) for c in controllers):
            return f"not chosen by {', '.join(sorted(controllers))}"
        if recs and all(r.status == StepStatus.SKIPPED for r in recs):
            return "every dependency was skipped"
        return None

    async def run(self) -> WorkflowStatus:
        pending = list(self.plan.steps)
        while pending:
            ready: list[PlannedStep] = []
            skipped = False
            for ps in list(pending):
                v = self.verdict(ps)
                if v is False:
                    continue
                pending.remove(ps)
                if isinstance(v, str):
                    self.results[ps.id].status, self.results[ps.id].reason = StepStatus.SKIPPED, v
                    self.order.append(ps.id)
                    skipped = True
                else:
                    ready.append(ps)
            if not ready:
                if skipped:
                    continue  # a skip may unblock others: look again
                break
            await asyncio.gather(*(self.run_step(ps) for ps in ready))
            if self.failed and self.plan.spec.failure_strategy != "continue":
                for ps in pending:
                    self.results[ps.id].status, self.results[ps.id].reason = StepStatus.SKIPPED, "workflow failed"
                return WorkflowStatus.FAILED
        return WorkflowStatus.FAILED if self.failed else WorkflowStatus.COMPLETED

    async def run_step(self, ps: PlannedStep) -> None:
        rec = self.results[ps.id]
        rec.status = StepStatus.RUNNING
        if isinstance(ps.control, _Wait):  # a durable wait needs the server, except a sleep (not slept here)
            if ps.control.kind != "sleep":
                self.fail(rec, f"a {ps.control.kind} step needs the server: run_locally cannot wait for it")
                return
            rec.output = {"slept": False, "local": True}
            rec.status = StepStatus.SUCCEEDED
            self.order.append(ps.id)
            return
        if ps.control is not None:
            view = self.view()
            if isinstance(ps.control, branch):
                rec.chosen = ps.targets["then"] if evaluate(ps.control.condition, view) else ps.targets["else"]
            else:
                match = next((c for c in ps.targets["cases"] if evaluate(c["condition"], view)), None)
                rec.chosen = match["targets"] if match else ps.targets["default"]
            rec.status = StepStatus.SUCCEEDED
            self.order.append(ps.id)
            return
        assert ps.spec is not None and ps.method is not None
        spec = ps.spec
        items: list[Any] | None = None
        if spec.type == "map":
            found = resolve(self.view(), ps.items or "")
            items = found if isinstance(found, list) else None
            if items is None:
                self.fail(rec, f"map items {ps.items!r} is not a list")
                return
        elif spec.type == "parallel":
            items = list(spec.inputs) if spec.inputs is not None else list(range(spec.replicas or 0))
        log_buffer = io.StringIO()
        logger = logging.getLogger(f"flow.local.{self.plan.spec.name}.{ps.id}")
        handler = logging.StreamHandler(log_buffer)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.handlers[:] = [handler]
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        try:
            if items is None:
                output, error = await self.call(ps, 0, None, logger)
            else:
                results = [await self.call(ps, i, item, logger) for i, item in enumerate(items)]
                output = [out for out, _ in results]
                errors = [f"item {i}: {err}" for i, (_, err) in enumerate(results) if err is not None]
                allowed = spec.tolerated_failures or 0
                if spec.tolerated_failure_percent is not None and items:
                    allowed = max(allowed, int(len(items) * spec.tolerated_failure_percent / 100))
                error = "; ".join(errors) if len(errors) > allowed else None
        finally:
            logger.handlers[:] = []
            rec.logs = log_buffer.getvalue()
        if error is not None:
            self.fail(rec, error)
            return
        rec.output, rec.status = output, StepStatus.SUCCEEDED
        self.order.append(ps.id)

    def fail(self, rec: LocalStepResult, error: str) -> None:
        rec.status, rec.error = StepStatus.FAILED, error
        self.order.append(rec.id)
        spec = self.plan.step(rec.id).spec
        if not (spec and spec.continue_on_error):
            self.failed = True

    async def call(self, ps: PlannedStep, index: int, item: Any, logger: logging.Logger) -> tuple[Any, str | None]:
        spec = ps.spec
        assert spec is not None and ps.method is not None
        view = self.view(item)
        step_input = _templates(spec.input, view) if spec.input is not None else copy.deepcopy(self.input)
        deps = {d: copy.deepcopy(self.results[d].output) for d in sorted(ps.waits_for)}
        items = None
        if spec.type == "reduce":
            items = []
            for d in sorted(ps.waits_for):
                out, dep = deps.get(d), self.plan.step(d)
                if isinstance(out, list):
                    items.extend(out)
                elif dep.control is None:
                    items.append(out)
        attempts = spec.retry if isinstance(spec.retry, int) else int((spec.retry or {}).get("max_attempts", 1))
        error: str | None = None
        for attempt in range(1, max(attempts, 1) + 1):
            self.results[ps.id].attempts = max(self.results[ps.id].attempts, attempt)
            ctx = StepContext(
                workflow_id="local", workflow_name=self.plan.spec.name, step_id=ps.id,
                task_id=f"local.{ps.id}.{index}.{attempt}", index=index, attempt=attempt, input=step_input,
                workflow_input=copy.deepcopy(self.input), item=copy.deepcopy(item), items=items, deps=deps,
                state=self.state, log=logger, env=dict(spec.env or {}, **self.env),
            )
            try:
                value = getattr(self.instance, ps.method)(ctx)
                if inspect.isawaitable(value):
                    timeout = spec.timeout if isinstance(spec.timeout, int | float) else None
                    value = await asyncio.wait_for(value, timeout)
                json.dumps(value, allow_nan=False)
                return value, None
            except (TypeError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
        return None, error


def _templates(value: Any, view: Any) -> Any:
    if isinstance(value, dict) and "$path" in value and set(value) <= {"$path", "default"}:
        found = resolve(view, value["$path"])
        if found is _MISSING:
            if "default" in value:
                return copy.deepcopy(value["default"])
            raise KeyError(f"path {value['$path']!r} does not exist")
        return copy.deepcopy(found)
    if isinstance(value, dict):
        return {k: _templates(v, view) for k, v in value.items()}
    if isinstance(value, list):
        return [_templates(v, view) for v in value]
    return value


async def run_locally(
    workflow: Any, input_data: Any = None, *, state: dict[str, Any] | None = None, env: dict[str, str] | None = None
) -> LocalRun:
    """Execute a ``@workflow`` class (or instance) in this process and return a :class:`LocalRun`.

    ``run.status``, ``run.outputs`` (step id -> output), ``run.steps[id]`` (status, output, error,
    attempts, logs), ``run.state`` (the final workflow state); ``run.raise_for_status()`` raises
    :class:`~agentainer_flow.WorkflowError` like ``wait_for_completion`` does.
    """
    p = plan(workflow)
    instance = workflow if not isinstance(workflow, type) else workflow()
    runner = _Runner(p, instance, input_data, MemoryState(state), dict(env or {}))
    status = await runner.run()
    return LocalRun(p.spec.name, status, runner.results, runner.state.snapshot(), input_data, runner.order)
