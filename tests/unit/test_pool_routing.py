"""choose_service: warm key holder first, else least loaded; stale services never."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pool.routing import choose_service

NOW = 1_000_000.0


def reg(sid: str, *, busy: int = 0, capacity: int = 10, warm: dict[str, int] | None = None) -> str:
    return json.dumps(
        {"id": sid, "url": f"http://127.0.0.1/{sid}", "capacity": capacity, "busy": busy, "warm": warm or {}}
    )


@pytest.mark.parametrize(
    ("registrations", "heartbeats", "key", "expected"),
    [
        ({}, {}, "k", None),
        ({"a": reg("a")}, {"a": NOW - 100}, "k", "a"),
        ({"a": reg("a")}, {"a": NOW - 10_000}, "k", None),  # stale
        ({"a": reg("a")}, {}, "k", None),  # never beat
        # warm holder wins over a less loaded one
        ({"a": reg("a", busy=5, warm={"k": 1}), "b": reg("b")}, {"a": NOW, "b": NOW}, "k", "a"),
        # a warm holder with 0 idle is not warm
        ({"a": reg("a", busy=5, warm={"k": 0}), "b": reg("b")}, {"a": NOW, "b": NOW}, "k", "b"),
        # among warm holders, more idle first
        ({"a": reg("a", warm={"k": 1}), "b": reg("b", warm={"k": 3})}, {"a": NOW, "b": NOW}, "k", "b"),
        # a stale warm holder is skipped
        ({"a": reg("a", warm={"k": 2}), "b": reg("b", busy=9)}, {"a": NOW - 9000, "b": NOW}, "k", "b"),
        # least loaded, relative to capacity
        (
            {"a": reg("a", busy=2, capacity=4), "b": reg("b", busy=3, capacity=10)},
            {"a": NOW, "b": NOW},
            "k",
            "b",
        ),
        # ties break by id
        ({"b": reg("b"), "a": reg("a")}, {"a": NOW, "b": NOW}, None, "a"),
        # a full warm holder loses to a free one
        ({"a": reg("a", busy=10, warm={"k": 1}), "b": reg("b", busy=1)}, {"a": NOW, "b": NOW}, "k", "b"),
        # unreadable registrations are ignored
        ({"a": "not json", "b": reg("b")}, {"a": NOW, "b": NOW}, "k", "b"),
    ],
)
def test_choose_service(
    registrations: dict[str, Any], heartbeats: dict[str, float], key: str | None, expected: str | None
) -> None:
    assert choose_service(registrations, heartbeats, key, NOW, 5000) == expected


def test_bytes_from_redis() -> None:
    regs = {b"a": reg("a").encode(), b"b": reg("b", warm={"k": 1}).encode()}
    beats = {b"a": NOW, b"b": NOW}
    assert choose_service(regs, beats, "k", NOW, 5000) == "b"
