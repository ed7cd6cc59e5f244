"""The bucketed metrics (flowcore.metric_series) that the dashboard draws: one percentile definition
with the aggregate (nearest rank), counts by creation bucket, no NaN, bounded bucket count."""

from __future__ import annotations

import json

import pytest

from flowcore import metric_series, metrics
from flowcore.metrics import RunSummary
from flowcore.models import WorkflowStatus

NOW = 1_000_000.0


def run(created_ago_s: float, status: WorkflowStatus, took_s: float | None = None) -> RunSummary:
    created = NOW - created_ago_s
    started = created + 1 if took_s is not None or status == WorkflowStatus.RUNNING else None
    finished = started + took_s if started is not None and took_s is not None else None
    return RunSummary(
        wf_id=f"wf-{created_ago_s}-{status.value}", name="n", status=status, created_at=created,
        started_at=started, finished_at=finished,
    )


def test_p95_is_the_aggregates_nearest_rank_not_an_interpolation() -> None:
    # Issue 14: for durations [1, 2, 3, 4, 10] the dashboard said 8.8 and the API 10.
    runs = [run(100 + i, WorkflowStatus.COMPLETED, took) for i, took in enumerate([1, 2, 3, 4, 10])]
    body = metric_series.series(runs, NOW, 3600, 1)
    bucket = body["buckets"][0]
    assert bucket["p95_duration"] == 10
    assert bucket["p95_duration"] == metrics.aggregate(runs, NOW, 3600)["p95_duration"]
    assert bucket["p50_duration"] == 3
    assert bucket["avg_duration"] == 4


def test_runs_count_in_the_bucket_of_their_creation() -> None:
    runs = [
        run(3500, WorkflowStatus.COMPLETED, 2),  # oldest bucket
        run(3400, WorkflowStatus.FAILED, 5),
        run(10, WorkflowStatus.RUNNING),  # newest bucket
        run(5, WorkflowStatus.CANCELLED),  # cancelled before it started: no duration
        run(7200, WorkflowStatus.COMPLETED, 1),  # outside the window
    ]
    body = metric_series.series(runs, NOW, 3600, 4)
    first, *_, last = body["buckets"]
    assert body["bucket_s"] == 900
    assert first["created"] == {"completed": 1, "failed": 1, "cancelled": 0, "active": 0}
    assert first["success_rate"] == 50.0
    assert first["p95_duration"] == 5
    assert last["created"] == {"completed": 0, "failed": 0, "cancelled": 1, "active": 1}
    assert last["success_rate"] == 0.0 and last["p95_duration"] is None
    assert body["buckets"][1]["success_rate"] is None  # nothing finished: unknown, not 0
    assert "NaN" not in json.dumps(body)
    assert first["from_time"] < first["to_time"] == body["buckets"][1]["from_time"]


def test_a_run_created_at_now_is_in_the_last_bucket() -> None:
    body = metric_series.series([run(0, WorkflowStatus.RUNNING)], NOW, 60, 6)
    assert body["buckets"][-1]["created"]["active"] == 1


@pytest.mark.parametrize("buckets", [0, metric_series.MAX_BUCKETS + 1])
def test_bucket_count_is_bounded(buckets: int) -> None:
    with pytest.raises(ValueError, match="buckets"):
        metric_series.series([], NOW, 60, buckets)


def test_empty_window_has_empty_buckets() -> None:
    body = metric_series.series([], NOW, 3600, 3)
    assert [b["created"]["active"] for b in body["buckets"]] == [0, 0, 0]
    assert all(b["p95_duration"] is None and b["avg_duration"] is None for b in body["buckets"])
