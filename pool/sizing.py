"""Pool sizing decisions as pure functions over plain numbers (I/O lives in :mod:`pool.warm`).

- :func:`acquire_action`: take an idle container, grow the pool, or wait in the queue.
- :func:`exhausted_action`: after the bounded wait, start a one-shot container or fail.
- :func:`warm_deficit`: how many containers to start now to reach ``min_size``.
- :func:`containers_to_reap`: which idle containers have been idle too long (never below
  ``min_size``, never a busy one: only idle ones are passed in).
- :func:`should_retire`: a container that has served ``max_uses`` tasks is replaced.
- :func:`effective_min_size`, :func:`reap_timeout_s`, :func:`should_drop`: a workflow-scoped pool
  keeps ``min_size`` only while its workflow is active, its idle containers go after
  ``workflow_idle_timeout_s``, and an empty, settled pool is forgotten.
- :func:`choose_eviction`: at the service's container cap, which idle container of another pool
  makes room (the least recently used).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

AcquireAction = Literal["idle", "grow", "wait"]
ExhaustedAction = Literal["cold", "error"]


def acquire_action(*, idle: int, total: int, starting: int, max_size: int, waiters: int) -> AcquireAction:
    """What a new request does. ``total`` counts live containers (idle and busy), not starting ones.

    Waiters already queued are served first (FIFO fairness): a newcomer takes an idle container only
    when nobody waits, and grows the pool only while there is room for everyone queued before it.
    """
    if idle > 0 and waiters == 0:
        return "idle"
    if total + starting + waiters < max_size:
        return "grow"
    return "wait"


def exhausted_action(on_exhausted: str) -> ExhaustedAction:
    return "error" if on_exhausted == "error" else "cold"


def warm_deficit(*, total: int, starting: int, min_size: int, max_size: int, warm_up: bool) -> int:
    """Containers to start so that the pool holds ``min_size`` (bounded by ``max_size``)."""
    if not warm_up:
        return 0
    target = min(min_size, max_size)
    return max(0, target - total - starting)


@dataclass(frozen=True)
class IdleInfo:
    container_id: str
    idle_since_s: float


def containers_to_reap(
    idle: Sequence[IdleInfo], *, total: int, min_size: int, idle_timeout_s: float, now_s: float
) -> list[str]:
    """Idle containers past ``idle_timeout_s``, longest idle first, keeping ``min_size`` in all."""
    expired = sorted(
        (i for i in idle if now_s - i.idle_since_s >= idle_timeout_s), key=lambda i: i.idle_since_s
    )
    room = max(0, total - min_size)
    return [i.container_id for i in expired[:room]]


def effective_min_size(
    *, scope: str, min_size: int, active: bool, last_active_s: float, now_s: float, workflow_idle_timeout_s: float
) -> int:
    """``min_size``, except for a workflow-scoped pool whose workflow has gone quiet: 0.

    ``active`` is true while a task runs or waits in the pool. A workflow's containers serve no one
    once it has finished, so min_size must not keep them (or re-warm them) forever.
    """
    if scope != "workflow" or active:
        return min_size
    return 0 if now_s - last_active_s >= workflow_idle_timeout_s else min_size


def reap_timeout_s(*, scope: str, idle_timeout_s: float, workflow_idle_timeout_s: float) -> float:
    """How long an idle container is kept: a workflow-scoped one at most ``workflow_idle_timeout_s``."""
    return min(idle_timeout_s, workflow_idle_timeout_s) if scope == "workflow" else idle_timeout_s


def should_drop(
    *, total: int, starting: int, waiters: int, busy: int, pending: int, min_size: int, idle_for_s: float,
    reap_after_s: float,
) -> bool:
    """An empty pool with nothing in flight, nothing to warm, quiet for its reap timeout: forget it."""
    settled = total == 0 and starting == 0 and waiters == 0 and busy == 0 and pending == 0
    return settled and min_size == 0 and idle_for_s >= reap_after_s


@dataclass(frozen=True)
class EvictionCandidate:
    pool: str
    container_id: str
    idle_since_s: float


def choose_eviction(candidates: Sequence[EvictionCandidate], *, exclude_pool: str | None) -> EvictionCandidate | None:
    """The least recently used idle container outside ``exclude_pool``; None when there is none."""
    others = [c for c in candidates if c.pool != exclude_pool]
    return min(others, key=lambda c: c.idle_since_s) if others else None


def budget_action(*, used: int, limit: int, waiters: int) -> Literal["take", "wait"]:
    """A new container may start now only under the cap and when nobody queued before it (FIFO)."""
    return "take" if used < limit and waiters == 0 else "wait"


def should_retire(uses: int, max_uses: int) -> bool:
    return uses >= max_uses


def utilisation(busy: int, total: int) -> float:
    """Busy share of the live containers; 0.0 for an empty pool (never NaN)."""
    return round(busy / total, 4) if total > 0 else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]
