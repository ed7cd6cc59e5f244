"""Retry decisions for step attempts: whether to try again, and how long to wait first.

Pure functions over a :class:`~flowcore.models.RetryPolicy`. The random draw for jitter is an
argument, so a worker passes ``random.random()`` and a test passes a fixed number.

Attempts are numbered from 1. ``max_attempts`` counts every attempt, the first one included, so
``max_attempts=1`` means no retry at all.
"""

from __future__ import annotations

import math

from flowcore.models import Backoff, RetryPolicy


def base_delay_s(policy: RetryPolicy, attempt_failed: int) -> float:
    """The delay before attempt ``attempt_failed + 1``, without jitter, capped at ``max_delay_s``.

    ``n = attempt_failed``: exponential ``initial * multiplier ** (n - 1)``, linear ``initial * n``,
    constant ``initial``.
    """
    if attempt_failed < 1:
        raise ValueError(f"attempt_failed counts from 1, got {attempt_failed}")
    initial = policy.initial_delay_s
    if policy.backoff is Backoff.EXPONENTIAL:
        try:
            delay = initial * policy.multiplier ** (attempt_failed - 1)
        except OverflowError:
            # Far past any cap, so the exact value does not matter; zero stays zero.
            delay = math.inf if initial > 0 else 0.0
    elif policy.backoff is Backoff.LINEAR:
        delay = initial * attempt_failed
    else:
        delay = initial
    return min(delay, policy.max_delay_s)


def retry_delay_s(policy: RetryPolicy, attempt_failed: int, rand: float) -> float:
    """Seconds to wait before attempt ``attempt_failed + 1``.

    The capped base delay (:func:`base_delay_s`) is multiplied by ``1 + jitter * (2 * rand - 1)``,
    i.e. spread evenly over ``+/- jitter`` of itself, then capped at ``max_delay_s`` again and
    floored at 0. ``rand`` is a uniform draw in ``[0, 1)``; ``rand = 0.5`` gives the base delay.
    """
    if not 0.0 <= rand < 1.0:
        raise ValueError(f"rand must be in [0, 1), got {rand}")
    delay = base_delay_s(policy, attempt_failed) * (1.0 + policy.jitter * (2.0 * rand - 1.0))
    return max(0.0, min(delay, policy.max_delay_s))


def should_retry(policy: RetryPolicy, attempt: int, retriable: bool) -> bool:
    """Whether to run another attempt after attempt number ``attempt`` failed.

    ``retriable`` is false for failures that another attempt cannot fix (the step was cancelled,
    its definition is invalid, its image does not exist); those never retry.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    return retriable and attempt < policy.max_attempts


def attempts_left(policy: RetryPolicy, attempt: int) -> int:
    """How many attempts may still follow attempt number ``attempt`` (0 when it was the last)."""
    return max(0, policy.max_attempts - attempt)
