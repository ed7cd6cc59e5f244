"""What the engine's transitions take and give: :class:`EngineEnv` in, :class:`Plan` out.

A :class:`Plan` is what one transition changed, for :mod:`flowcore.store` to commit atomically
(:mod:`flowcore.commits`); :class:`NeedReads` is how a transition on a partial snapshot asks for the
task records or map items it lacks (ADR 010).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flowcore import limits
from flowcore.logstream import LogLine
from flowcore.models import (
    WorkflowStatus,
)
from flowcore.pool_api import TaskRequest
from flowcore.records import Snapshot, TaskRecord


class NeedReads(Exception):
    """The decision needs task records (``{step}:{index}``) or map items the snapshot does not hold."""

    def __init__(self, tasks: list[str] | None = None, items: list[str] | None = None) -> None:
        super().__init__(f"needs {len(tasks or [])} task record(s), {len(items or [])} item(s)")
        self.tasks = tasks or []
        self.items = items or []


@dataclass
class EngineEnv:
    """What the engine may not compute itself: the time, randomness, tokens and limits."""

    now: float = field(default_factory=time.time)
    rand: Callable[[], float] = field(default=lambda: secrets.randbelow(1_000_000) / 1_000_000)
    new_token: Callable[[], str] = field(default=lambda: secrets.token_hex(4))
    lease_ttl_s: float = 5.0
    max_takeovers: int = 5
    pool_grace_s: float = 300.0  # how long a task waits for an unreachable pool service to come back
    # Size limits (flowcore.limits, FLOW_LIMITS__*): a map over more items fails its step, saying so
    # (docs/workflows.md#map); a state value larger than this fails the task that writes it.
    max_map_items: int = field(default_factory=lambda: limits.current().max_map_items)
    max_state_value_bytes: int = field(default_factory=lambda: limits.current().max_state_value_bytes)


@dataclass
class WaitJob:
    """A job of a durable wait (``workers.waits``): ``kind`` timer, check, event, child_start,
    child_done or child_cancel, for ``workflow_id``'s step ``step_id`` under wait ``token``."""

    kind: str
    workflow_id: str
    step_id: str
    token: str
    run_at: float | None = None
    data: Any = None

    @property
    def job_id(self) -> str:
        # A timer re-armed while its job still runs needs another id: arq deletes a job's key when it ends.
        due = f":{int(self.run_at * 1000)}" if self.run_at else ""
        return f"wait:{self.workflow_id}:{self.step_id}:{self.token}:{self.kind}{due}"


@dataclass
class Dispatch:
    step_id: str
    index: int
    token: str
    run_at: float | None = None


@dataclass
class Plan:
    """What one transition changed; committed atomically by the store."""

    snap: Snapshot
    old_status: WorkflowStatus
    dirty_steps: set[str] = field(default_factory=set)
    dirty_tasks: set[str] = field(default_factory=set)
    dirty_record: bool = False
    dispatch: list[Dispatch] = field(default_factory=list)
    lease_add: dict[str, float] = field(default_factory=dict)
    lease_remove: list[str] = field(default_factory=list)
    # Queued tasks awaiting their claim (``{p}:queued``, scored by when they became runnable, ms):
    # a worker that dies between taking the job and claiming leaves one here, and a reaper re-dispatches it.
    queued_add: dict[str, float] = field(default_factory=dict)
    queued_remove: list[str] = field(default_factory=list)
    # Lease members of tasks whose arq job was abandoned (taken over): the store deletes those jobs.
    drop_jobs: list[str] = field(default_factory=list)
    # Items of map steps that began: stored once, apart from the step record (``{p}:wf:{id}:items``).
    new_items: dict[str, list[Any]] = field(default_factory=dict)
    state_changes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    cancelled_tasks: list[TaskRecord] = field(default_factory=list)
    deadline_at: float | None = None
    request: TaskRequest | None = None
    # A completion committed with ``claim_next``: the successor it dispatched and claimed at once, for
    # the same worker to run (``request`` says what), without a queue round trip.
    claimed: Dispatch | None = None
    log_lines: list[LogLine] = field(default_factory=list)  # for the workflow's log stream
    note: str = ""
    # Durable waits (ADR 012, flowcore.waitsteps): jobs to enqueue (timers, event checks, child runs),
    # job ids to drop (a timer no longer needed), waiter entries to add or remove per event type.
    wait_jobs: list[WaitJob] = field(default_factory=list)
    wait_drop_jobs: list[str] = field(default_factory=list)
    waiters_add: dict[str, tuple[str, str]] = field(default_factory=dict)  # member -> (event type, JSON)
    # (event type, member, its resolved filter: where flowcore.waitindex filed it)
    waiters_remove: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (
            self.dirty_steps
            or self.dirty_tasks
            or self.dirty_record
            or self.dispatch
            or self.lease_add
            or self.lease_remove
            or self.queued_add
            or self.queued_remove
            or self.drop_jobs
            or self.state_changes
            or self.new_items
            or self.wait_jobs
            or self.waiters_add
            or self.waiters_remove
        )
