"""The engine's transitions, driven in memory: readiness, fan-out, branches, failures, retries,
exactly-once completion, takeover and cancel. No Redis, no Docker: a tiny driver plays the workers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from flowcore import engine
from flowcore.engine import EngineEnv, Plan
from flowcore.errors import Conflict
from flowcore.models import StepStatus, WorkflowDefinition, WorkflowStatus
from flowcore.pool_api import ErrorKind, StateOp, TaskError, TaskResult
from flowcore.records import Snapshot

IMG = {"image": "img", "command": "true"}


class Driver:
    def __init__(self, definition: dict[str, Any]) -> None:
        self.snap = Snapshot(
            wf_id="wf-1",
            definition=WorkflowDefinition.model_validate(definition),
            status=WorkflowStatus.PENDING,
            input=definition.get("input"),
            created_at=0.0,
        )
        self.now = 100.0
        self.queue: list[tuple[str, int, str]] = []
        tokens = itertools.count()
        self.env_factory: Callable[[], EngineEnv] = lambda: EngineEnv(
            now=self.now, rand=lambda: 0.5, new_token=lambda: f"t{next(tokens)}"
        )
        self.plans: list[Plan] = []

    def apply(self, plan: Plan) -> Plan:
        self.plans.append(plan)
        self.queue.extend((d.step_id, d.index, d.token) for d in plan.dispatch)
        return plan

    def start(self) -> Plan:
        return self.apply(engine.start(self.snap, self.env_factory()))

    def claim(self, step: str, index: int, token: str) -> Plan:
        return self.apply(engine.claim(self.snap, self.env_factory(), step, index, token))

    def complete(self, step: str, index: int, token: str, result: TaskResult) -> Plan:
        return self.apply(engine.complete(self.snap, self.env_factory(), step, index, token, result))

    def run(self, behaviour: Callable[[str, int, Any], TaskResult], limit: int = 1000) -> None:
        """Claim and complete queued tasks in FIFO order until nothing is queued."""
        for _ in range(limit):
            if not self.queue:
                return
            step, index, token = self.queue.pop(0)
            plan = self.claim(step, index, token)
            if plan.request is None:
                continue
            self.now += 1
            self.complete(step, index, token, behaviour(step, index, plan.request.input))
        raise AssertionError("did not settle")

    def status(self, step: str) -> StepStatus:
        return self.snap.steps[step].status


def ok(output: Any = None, **kw: Any) -> TaskResult:
    return TaskResult(task_id="x", ok=True, output=output, exit_code=0, **kw)


def fail(kind: ErrorKind = ErrorKind.EXIT_CODE, message: str = "exited with code 1") -> TaskResult:
    return TaskResult(task_id="x", ok=False, exit_code=1, error=TaskError(kind=kind, message=message))


def echo_step(step: str, index: int, doc: Any) -> TaskResult:
    return ok({"step": step, "index": index})


def test_diamond_runs_in_dependency_order_and_completes() -> None:
    d = Driver(
        {
            "name": "diamond",
            "steps": [
                {"id": "d", "depends_on": ["b", "c"], **IMG},
                {"id": "b", "depends_on": ["a"], **IMG},
                {"id": "c", "depends_on": ["a"], **IMG},
                {"id": "a", **IMG},
            ],
        }
    )
    d.start()
    assert [q[0] for q in d.queue] == ["a"]
    order: list[str] = []
    d.run(lambda s, i, doc: (order.append(s), ok(s))[1])
    assert order[0] == "a" and order[-1] == "d" and set(order[1:3]) == {"b", "c"}
    assert d.snap.status == WorkflowStatus.COMPLETED


def test_dependency_outputs_reach_the_input_document() -> None:
    d = Driver({"name": "x", "input": {"n": 2}, "steps": [{"id": "a", **IMG}, {"id": "b", "depends_on": ["a"], **IMG}]})
    d.start()
    seen: dict[str, Any] = {}

    def behaviour(step: str, index: int, doc: Any) -> TaskResult:
        seen[step] = doc
        return ok({"value": 41} if step == "a" else doc["deps"]["a"]["value"] + 1)

    d.run(behaviour)
    assert seen["b"]["deps"] == {"a": {"value": 41}}
    assert seen["a"]["input"] == {"n": 2}
    assert d.snap.steps["b"].output == 42


def test_max_parallel_bounds_running_tasks() -> None:
    d = Driver({"name": "x", "config": {"max_parallel": 2}, "steps": [{"id": f"s{i}", **IMG} for i in range(5)]})
    d.start()
    assert len(d.queue) == 2
    d.run(echo_step)
    assert d.snap.status == WorkflowStatus.COMPLETED


def test_map_over_items_with_concurrency_and_ordered_output() -> None:
    d = Driver(
        {
            "name": "m",
            "input": {"docs": ["a", "bb", "ccc"]},
            "config": {"max_parallel": 10},
            "steps": [
                {"id": "m", "type": "map", "items": "input.docs", "max_concurrency": 2, **IMG},
                {"id": "r", "type": "reduce", "depends_on": ["m"], **IMG},
            ],
        }
    )
    d.start()
    assert len(d.queue) == 2
    reduce_doc: dict[str, Any] = {}

    def behaviour(step: str, index: int, doc: Any) -> TaskResult:
        if step == "m":
            return ok(len(doc["item"]))
        reduce_doc.update(doc)
        return ok(sum(doc["items"]))

    d.queue.reverse()  # completions out of order must still give an ordered output
    d.run(behaviour)
    assert d.snap.steps["m"].output == [1, 2, 3]
    assert reduce_doc["items"] == [1, 2, 3]
    assert d.snap.steps["r"].output == 6


@pytest.mark.parametrize(
    ("items_path", "message"),
    [("input.nope", "not found"), ("input.scalar", "not an array")],
)
def test_map_source_missing_or_not_array_fails_the_step(items_path: str, message: str) -> None:
    d = Driver({"name": "m", "input": {"scalar": 3}, "steps": [{"id": "m", "type": "map", "items": items_path, **IMG}]})
    d.start()
    assert d.status("m") == StepStatus.FAILED
    assert message in (d.snap.steps["m"].error or "")
    assert d.snap.status == WorkflowStatus.FAILED


def test_empty_map_succeeds_with_empty_list() -> None:
    d = Driver({"name": "m", "input": {"d": []}, "steps": [{"id": "m", "type": "map", "items": "input.d", **IMG}]})
    d.start()
    assert d.snap.steps["m"].output == [] and d.snap.status == WorkflowStatus.COMPLETED


def test_map_tolerates_failures_up_to_the_limit() -> None:
    d = Driver(
        {
            "name": "m",
            "input": {"d": [1, 2, 3, 4]},
            "steps": [{"id": "m", "type": "map", "items": "input.d", "tolerated_failures": 1, **IMG}],
        }
    )
    d.start()
    d.run(lambda s, i, doc: fail() if doc["item"] == 3 else ok(doc["item"] * 10))
    rec = d.snap.steps["m"]
    assert rec.status == StepStatus.SUCCEEDED
    assert rec.output == [10, 20, None, 40]
    assert rec.failures[0]["index"] == 2


def test_parallel_with_static_inputs() -> None:
    d = Driver({"name": "p", "steps": [{"id": "p", "type": "parallel", "inputs": [{"x": 1}, {"x": 2}], **IMG}]})
    d.start()
    d.run(lambda s, i, doc: ok(doc["item"]["x"] * 2))
    assert d.snap.steps["p"].output == [2, 4]


@pytest.mark.parametrize(("value", "ran", "skipped"), [(5, "big", "small"), (1, "small", "big")])
def test_branch_runs_one_side_and_skips_the_other_transitively(value: int, ran: str, skipped: str) -> None:
    d = Driver(
        {
            "name": "b",
            "steps": [
                {"id": "count", **IMG},
                {
                    "id": "check",
                    "type": "branch",
                    "depends_on": ["count"],
                    "condition": {"field": "steps.count.output", "op": ">", "value": "3"},
                    "then": ["big"],
                    "else": ["small"],
                },
                {"id": "big", **IMG},
                {"id": "small", **IMG},
                {"id": f"after_{skipped}", "depends_on": [skipped], **IMG},
                {"id": "join", "depends_on": ["big", "small"], **IMG},
            ],
        }
    )
    d.start()
    d.run(lambda s, i, doc: ok(value) if s == "count" else ok(s))
    assert d.status(ran) == StepStatus.SUCCEEDED
    assert d.status(skipped) == StepStatus.SKIPPED
    assert d.status(f"after_{skipped}") == StepStatus.SKIPPED
    assert d.status("join") == StepStatus.SUCCEEDED  # reachable another way
    assert d.snap.status == WorkflowStatus.COMPLETED


@pytest.mark.parametrize("control", ["branch", "decision"])
def test_reduce_chosen_by_a_control_step_gets_only_container_outputs(control: str) -> None:
    # Issue 14: a reduce step chosen by a branch used to receive the branch's control output among its
    # items, and a side the branch skipped as a None item.
    chooser: dict[str, Any] = (
        {"type": "branch", "condition": {"field": "input.n", "op": ">", "value": 0}, "then": ["big", "r"],
         "else": ["small"]}
        if control == "branch"
        else {"type": "decision", "cases": [{"condition": {"field": "input.n", "op": ">", "value": 0},
                                             "targets": ["big", "r"]}], "default": ["small"]}
    )
    d = Driver(
        {
            "name": "r",
            "input": {"n": 5, "xs": [1, 2, 3]},
            "steps": [
                {"id": "m", "type": "map", "items": "input.xs", **IMG},
                {"id": "pick", "depends_on": ["m"], **chooser},
                {"id": "big", **IMG},
                {"id": "small", **IMG},
                {"id": "r", "type": "reduce", "depends_on": ["pick", "m", "big", "small"], **IMG},
            ],
        }
    )
    reduce_doc: dict[str, Any] = {}

    def behaviour(step: str, index: int, doc: Any) -> TaskResult:
        if step == "r":
            reduce_doc.update(doc)
            return ok(sum(doc["items"]))
        return ok(doc["item"] * 10 if step == "m" else 100)

    d.start()
    d.run(behaviour)
    assert d.status("small") == StepStatus.SKIPPED
    assert reduce_doc["items"] == [100, 10, 20, 30]  # big, then m's list: no control output, no skipped side
    assert d.snap.steps["r"].output == 160


def test_decision_picks_first_matching_case_else_default() -> None:
    steps = [
        {
            "id": "route",
            "type": "decision",
            "cases": [
                {"condition": {"field": "input.kind", "op": "==", "value": "a"}, "targets": ["A"]},
                {"condition": {"field": "input.kind", "op": "in", "value": ["a", "b"]}, "targets": ["B"]},
            ],
            "default": ["D"],
        },
        {"id": "A", **IMG},
        {"id": "B", **IMG},
        {"id": "D", **IMG},
    ]
    for kind, expected in (("a", "A"), ("b", "B"), ("z", "D")):
        d = Driver({"name": "d", "input": {"kind": kind}, "steps": steps})
        d.start()
        d.run(echo_step)
        assert [s for s in "ABD" if d.status(s) == StepStatus.SUCCEEDED] == [expected]


def test_fail_fast_cancels_running_and_skips_pending() -> None:
    d = Driver(
        {
            "name": "ff",
            "steps": [{"id": "a", **IMG}, {"id": "b", **IMG}, {"id": "c", "depends_on": ["a"], **IMG}],
        }
    )
    d.start()
    (a, ai, at), (b, bi, bt) = d.queue[:2]
    d.queue.clear()
    d.claim(a, ai, at)
    d.claim(b, bi, bt)
    plan = d.complete(a, ai, at, fail())
    assert d.snap.status == WorkflowStatus.FAILED
    assert d.status("b") == StepStatus.CANCELLED and d.status("c") == StepStatus.SKIPPED
    assert [t.step_id for t in plan.cancelled_tasks] == ["b"]
    # b's late completion is ignored
    late = d.complete(b, bi, bt, ok("late"))
    assert late.empty and d.snap.steps["b"].output is None


def test_continue_strategy_skips_dependents_only() -> None:
    d = Driver(
        {
            "name": "c",
            "config": {"failure_strategy": "continue"},
            "steps": [
                {"id": "bad", **IMG},
                {"id": "child", "depends_on": ["bad"], **IMG},
                {"id": "grandchild", "depends_on": ["child"], **IMG},
                {"id": "other", **IMG},
            ],
        }
    )
    d.start()
    d.run(lambda s, i, doc: fail() if s == "bad" else ok(s))
    assert d.status("child") == StepStatus.SKIPPED and d.status("grandchild") == StepStatus.SKIPPED
    assert d.status("other") == StepStatus.SUCCEEDED
    assert d.snap.status == WorkflowStatus.FAILED


def test_continue_on_error_lets_dependents_run_and_workflow_complete() -> None:
    d = Driver(
        {"name": "c", "steps": [{"id": "bad", "continue_on_error": True, **IMG}, {"id": "next", "depends_on": ["bad"], **IMG}]}
    )
    d.start()
    d.run(lambda s, i, doc: fail() if s == "bad" else ok(s))
    assert d.status("bad") == StepStatus.FAILED and d.status("next") == StepStatus.SUCCEEDED
    assert d.snap.status == WorkflowStatus.COMPLETED


def test_retry_reenqueues_with_backoff_until_success() -> None:
    d = Driver(
        {
            "name": "r",
            "steps": [
                {
                    "id": "flaky",
                    "retry": {"max_attempts": 3, "backoff": "constant", "initial_delay_s": 2, "jitter": 0},
                    **IMG,
                }
            ],
        }
    )
    d.start()
    results = iter([fail(), fail(), ok("third time")])
    d.run(lambda s, i, doc: next(results))
    task = d.snap.tasks["flaky:0"]
    assert task.attempt == 3 and len(task.history) == 2
    assert d.snap.steps["flaky"].output == "third time"
    retries = [p.dispatch[0] for p in d.plans if p.dispatch and p.dispatch[0].run_at]
    assert retries and all(r.run_at is not None for r in retries)


def test_non_retriable_error_is_not_retried() -> None:
    d = Driver({"name": "r", "steps": [{"id": "s", "retry": {"max_attempts": 5}, **IMG}]})
    d.start()
    d.run(lambda s, i, doc: fail(ErrorKind.IMAGE_NOT_FOUND, "image not found: nope"))
    assert d.snap.tasks["s:0"].attempt == 1
    assert "image not found" in (d.snap.steps["s"].error or "")


def test_duplicate_completion_is_applied_once() -> None:
    d = Driver({"name": "x", "steps": [{"id": "a", **IMG}]})
    d.start()
    step, index, token = d.queue.pop(0)
    d.claim(step, index, token)
    d.complete(step, index, token, ok(1, state_updates=[StateOp(op="increment", key="n", value=1)]))
    again = d.complete(step, index, token, ok(2, state_updates=[StateOp(op="increment", key="n", value=1)]))
    assert again.empty
    assert d.snap.state["n"] == 1 and d.snap.steps["a"].output == 1


def test_claim_twice_gives_one_request() -> None:
    d = Driver({"name": "x", "steps": [{"id": "a", **IMG}]})
    d.start()
    step, index, token = d.queue.pop(0)
    assert d.claim(step, index, token).request is not None
    assert d.claim(step, index, token).request is None


def test_lost_lease_hands_the_same_attempt_to_a_new_token() -> None:
    d = Driver({"name": "x", "steps": [{"id": "a", **IMG}]})
    d.start()
    step, index, token = d.queue.pop(0)
    d.claim(step, index, token)
    plan = d.apply(engine.lost(d.snap, d.env_factory(), step, index, token))
    assert plan.dispatch and plan.dispatch[0].token != token
    task = d.snap.tasks["a:0"]
    assert task.attempt == 1 and task.takeovers == 1
    assert d.complete(step, index, token, ok("old worker")).empty  # the lost worker's result is dropped
    d.run(echo_step)
    assert d.snap.status == WorkflowStatus.COMPLETED


def test_start_twice_conflicts_and_cancel_after_finish_conflicts() -> None:
    d = Driver({"name": "x", "steps": [{"id": "a", **IMG}]})
    d.start()
    with pytest.raises(Conflict):
        d.start()
    d.run(echo_step)
    with pytest.raises(Conflict):
        engine.cancel(d.snap, d.env_factory())


def test_cancel_running_workflow() -> None:
    d = Driver({"name": "x", "steps": [{"id": "a", **IMG}, {"id": "b", "depends_on": ["a"], **IMG}]})
    d.start()
    step, index, token = d.queue.pop(0)
    d.claim(step, index, token)
    plan = d.apply(engine.cancel(d.snap, d.env_factory()))
    assert d.snap.status == WorkflowStatus.CANCELLED
    assert plan.lease_remove and plan.cancelled_tasks
    assert d.status("b") == StepStatus.CANCELLED


def test_workflow_timeout_fails_it() -> None:
    d = Driver({"name": "x", "config": {"timeout": "10s"}, "steps": [{"id": "a", **IMG}]})
    plan = d.start()
    assert plan.deadline_at == pytest.approx(110.0)
    step, index, token = d.queue.pop(0)
    d.claim(step, index, token)
    d.now += 11
    d.apply(engine.deadline(d.snap, d.env_factory()))
    assert d.snap.status == WorkflowStatus.FAILED and "timed out" in (d.snap.error or "")


def test_empty_workflow_completes_on_start() -> None:
    d = Driver({"name": "empty"})
    d.start()
    assert d.snap.status == WorkflowStatus.COMPLETED


def test_step_input_templates_and_missing_path_fail_the_task() -> None:
    d = Driver(
        {
            "name": "t",
            "steps": [
                {"id": "a", **IMG},
                {"id": "b", "depends_on": ["a"], "input": {"v": {"$path": "steps.a.output.v"}}, **IMG},
            ],
        }
    )
    d.start()
    d.run(lambda s, i, doc: ok({"w": 1}) if s == "a" else ok(doc["input"]))
    assert d.status("b") == StepStatus.FAILED
    assert "steps.a.output.v" in (d.snap.steps["b"].error or "")


def test_pool_unavailable_is_handed_over_without_spending_an_attempt() -> None:
    d = Driver({"name": "x", "steps": [{"id": "a", **IMG}]})
    d.start()
    results = iter([fail(ErrorKind.POOL_UNAVAILABLE, "pool gone"), ok("fine")])
    d.run(lambda s, i, doc: next(results))
    task = d.snap.tasks["a:0"]
    assert task.attempt == 1 and task.takeovers == 0 and d.snap.status == WorkflowStatus.COMPLETED
    assert task.unavailable_since is None and task.unavailable_retries == 0  # a pool answered: reset


def test_a_task_waits_for_its_pool_service_with_backoff_up_to_the_grace() -> None:
    """Issue 12: a pool service restart of a minute must not fail the workflows in flight."""
    d = Driver({"name": "x", "steps": [{"id": "a", **IMG, "retry": {"max_attempts": 1}}]})
    d.start()
    delays = []
    for _ in range(12):  # 0.5 + 1 + 2 + 4 + 8 + 10 * 7 = 85.5 s of waiting, then 1 s per failure
        step, index, token = d.queue.pop(0)
        d.claim(step, index, token)
        d.now += 1
        plan = d.complete(step, index, token, fail(ErrorKind.POOL_UNAVAILABLE, "pool gone"))
        (dispatch,) = plan.dispatch
        assert dispatch.run_at is not None
        delays.append(round(dispatch.run_at - d.now, 3))
        d.now = dispatch.run_at
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0]
    task = d.snap.tasks["a:0"]
    assert task.attempt == 1 and task.takeovers == 0 and d.snap.status == WorkflowStatus.RUNNING
    # The pool comes back: the task runs and the wait is forgotten.
    d.run(lambda s, i, doc: ok("back"))
    assert d.snap.status == WorkflowStatus.COMPLETED and d.snap.tasks["a:0"].output == "back"


def test_past_the_grace_an_unreachable_pool_fails_the_attempt() -> None:
    d = Driver({"name": "x", "steps": [{"id": "a", **IMG, "retry": {"max_attempts": 1}}]})
    d.start()
    d.env_factory = (lambda make: lambda: EngineEnv(**{**make().__dict__, "pool_grace_s": 5.0}))(d.env_factory)
    for _ in range(10):
        if not d.queue:
            break
        step, index, token = d.queue.pop(0)
        d.claim(step, index, token)
        d.now += 2
        d.complete(step, index, token, fail(ErrorKind.POOL_UNAVAILABLE, "pool gone"))
    task = d.snap.tasks["a:0"]
    assert task.status.value == "failed" and task.error is not None
    assert task.error.kind == ErrorKind.POOL_UNAVAILABLE and d.snap.status == WorkflowStatus.FAILED


def test_complete_records_the_task_resource_usage() -> None:
    d = Driver({"name": "usage", "steps": [{"id": "a", **IMG}, {"id": "b", **IMG}]})
    d.start()
    d.run(lambda s, i, doc: ok(1, cpu_time_s=0.25, peak_memory_bytes=4096) if s == "a" else ok(2))
    a, b = d.snap.tasks["a:0"], d.snap.tasks["b:0"]
    assert (a.cpu_time_s, a.peak_memory_bytes) == (0.25, 4096)
    assert (b.cpu_time_s, b.peak_memory_bytes) == (None, None)  # not measured: unknown, never 0


def test_complete_hands_the_task_last_log_lines_to_the_commit() -> None:
    from flowcore.logstream import LogLine
    from flowcore.pool_api import TaskLogLine

    d = Driver({"name": "logs", "steps": [{"id": "a", **IMG}]})
    d.start()
    step, index, token = d.queue.pop(0)
    d.claim(step, index, token)
    lines = [TaskLogLine(stream="stderr", line="warn", ts=1.5)]
    plan = d.complete(step, index, token, ok(1, logs=lines))
    assert plan.log_lines == [LogLine("a", 0, 1, "stderr", "warn", 1.5)]
    assert d.complete(step, index, token, ok(1, logs=lines)).log_lines == []  # a duplicate adds nothing


def test_a_map_over_more_items_than_the_limit_fails_its_step_clearly() -> None:
    d = Driver({"name": "m", "input": {"xs": list(range(6))}, "steps": [{"id": "m", "type": "map", "items": "input.xs", **IMG}]})
    d.env_factory = (lambda make: (lambda: replace(make(), max_map_items=5)))(d.env_factory)
    d.start()
    assert d.status("m") == StepStatus.FAILED and not d.queue
    assert "has 6 items; the limit is 5" in (d.snap.steps["m"].error or "")
    assert d.snap.status == WorkflowStatus.FAILED
