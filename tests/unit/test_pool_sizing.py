"""Pool sizing decisions (pure)."""

from __future__ import annotations

import pytest

from pool import sizing
from pool.sizing import IdleInfo


@pytest.mark.parametrize(
    ("idle", "total", "starting", "max_size", "waiters", "expected"),
    [
        (1, 1, 0, 4, 0, "idle"),
        (1, 4, 0, 4, 0, "idle"),  # full but one idle
        (1, 2, 0, 4, 1, "grow"),  # someone already waits: no overtaking, room to grow
        (1, 4, 0, 4, 1, "wait"),  # someone waits and no room: queue behind
        (0, 0, 0, 4, 0, "grow"),
        (0, 3, 0, 4, 0, "grow"),
        (0, 3, 1, 4, 0, "wait"),  # the last slot is already starting
        (0, 4, 0, 4, 0, "wait"),
        (0, 1, 0, 4, 3, "wait"),  # room is spoken for by earlier waiters
        (0, 0, 0, 1, 0, "grow"),
    ],
)
def test_acquire_action(
    idle: int, total: int, starting: int, max_size: int, waiters: int, expected: str
) -> None:
    assert (
        sizing.acquire_action(idle=idle, total=total, starting=starting, max_size=max_size, waiters=waiters)
        == expected
    )


@pytest.mark.parametrize(
    ("setting", "expected"), [("cold", "cold"), ("error", "error"), ("anything", "cold")]
)
def test_exhausted_action(setting: str, expected: str) -> None:
    assert sizing.exhausted_action(setting) == expected


@pytest.mark.parametrize(
    ("total", "starting", "min_size", "max_size", "warm_up", "expected"),
    [
        (0, 0, 2, 8, True, 2),
        (1, 0, 2, 8, True, 1),
        (1, 1, 2, 8, True, 0),
        (3, 0, 2, 8, True, 0),
        (0, 0, 2, 8, False, 0),
        (0, 0, 5, 3, True, 3),  # never past max_size
        (0, 0, 0, 8, True, 0),
    ],
)
def test_warm_deficit(
    total: int, starting: int, min_size: int, max_size: int, warm_up: bool, expected: int
) -> None:
    assert (
        sizing.warm_deficit(
            total=total, starting=starting, min_size=min_size, max_size=max_size, warm_up=warm_up
        )
        == expected
    )


def _idle(*pairs: tuple[str, float]) -> list[IdleInfo]:
    return [IdleInfo(cid, since) for cid, since in pairs]


@pytest.mark.parametrize(
    ("idle", "total", "min_size", "timeout", "now", "expected"),
    [
        (_idle(("a", 0.0), ("b", 50.0)), 2, 0, 60.0, 100.0, ["a"]),  # b idle 50 s < 60 s
        (_idle(("a", 0.0), ("b", 10.0)), 2, 0, 60.0, 100.0, ["a", "b"]),  # longest idle first
        (_idle(("a", 0.0), ("b", 10.0)), 2, 1, 60.0, 100.0, ["a"]),  # keep min_size
        (_idle(("a", 0.0), ("b", 10.0)), 3, 1, 60.0, 100.0, ["a", "b"]),  # a busy one counts for min_size
        (_idle(("a", 0.0)), 1, 1, 60.0, 100.0, []),
        (_idle(), 4, 0, 60.0, 100.0, []),  # busy containers are never passed in, never reaped
        (_idle(("b", 40.0), ("a", 0.0)), 2, 0, 60.0, 100.0, ["a", "b"]),
    ],
)
def test_containers_to_reap(
    idle: list[IdleInfo], total: int, min_size: int, timeout: float, now: float, expected: list[str]
) -> None:
    got = sizing.containers_to_reap(idle, total=total, min_size=min_size, idle_timeout_s=timeout, now_s=now)
    assert got == expected


@pytest.mark.parametrize(
    ("uses", "max_uses", "expected"), [(0, 1, False), (1, 1, True), (999, 1000, False), (5, 3, True)]
)
def test_should_retire(uses: int, max_uses: int, expected: bool) -> None:
    assert sizing.should_retire(uses, max_uses) is expected


@pytest.mark.parametrize(("busy", "total", "expected"), [(0, 0, 0.0), (1, 4, 0.25), (4, 4, 1.0)])
def test_utilisation_never_nan(busy: int, total: int, expected: float) -> None:
    assert sizing.utilisation(busy, total) == expected


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, 0.0),
        ([3.0], 95, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([float(i) for i in range(1, 101)], 95, 95.0),
    ],
)
def test_percentile(values: list[float], q: float, expected: float) -> None:
    assert sizing.percentile(values, q) == expected


@pytest.mark.parametrize(
    ("scope", "min_size", "active", "quiet_s", "expected"),
    [
        ("image", 2, False, 3600.0, 2),  # an image-scoped pool keeps min_size
        ("workflow", 2, False, 1.0, 2),  # its workflow was active a moment ago
        ("workflow", 2, False, 15.0, 0),  # quiet for workflow_idle_timeout_s: min_size no longer holds
        ("workflow", 2, True, 3600.0, 2),  # a task runs or waits: active
        ("workflow", 0, False, 0.0, 0),
    ],
)
def test_effective_min_size(scope: str, min_size: int, active: bool, quiet_s: float, expected: int) -> None:
    assert (
        sizing.effective_min_size(
            scope=scope, min_size=min_size, active=active, last_active_s=100.0, now_s=100.0 + quiet_s,
            workflow_idle_timeout_s=15.0,
        )
        == expected
    )


@pytest.mark.parametrize(
    ("scope", "idle_timeout_s", "expected"),
    [("image", 300.0, 300.0), ("workflow", 300.0, 15.0), ("workflow", 0.5, 0.5), ("image", 0.5, 0.5)],
)
def test_reap_timeout(scope: str, idle_timeout_s: float, expected: float) -> None:
    assert sizing.reap_timeout_s(scope=scope, idle_timeout_s=idle_timeout_s, workflow_idle_timeout_s=15.0) == expected


def test_a_finished_workflow_pool_is_reaped_whatever_min_size() -> None:
    """min_size=2 with two idle containers: kept while active, both reaped once the workflow is quiet."""
    idle = [IdleInfo("a", 0.0), IdleInfo("b", 0.0)]
    for now, expected in ((10.0, []), (15.0, ["a", "b"])):
        min_size = sizing.effective_min_size(
            scope="workflow", min_size=2, active=False, last_active_s=0.0, now_s=now, workflow_idle_timeout_s=15.0
        )
        timeout = sizing.reap_timeout_s(scope="workflow", idle_timeout_s=300.0, workflow_idle_timeout_s=15.0)
        assert sizing.containers_to_reap(idle, total=2, min_size=min_size, idle_timeout_s=timeout, now_s=now) == expected


@pytest.mark.parametrize(
    ("counts", "min_size", "idle_for_s", "expected"),
    [
        ((0, 0, 0, 0, 0), 0, 20.0, True),
        ((0, 0, 0, 0, 0), 0, 5.0, False),  # not quiet for its reap timeout yet
        ((1, 0, 0, 0, 0), 0, 20.0, False),  # a container
        ((0, 1, 0, 0, 0), 0, 20.0, False),  # one starting
        ((0, 0, 1, 0, 0), 0, 20.0, False),  # a waiter
        ((0, 0, 0, 1, 0), 0, 20.0, False),  # busy
        ((0, 0, 0, 0, 1), 0, 20.0, False),  # a removal still in flight
        ((0, 0, 0, 0, 0), 1, 20.0, False),  # it must warm min_size
    ],
)
def test_should_drop(counts: tuple[int, int, int, int, int], min_size: int, idle_for_s: float, expected: bool) -> None:
    total, starting, waiters, busy, pending = counts
    assert (
        sizing.should_drop(
            total=total, starting=starting, waiters=waiters, busy=busy, pending=pending, min_size=min_size,
            idle_for_s=idle_for_s, reap_after_s=15.0,
        )
        is expected
    )


@pytest.mark.parametrize(
    ("candidates", "exclude", "expected"),
    [
        ([], None, None),
        ([("p1", "a", 5.0)], "p1", None),  # only the requester's own
        ([("p1", "a", 5.0), ("p2", "b", 9.0)], "p1", "b"),
        ([("p1", "a", 5.0), ("p2", "b", 9.0), ("p3", "c", 2.0)], "p1", "c"),  # least recently used
        ([("p1", "a", 5.0), ("p2", "b", 9.0)], None, "a"),  # a one-shot: any pool
    ],
)
def test_choose_eviction(candidates: list[tuple[str, str, float]], exclude: str | None, expected: str | None) -> None:
    chosen = sizing.choose_eviction(
        [sizing.EvictionCandidate(p, c, t) for p, c, t in candidates], exclude_pool=exclude
    )
    assert (chosen.container_id if chosen else None) == expected


@pytest.mark.parametrize(
    ("used", "limit", "waiters", "expected"),
    [(0, 2, 0, "take"), (1, 2, 0, "take"), (2, 2, 0, "wait"), (1, 2, 1, "wait"), (3, 2, 0, "wait")],
)
def test_budget_action(used: int, limit: int, waiters: int, expected: str) -> None:
    assert sizing.budget_action(used=used, limit=limit, waiters=waiters) == expected
