"""The metrics documents (flowcore.metrics) over records made by the real engine transitions: empty
windows, failing and running workflows, retried steps, pooled vs cold dispatches. Never NaN."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import pytest

from flowcore import engine, metrics
from flowcore.engine import EngineEnv
from flowcore.metrics import RunSummary
from flowcore.models import WorkflowDefinition, WorkflowStatus
from flowcore.pool_api import DispatchMode, ErrorKind, TaskError, TaskResult, TaskTimings
from flowcore.records import Snapshot, TaskRecord

IMG = {"image": "img", "command": "true"}


class Run:
    """One workflow driven through the engine with a controlled clock (seconds)."""

    def __init__(self, definition: dict[str, Any], created_at: float = 1000.0, wf_id: str = "wf-1") -> None:
        self.snap = Snapshot(
            wf_id=wf_id,
            definition=WorkflowDefinition.model_validate(definition),
            status=WorkflowStatus.PENDING,
            input=definition.get("input"),
            created_at=created_at,
        )
        self.now = created_at
        tokens = itertools.count()
        self._token = lambda: f"t{next(tokens)}"
        self.queue: list[tuple[str, int, str]] = []

    def env(self) -> EngineEnv:
        return EngineEnv(now=self.now, rand=lambda: 0.5, new_token=self._token)

    def start(self, at: float) -> Run:
        self.now = at
        plan = engine.start(self.snap, self.env())
        self.queue.extend((d.step_id, d.index, d.token) for d in plan.dispatch)
        return self

    def step(self, result: TaskResult, *, wait_s: float = 0.5, run_s: float = 2.0) -> None:
        """Claim the first queued task after ``wait_s`` and complete it ``run_s`` later with ``result``."""
        step_id, index, token = self.queue.pop(0)
        self.now += wait_s
        assert engine.claim(self.snap, self.env(), step_id, index, token).request is not None
        self.now += run_s
        plan = engine.complete(self.snap, self.env(), step_id, index, token, result)
        self.queue.extend((d.step_id, d.index, d.token) for d in plan.dispatch)

    def claim_only(self, wait_s: float = 0.5) -> None:
        step_id, index, token = self.queue.pop(0)
        self.now += wait_s
        assert engine.claim(self.snap, self.env(), step_id, index, token).request is not None


def warm(container: str = "c-warm", output: Any = None) -> TaskResult:
    return TaskResult(task_id="x", ok=True, output=output, exit_code=0, container_id=container, pooled=True,
                      mode=DispatchMode.AGENT, pool_key="k1", timings=TaskTimings(acquire_ms=1.5, exec_ms=250.0))


def cold(container: str = "c-cold") -> TaskResult:
    return TaskResult(task_id="x", ok=True, exit_code=0, container_id=container, pooled=False,
                      mode=DispatchMode.COLD, timings=TaskTimings(acquire_ms=0.0, exec_ms=400.0))


def failed(container: str = "c-warm", message: str = "exited with code 3", pooled: bool = True) -> TaskResult:
    return TaskResult(task_id="x", ok=False, exit_code=3, container_id=container, pooled=pooled,
                      mode=DispatchMode.AGENT if pooled else DispatchMode.COLD,
                      error=TaskError(kind=ErrorKind.EXIT_CODE, message=message),
                      timings=TaskTimings(acquire_ms=2.0, exec_ms=100.0))


def strict_json(doc: Any) -> Any:
    """Fails on NaN or infinity anywhere in the document."""
    return json.loads(json.dumps(doc, allow_nan=False))


def two_steps(**b: Any) -> dict[str, Any]:
    return {"name": "two", "steps": [{"id": "a", **IMG}, {"id": "b", "depends_on": ["a"], **IMG, **b}]}


# ---- per workflow ---------------------------------------------------------------------------------
def test_pooled_and_cold_steps_count_warm_and_cold_dispatches() -> None:
    run = Run(two_steps(mode="cold")).start(at=1001.0)
    run.step(warm("c1"), wait_s=0.25, run_s=1.0)
    run.step(cold("c2"), wait_s=0.5, run_s=2.0)
    doc = strict_json(metrics.workflow_metrics(run.snap, now=5000.0))
    assert doc["status"] == "completed" and doc["name"] == "two" and doc["workflow_id"] == "wf-1"
    assert doc["duration"] == pytest.approx(3.75) and doc["start_time"].endswith("Z") and doc["end_time"]
    a, b = doc["step_metrics"]["a"], doc["step_metrics"]["b"]
    assert a["agent_pooled"] is True and a["mode"] == "agent" and a["container_id"] == "c1"
    assert a["queue_wait_s"] == pytest.approx(0.25) and a["acquire_s"] == pytest.approx(0.0015)
    assert a["execution_s"] == pytest.approx(0.25) and a["duration"] == pytest.approx(1.25)
    assert (a["warm_dispatches"], a["cold_dispatches"], a["attempts"], a["retries"]) == (1, 0, 1, 0)
    assert b["agent_pooled"] is False and b["mode"] == "cold" and (b["warm_dispatches"], b["cold_dispatches"]) == (0, 1)
    usage = doc["resource_usage"]
    assert usage == {"cpu_time_s": None, "peak_memory_bytes": None, "containers_started": 1, "containers_used": 2,
                     "dispatches": 2, "warm_dispatches": 1, "cold_dispatches": 1, "pool_efficiency": 50.0}
    assert doc["errors"] == [] and doc["error_details"] == []


def test_failing_workflow_lists_its_errors_and_skipped_steps() -> None:
    definition = {"name": "f", "steps": [{"id": "a", **IMG}, {"id": "b", "depends_on": ["a"], **IMG},
                                         {"id": "c", "depends_on": ["b"], **IMG}]}
    run = Run(definition).start(at=1000.0)
    run.step(warm())
    run.step(failed(message="disk on fire"))
    doc = strict_json(metrics.workflow_metrics(run.snap, now=9999.0))
    assert doc["status"] == "failed" and doc["errors"] == ["b: disk on fire"]
    assert set(doc["step_metrics"]) == {"a", "b", "c"} and doc["steps_finished"] == 3 and doc["steps_total"] == 3
    assert doc["step_metrics"]["b"]["tasks_failed"] == 1 and doc["step_metrics"]["b"]["error"] == "disk on fire"
    assert doc["step_metrics"]["c"]["status"] == "skipped" and doc["step_metrics"]["c"]["duration"] is None
    assert doc["step_metrics"]["c"]["tasks"] == 0 and doc["step_metrics"]["c"]["attempts"] == 0
    assert doc["error_details"] == [{"step_id": "b", "index": 0, "attempt": 1, "kind": "exit_code",
                                     "message": "disk on fire", "retried": False}]
    assert doc["resource_usage"]["dispatches"] == 2 and doc["resource_usage"]["pool_efficiency"] == 100.0


def test_retried_step_counts_every_attempt() -> None:
    retry = {"retry": {"max_attempts": 3, "initial_delay_s": 0}}
    run = Run({"name": "r", "steps": [{"id": "flaky", **IMG, **retry}]}).start(at=1000.0)
    run.step(failed("c1", "first"))
    run.step(failed("c1", "second"))
    run.step(warm("c1", output=1))
    doc = strict_json(metrics.workflow_metrics(run.snap, now=2000.0))
    flaky = doc["step_metrics"]["flaky"]
    assert doc["status"] == "completed" and flaky["attempts"] == 3 and flaky["retries"] == 2
    assert (flaky["warm_dispatches"], flaky["cold_dispatches"], flaky["containers"]) == (3, 0, 1)
    assert [(e["attempt"], e["message"], e["retried"]) for e in doc["error_details"]] == [(1, "first", True), (2, "second", True)]
    assert doc["errors"] == []  # the step succeeded in the end


def test_retried_cold_attempts_in_other_containers_are_cold() -> None:
    retry = {"retry": {"max_attempts": 2, "initial_delay_s": 0}}
    run = Run({"name": "r", "steps": [{"id": "s", **IMG, **retry}]}).start(at=1000.0)
    run.step(failed("c-old", "boom", pooled=False))
    run.step(warm("c-new"))
    usage = metrics.workflow_metrics(run.snap, now=2000.0)["resource_usage"]
    assert (usage["warm_dispatches"], usage["cold_dispatches"], usage["containers_used"]) == (1, 1, 2)


def test_running_workflow_counts_up_to_now() -> None:
    run = Run(two_steps()).start(at=1000.0)
    run.claim_only(wait_s=1.0)
    doc = strict_json(metrics.workflow_metrics(run.snap, now=1010.0))
    assert doc["status"] == "running" and doc["duration"] == pytest.approx(10.0) and doc["end_time"] is None
    assert set(doc["step_metrics"]) == {"a"}  # b is still pending
    a = doc["step_metrics"]["a"]
    assert a["status"] == "running" and a["duration"] == pytest.approx(10.0) and a["queue_wait_s"] == pytest.approx(1.0)
    assert a["agent_pooled"] is False and a["execution_s"] is None and a["warm_dispatches"] == 0
    assert doc["resource_usage"]["dispatches"] == 0 and doc["resource_usage"]["pool_efficiency"] == 0.0


def test_pending_workflow_has_no_duration() -> None:
    run = Run(two_steps())
    doc = strict_json(metrics.workflow_metrics(run.snap, now=2000.0))
    assert doc["status"] == "pending" and doc["duration"] is None and doc["start_time"] is None
    assert doc["step_metrics"] == {} and doc["steps_total"] == 2


class MeasuredTask(TaskRecord):
    """What the pool reports per task once it reads the container's cgroup (may be missing)."""

    cpu_time_s: float | None = None
    peak_memory_bytes: int | None = None
    pool_hit: bool | None = None


def test_cpu_memory_and_pool_hits_when_reported_and_nothing_when_not() -> None:
    run = Run(two_steps()).start(at=1000.0)
    run.step(warm("c1"))
    run.step(warm("c2"))
    a, b = run.snap.tasks["a:0"], run.snap.tasks["b:0"]
    run.snap.tasks["a:0"] = MeasuredTask.model_validate({**a.model_dump(), "cpu_time_s": 0.5,
                                                        "peak_memory_bytes": 10_000_000, "pool_hit": False})
    run.snap.tasks["b:0"] = MeasuredTask.model_validate({**b.model_dump(), "cpu_time_s": float("nan"),
                                                        "peak_memory_bytes": 20_000_000, "pool_hit": True})
    doc = strict_json(metrics.workflow_metrics(run.snap, now=2000.0))
    usage = doc["resource_usage"]
    assert usage["cpu_time_s"] == 0.5 and usage["peak_memory_bytes"] == 20_000_000
    # a ran in a pooled container the pool had to start: a cold dispatch that started a container
    assert (usage["warm_dispatches"], usage["cold_dispatches"], usage["containers_started"]) == (1, 1, 1)
    assert doc["step_metrics"]["b"]["cpu_time_s"] is None and doc["step_metrics"]["a"]["cpu_time_s"] == 0.5


def test_clock_skew_never_gives_negative_durations() -> None:
    run = Run(two_steps()).start(at=1000.0)
    run.step(warm())
    run.snap.steps["a"].finished_at = 900.0
    run.snap.finished_at = 10.0
    doc = strict_json(metrics.workflow_metrics(run.snap, now=2000.0))
    assert doc["step_metrics"]["a"]["duration"] == 0.0 and doc["duration"] == 0.0


# ---- percentiles and helpers --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, None),
        ([7.0], 50, 7.0),
        ([7.0], 95, 7.0),
        ([1.0, 2.0], 50, 1.0),
        ([1.0, 2.0], 95, 2.0),
        ([float(i) for i in range(1, 11)], 50, 5.0),
        ([float(i) for i in range(1, 11)], 95, 10.0),
        ([float(i) for i in range(1, 101)], 95, 95.0),
        ([3.0, 1.0, 2.0], 0, 1.0),
        ([3.0, 1.0, 2.0], 100, 3.0),
    ],
)
def test_nearest_rank_percentile(values: list[float], q: float, expected: float | None) -> None:
    assert metrics.percentile(values, q) == expected


@pytest.mark.parametrize(
    ("part", "whole", "expected"),
    [(0, 0, 0.0), (1, 0, 0.0), (1, 3, 33.33), (3, 3, 100.0), (5, 3, 100.0), (-1, 3, 0.0)],
)
def test_percent_is_bounded_and_defined_for_zero(part: int, whole: int, expected: float) -> None:
    assert metrics.percent(part, whole) == expected


@pytest.mark.parametrize("value", [None, float("nan"), float("inf"), -float("inf"), True, "1", [1]])
def test_finite_drops_what_is_not_a_finite_number(value: Any) -> None:
    assert metrics.finite(value) is None


# ---- many workflows -------------------------------------------------------------------------------
def finished_run(wf_id: str, created: float, duration_s: float, outcome: str, result: TaskResult | None = None) -> RunSummary:
    run = Run({"name": wf_id, "steps": [{"id": "s", **IMG}]}, created_at=created, wf_id=wf_id).start(at=created)
    if outcome == "cancelled":
        run.now = created + duration_s
        engine.cancel(run.snap, run.env())
    else:
        ok = outcome == "completed"
        run.step(result or (warm() if ok else failed()), wait_s=0.0, run_s=duration_s)
    assert run.snap.status.value == outcome
    return RunSummary.of(run.snap)


def test_empty_window_is_defined_without_nan() -> None:
    doc = strict_json(metrics.aggregate([], now=10_000.0, window_s=3600.0))
    assert doc["total_workflows"] == 0 and doc["finished_workflows"] == 0 and doc["dispatches"] == 0
    assert doc["success_rate"] == 0.0 and doc["pool_efficiency"] == 0.0 and doc["throughput_per_min"] == 0.0
    assert doc["avg_duration"] is None and doc["p50_duration"] is None and doc["p95_duration"] is None
    assert doc["by_status"] == {"pending": 0, "queued": 0, "running": 0, "completed": 0, "failed": 0, "cancelled": 0}
    assert metrics.history([], now=10_000.0, window_s=3600.0, limit=10) == []
    # the spec's formatting works on the empty window
    assert f"{doc['success_rate']:.1f}% {doc['pool_efficiency']:.1f}%" == "0.0% 0.0%"


def test_aggregate_over_finished_running_and_pending_workflows() -> None:
    now = 10_000.0
    runs = [
        finished_run("ok1", now - 600, 2.0, "completed"),
        finished_run("ok2", now - 500, 4.0, "completed", cold()),
        finished_run("bad", now - 400, 6.0, "failed"),
        finished_run("stop", now - 300, 8.0, "cancelled"),
        RunSummary.of(Run(two_steps(), created_at=now - 200, wf_id="live").start(at=now - 200).snap),
        RunSummary.of(Run(two_steps(), created_at=now - 100, wf_id="new").snap),
        finished_run("old", now - 7200, 1.0, "completed"),  # outside the window
    ]
    doc = strict_json(metrics.aggregate(runs, now=now, window_s=3600.0))
    assert doc["total_workflows"] == 6 and doc["finished_workflows"] == 4
    assert doc["by_status"] == {"pending": 1, "queued": 0, "running": 1, "completed": 2, "failed": 1, "cancelled": 1}
    assert doc["completed"] == 2 and doc["running"] == 1
    assert doc["success_rate"] == 50.0  # 2 completed of 4 finished; running and pending left out
    assert doc["avg_duration"] == pytest.approx(5.0) and doc["p50_duration"] == pytest.approx(4.0)
    assert doc["p95_duration"] == pytest.approx(8.0) and doc["max_duration"] == pytest.approx(8.0)
    # ok1 (warm), ok2 (cold), bad (warm, failed); the cancelled task never returned a result
    assert (doc["dispatches"], doc["warm_dispatches"], doc["cold_dispatches"]) == (3, 2, 1)
    assert doc["pool_efficiency"] == 66.67
    assert doc["throughput_per_min"] == pytest.approx(4 / 60, abs=1e-4)


def test_window_with_only_running_workflows() -> None:
    now = 10_000.0
    live = RunSummary.of(Run(two_steps(), created_at=now - 50).start(at=now - 40).snap)
    doc = strict_json(metrics.aggregate([live], now=now, window_s=60.0))
    assert doc["total_workflows"] == 1 and doc["success_rate"] == 0.0 and doc["avg_duration"] is None
    assert doc["pool_efficiency"] == 0.0
    (item,) = metrics.history([live], now=now, window_s=60.0, limit=10)
    assert item["status"] == "running" and item["duration"] == pytest.approx(40.0) and item["end_time"] is None


def test_history_is_newest_first_within_the_window_and_limited() -> None:
    now = 10_000.0
    runs = [finished_run(f"w{i}", now - 100 * i, 1.0, "completed") for i in range(1, 6)]
    runs.append(finished_run("ancient", now - 90_000, 1.0, "failed"))
    items = strict_json(metrics.history(runs, now=now, window_s=3600.0, limit=3))
    assert [i["workflow_id"] for i in items] == ["w1", "w2", "w3"]
    first = items[0]
    assert set(first) >= {"workflow_id", "name", "status", "start_time", "duration", "end_time", "created_time"}
    assert first["status"] == "completed" and first["duration"] == pytest.approx(1.0) and first["origin"] == "api"


def test_step_durations_leave_out_control_and_unfinished_steps() -> None:
    definition = {"name": "b", "steps": [
        {"id": "a", **IMG, "output": "json"},
        {"id": "br", "type": "branch", "depends_on": ["a"], "condition": {"field": "steps.a.output", "op": "exists"},
         "then": ["t"]},
        {"id": "t", **IMG}]}
    run = Run(definition).start(at=1000.0)
    run.step(warm(output=1), wait_s=0.0, run_s=3.0)
    durations = metrics.step_durations([RunSummary.of(run.snap)], now=2000.0)
    assert durations == {"sequential": [pytest.approx(3.0)]}
    assert all(math.isfinite(v) for v in durations["sequential"])


def test_a_steps_ready_time_and_its_first_task_start_are_both_shown() -> None:
    # Issue 14: a step's started_at counts from when it became ready; the time its first task started
    # is shown beside it, so a step that waited for a max_parallel slot is not reported as running.
    from gateway.views import step_view

    run = Run({"name": "slots", "config": {"max_parallel": 1}, "steps": [{"id": "a", **IMG}, {"id": "b", **IMG}]})
    run.start(at=1000.0)
    run.step(warm(), wait_s=0.5, run_s=2.0)  # a: claimed at 1000.5, done at 1002.5
    run.step(warm(), wait_s=0.5, run_s=2.0)  # b: ready at 1000, claimed at 1003, done at 1005
    b = run.snap.steps["b"]
    doc = metrics.step_metrics(b, [run.snap.tasks["b:0"]], set(), run.now)
    assert doc["start_time"] == metrics.iso(1000.0) and doc["duration"] == 5.0
    assert doc["first_task_start_time"] == metrics.iso(1003.0) and doc["run_duration"] == 2.0
    view = step_view(run.snap, b)
    assert view["ready_at"] == view["started_at"] == metrics.iso(1000.0)
    assert view["first_task_started_at"] == metrics.iso(1003.0)
    assert view["duration_s"] == 5.0 and view["run_duration_s"] == 2.0
