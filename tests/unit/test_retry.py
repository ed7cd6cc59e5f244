from __future__ import annotations

from typing import Any

import pytest

from flowcore.models import RetryPolicy
from flowcore.retry import attempts_left, base_delay_s, retry_delay_s, should_retry


def policy(**kwargs: Any) -> RetryPolicy:
    kwargs.setdefault("jitter", 0.0)
    return RetryPolicy.model_validate(kwargs)


@pytest.mark.parametrize(
    ("settings", "attempt_failed", "expected"),
    [
        # exponential: initial * multiplier ** (n - 1)
        ({"initial_delay_s": 1, "multiplier": 2}, 1, 1.0),
        ({"initial_delay_s": 1, "multiplier": 2}, 2, 2.0),
        ({"initial_delay_s": 1, "multiplier": 2}, 4, 8.0),
        ({"initial_delay_s": 0.5, "multiplier": 3}, 3, 4.5),
        ({"initial_delay_s": 1, "multiplier": 2, "max_delay_s": 5}, 4, 5.0),
        ({"initial_delay_s": 1, "multiplier": 1}, 50, 1.0),
        ({"initial_delay_s": 1, "multiplier": 100, "max_delay_s": 60}, 10_000, 60.0),
        ({"initial_delay_s": 0, "multiplier": 100}, 10_000, 0.0),
        ({"initial_delay_s": "500ms", "max_delay_s": "1m"}, 3, 2.0),
        # linear: initial * n
        ({"backoff": "linear", "initial_delay_s": 2}, 1, 2.0),
        ({"backoff": "linear", "initial_delay_s": 2}, 3, 6.0),
        ({"backoff": "linear", "initial_delay_s": 2, "max_delay_s": 5}, 3, 5.0),
        # constant: initial
        ({"backoff": "constant", "initial_delay_s": 3}, 1, 3.0),
        ({"backoff": "constant", "initial_delay_s": 3}, 9, 3.0),
        ({"backoff": "constant", "initial_delay_s": 3, "max_delay_s": 1}, 1, 1.0),
        ({"backoff": "constant", "initial_delay_s": 0}, 2, 0.0),
    ],
)
def test_delay_without_jitter(settings: dict[str, Any], attempt_failed: int, expected: float) -> None:
    p = policy(**settings)
    assert base_delay_s(p, attempt_failed) == pytest.approx(expected)
    for rand in (0.0, 0.5, 0.999):
        assert retry_delay_s(p, attempt_failed, rand) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("settings", "attempt_failed", "rand", "expected"),
    [
        ({"initial_delay_s": 10, "jitter": 0.1}, 1, 0.5, 10.0),
        ({"initial_delay_s": 10, "jitter": 0.1}, 1, 0.0, 9.0),
        ({"initial_delay_s": 10, "jitter": 0.1}, 1, 0.75, 10.5),
        ({"initial_delay_s": 10, "jitter": 0.5}, 2, 0.25, 15.0),
        ({"initial_delay_s": 10, "jitter": 1.0}, 1, 0.0, 0.0),
        ({"initial_delay_s": 10, "jitter": 1.0}, 1, 0.9, 18.0),
        # jitter above the cap is capped again
        ({"initial_delay_s": 10, "max_delay_s": 10, "jitter": 0.5}, 1, 0.99, 10.0),
        ({"initial_delay_s": 10, "max_delay_s": 10, "jitter": 0.5}, 1, 0.0, 5.0),
        ({"backoff": "linear", "initial_delay_s": 4, "jitter": 0.25}, 2, 0.0, 6.0),
    ],
)
def test_delay_with_jitter(
    settings: dict[str, Any], attempt_failed: int, rand: float, expected: float
) -> None:
    assert retry_delay_s(policy(**settings), attempt_failed, rand) == pytest.approx(expected)


@pytest.mark.parametrize("jitter", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("rand", [0.0, 0.1, 0.5, 0.9, 0.999999])
@pytest.mark.parametrize("attempt_failed", [1, 2, 7, 100])
def test_delay_always_within_bounds(jitter: float, rand: float, attempt_failed: int) -> None:
    p = policy(initial_delay_s=3, max_delay_s=20, jitter=jitter)
    delay = retry_delay_s(p, attempt_failed, rand)
    base = base_delay_s(p, attempt_failed)
    assert 0.0 <= delay <= 20.0
    assert base * (1 - jitter) - 1e-9 <= delay <= base * (1 + jitter) + 1e-9


@pytest.mark.parametrize(("attempt_failed", "rand"), [(0, 0.5), (-1, 0.5), (1, 1.0), (1, -0.1)])
def test_delay_rejects_bad_arguments(attempt_failed: int, rand: float) -> None:
    with pytest.raises(ValueError):
        retry_delay_s(policy(), attempt_failed, rand)


@pytest.mark.parametrize(
    ("max_attempts", "attempt", "retriable", "expected", "left"),
    [
        (1, 1, True, False, 0),
        (3, 1, True, True, 2),
        (3, 2, True, True, 1),
        (3, 3, True, False, 0),
        (3, 4, True, False, 0),
        (3, 1, False, False, 2),
        (100, 99, True, True, 1),
    ],
)
def test_should_retry(max_attempts: int, attempt: int, retriable: bool, expected: bool, left: int) -> None:
    p = policy(max_attempts=max_attempts)
    assert should_retry(p, attempt, retriable) is expected
    assert attempts_left(p, attempt) == left


def test_should_retry_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError):
        should_retry(policy(max_attempts=3), 0, True)
