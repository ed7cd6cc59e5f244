"""Queued tasks awaiting their claim: every dispatch is recorded in ``{p}:queued`` until it is claimed or
cancelled, and :func:`flowcore.engine.unclaimed` re-dispatches one whose worker died before claiming it,
exactly once (the old token goes stale), dropping the abandoned arq job."""

from __future__ import annotations

from flowcore import engine
from flowcore.keyspace import lease_member
from flowcore.models import WorkflowStatus
from flowcore.pool_api import ErrorKind
from flowcore.records import TaskStatus
from tests.unit.test_engine import IMG, Driver, echo_step, ok


def started(definition: dict[str, object] | None = None) -> tuple[Driver, str, int, str]:
    d = Driver(definition or {"name": "x", "steps": [{"id": "a", **IMG}]})
    d.start()
    step, index, token = d.queue.pop(0)
    return d, step, index, token


def test_a_dispatch_is_recorded_as_queued_from_when_it_can_run() -> None:
    d = Driver({"name": "x", "steps": [{"id": "a", **IMG}]})
    plan = d.start()
    (dispatch,) = plan.dispatch
    assert plan.queued_add == {lease_member("wf-1", "a", 0, dispatch.token): d.now * 1000}


def test_a_claim_takes_the_task_out_of_the_queued_set_and_puts_it_under_a_lease() -> None:
    d, step, index, token = started()
    plan = d.claim(step, index, token)
    member = lease_member("wf-1", step, index, token)
    assert plan.queued_remove == [member] and member in plan.lease_add


def test_an_unclaimed_task_is_dispatched_again_once_under_a_new_token() -> None:
    d, step, index, token = started()
    plan = d.apply(engine.unclaimed(d.snap, d.env_factory(), step, index, token))
    old = lease_member("wf-1", step, index, token)
    (again,) = plan.dispatch
    assert again.token != token
    assert plan.queued_remove == [old] and plan.drop_jobs == [old]
    assert list(plan.queued_add) == [lease_member("wf-1", step, index, again.token)]
    task = d.snap.tasks["a:0"]
    assert task.status == TaskStatus.QUEUED and task.attempt == 1 and task.takeovers == 1
    assert plan.events[-1]["status"] == "requeued"
    # The dead worker's job, should it ever run: its claim is stale, nothing runs twice.
    assert d.claim(step, index, token).request is None
    # A second reaper acting on the same entry changes nothing but forgets it.
    late = engine.unclaimed(d.snap, d.env_factory(), step, index, token)
    assert not late.dispatch and late.note == "stale" and late.queued_remove == [old]
    d.run(echo_step)
    assert d.snap.status == WorkflowStatus.COMPLETED


def test_a_claimed_task_is_not_requeued() -> None:
    d, step, index, token = started()
    d.claim(step, index, token)
    plan = engine.unclaimed(d.snap, d.env_factory(), step, index, token)
    assert plan.note == "stale" and not plan.dispatch and not plan.drop_jobs
    assert d.snap.tasks["a:0"].status == TaskStatus.RUNNING


def test_requeues_are_capped_like_takeovers() -> None:
    d, step, index, token = started()
    for _ in range(5):
        (again,) = d.apply(engine.unclaimed(d.snap, d.env_factory(), step, index, token)).dispatch
        token = again.token
    plan = d.apply(engine.unclaimed(d.snap, d.env_factory(), step, index, token))
    task = d.snap.tasks["a:0"]
    assert not plan.dispatch and task.status == TaskStatus.FAILED
    assert task.error is not None and task.error.kind == ErrorKind.WORKER_LOST
    assert d.snap.status == WorkflowStatus.FAILED


def test_cancel_forgets_queued_tasks() -> None:
    d, step, index, token = started()
    plan = engine.cancel(d.snap, d.env_factory())
    assert lease_member("wf-1", step, index, token) in plan.queued_remove


def test_a_lost_lease_drops_the_abandoned_job() -> None:
    d, step, index, token = started()
    d.claim(step, index, token)
    plan = d.apply(engine.lost(d.snap, d.env_factory(), step, index, token))
    assert plan.drop_jobs == [lease_member("wf-1", step, index, token)]
    (again,) = plan.dispatch
    d.claim(step, index, again.token)
    done = d.complete(step, index, again.token, ok("x"))
    assert d.snap.status == WorkflowStatus.COMPLETED and not done.queued_add
