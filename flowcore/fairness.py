"""Fair shares of the task queue between workflows (issue 12, ADR 018). Pure: no I/O.

Every ready task is a job in one sorted set (arq's queue), which workers take lowest score first; a
score in the future is a deferred job (a retry's backoff). Left alone, the score of a ready task is
the moment it became ready, so a map that makes 1,000 tasks ready at once puts them all ahead of the
next workflow's first task, and a busy machine serves the map first, for as long as it lasts.

Two rules keep one large workflow from starving the others:

1. **Scores by share** (:func:`queue_score_ms`). A task of a workflow that already has ``n`` tasks
   queued or running enters the queue ``n * FAIR_STEP_MS`` later *in queue order* (at most
   ``FAIR_MAX_MS``), as if it had become ready that much later. Nothing is deferred: every ready
   task is scored ``FAIR_MAX_MS`` in the past first, so its penalty only orders it among other ready
   tasks and never makes it wait on an idle machine. A chain (one task at a time) and a task of a
   small workflow always rank ahead of the wide map's backlog that became ready about as early.
2. **Bounded run-next** (:data:`RUN_NEXT_MAX`). A worker runs the successor its completion made ready
   without going through the queue (ADR 010 rule 7). That path bypasses the scores, so one job runs at
   most ``RUN_NEXT_MAX`` tasks in a row; the next successor goes through the queue, where rule 1 puts
   it behind the other workflows' waiting tasks. A 40-step chain pays one queue round trip in 32
   steps.

Priorities (ADR 013) still move a run's tasks ahead by a second per point: the two add up.
"""

from __future__ import annotations

from collections.abc import Iterable

from flowcore.models import StepStatus
from flowcore.records import StepRecord

FAIR_STEP_MS = 20  # how much later in queue order each task a workflow already has in flight puts the next
FAIR_MAX_MS = 10_000  # the largest such penalty (reached at 500 tasks in flight); also the base shift
RUN_NEXT_MAX = 32  # tasks one job runs in a row before the next successor goes through the queue


def in_flight(steps: Iterable[StepRecord]) -> int:
    """Queued or running tasks of a workflow, from its step counters (ADR 010: no task is read)."""
    return sum(r.dispatched - r.succeeded - r.failed for r in steps if r.status == StepStatus.RUNNING)


def penalty_ms(ahead: int) -> int:
    """How much later in queue order a task enters when its workflow has ``ahead`` tasks in flight."""
    return min(max(ahead, 0) * FAIR_STEP_MS, FAIR_MAX_MS)


def queue_score_ms(now_ms: int, head_start_ms: int, ahead: int) -> int:
    """The queue score of a task ready now: its priority's head start, then its workflow's share.

    Always at most ``now_ms`` (the job is due at once): only its order among ready jobs changes."""
    return now_ms - FAIR_MAX_MS - head_start_ms + penalty_ms(ahead)


def ahead_of_each(total_in_flight: int, dispatched_now: int) -> list[int]:
    """For each of the ``dispatched_now`` tasks one commit enqueues (counted in ``total_in_flight``),
    how many of its workflow's tasks are in flight ahead of it."""
    first = max(total_in_flight - dispatched_now, 0)
    return [first + i for i in range(dispatched_now)]
