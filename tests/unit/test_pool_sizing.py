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
