"""Fair shares of the task queue (flowcore.fairness, ADR 018): pure scoring decisions."""

from __future__ import annotations

from flowcore.fairness import (
    FAIR_MAX_MS,
    FAIR_STEP_MS,
    ahead_of_each,
    in_flight,
    penalty_ms,
    queue_score_ms,
)
from flowcore.models import StepStatus
from flowcore.records import StepRecord

NOW = 1_800_000_000_000


def test_a_task_ready_now_is_never_deferred() -> None:
    # Whatever its workflow's load, the job is due at once: only its order among ready jobs changes.
    for ahead in (0, 1, 10, 499, 500, 10**6):
        assert queue_score_ms(NOW, 0, ahead) <= NOW


def test_a_workflow_with_tasks_in_flight_queues_its_next_one_behind_a_newcomers() -> None:
    wide = queue_score_ms(NOW - 1000, 0, 200)  # a map's task, ready a second earlier, 200 in flight
    newcomer = queue_score_ms(NOW, 0, 0)  # another workflow's first task, ready now
    assert newcomer < wide
    # ...but not behind one that became ready much later than its penalty.
    assert wide < queue_score_ms(NOW - 1000 + penalty_ms(200) + 1, 0, 0)


def test_the_penalty_grows_per_task_in_flight_and_is_capped() -> None:
    assert penalty_ms(0) == 0 and penalty_ms(-3) == 0
    assert penalty_ms(5) == 5 * FAIR_STEP_MS
    assert penalty_ms(10**6) == FAIR_MAX_MS


def test_priority_and_share_add_up() -> None:
    assert queue_score_ms(NOW, 3000, 10) == queue_score_ms(NOW, 0, 10) - 3000


def test_each_task_of_one_commit_counts_those_ahead_of_it() -> None:
    assert ahead_of_each(10, 3) == [7, 8, 9]
    assert ahead_of_each(2, 3) == [0, 1, 2]  # never negative
    assert ahead_of_each(0, 0) == []


def test_in_flight_counts_only_running_steps() -> None:
    running = StepRecord(id="a", type="map", status=StepStatus.RUNNING, dispatched=10, succeeded=3, failed=1)
    done = StepRecord(id="b", type="task", status=StepStatus.SUCCEEDED, dispatched=5, succeeded=5)
    assert in_flight([running, done]) == 6
