"""Durable waits (ADR 012), decided in memory with a controllable clock: due times, wait matching
with input/output references, timeout outcomes, approval decisions and who may decide, child runs."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import ValidationError

from flowcore import engine, waitengine, waitrules
from flowcore.commits import plan_commands
from flowcore.errors import Conflict, NotFound
from flowcore.keyspace import Keyspace
from flowcore.models import StepStatus, WorkflowDefinition, WorkflowStatus
from flowcore.plan import EngineEnv, Plan
from flowcore.pool_api import TaskResult
from flowcore.records import Origin, Snapshot

IMG = {"image": "img", "command": "true"}


class Clock:
    """A workflow driven in memory; ``now`` moves only when the test moves it."""

    def __init__(self, definition: dict[str, Any], *, created_at: float = 50.0, origin: Origin | None = None) -> None:
        self.snap = Snapshot(
            wf_id="wf-18c-aaaa",
            definition=WorkflowDefinition.model_validate(definition),
            status=WorkflowStatus.PENDING,
            input=definition.get("input"),
            created_at=created_at,
            origin=origin or Origin(),
        )
        self.now = 100.0
        self._tokens = itertools.count()
        self.plans: list[Plan] = []

    def env(self) -> EngineEnv:
        return EngineEnv(now=self.now, rand=lambda: 0.5, new_token=lambda: f"t{next(self._tokens)}")

    def start(self) -> Plan:
        return self._keep(engine.start(self.snap, self.env()))

    def _keep(self, plan: Plan) -> Plan:
        self.plans.append(plan)
        return plan

    def wait(self, step: str) -> dict[str, Any]:
        wait = self.snap.steps[step].wait
        assert wait is not None
        return wait

    def timer(self, step: str) -> Plan:
        return self._keep(waitengine.timer(self.snap, self.env(), step, self.wait(step)["token"]))

    def deliver(self, step: str, payload: Any, *, ts: float | None = None, token: str | None = None) -> Plan:
        event = {"id": "ev-1", "payload": payload, "ts": self.now if ts is None else ts}
        return self._keep(waitengine.deliver(self.snap, self.env(), step, token or self.wait(step)["token"], event))

    def status(self, step: str) -> StepStatus:
        return self.snap.steps[step].status


def test_sleep_for_a_duration_is_due_then_succeeds_and_the_next_step_runs() -> None:
    c = Clock({"name": "s", "steps": [{"id": "nap", "type": "sleep", "duration": "30s"}, {"id": "after", "depends_on": ["nap"], **IMG}]})
    plan = c.start()
    assert c.status("nap") == StepStatus.RUNNING and not plan.dispatch  # parked: no task, no container
    (job,) = plan.wait_jobs
    assert job.kind == "timer" and job.run_at == 130.0
    c.now = 129.0  # a timer that fires early (another machine's clock) re-arms, it does not end the sleep
    early = c.timer("nap")
    assert c.status("nap") == StepStatus.RUNNING and early.wait_jobs[0].job_id != job.job_id
    c.now = 130.0
    plan = c.timer("nap")
    assert c.status("nap") == StepStatus.SUCCEEDED
    assert c.snap.steps["nap"].output == {"slept_until": 130.0, "woke_at": 130.0}
    assert [d.step_id for d in plan.dispatch] == ["after"]


def test_sleep_until_an_iso_time_and_one_in_the_past_ends_at_once() -> None:
    assert waitrules.parse_until("1970-01-01T00:02:00Z") == 120.0
    assert waitrules.parse_until("1970-01-01T00:02:00") == 120.0  # no offset: UTC
    assert waitrules.parse_until("1970-01-01T01:02:00+01:00") == 120.0
    assert waitrules.sleep_due_at(100.0, None, "1970-01-01T00:02:00Z") == 120.0
    assert waitrules.sleep_due_at(500.0, None, "1970-01-01T00:02:00Z") == 500.0
    c = Clock({"name": "s", "steps": [{"id": "nap", "type": "sleep", "until": "1970-01-01T00:02:00Z"}]})
    (job,) = c.start().wait_jobs
    assert job.run_at == 120.0


@pytest.mark.parametrize(
    "step",
    [
        {"id": "n", "type": "sleep"},
        {"id": "n", "type": "sleep", "duration": "1s", "until": "2030-01-01T00:00:00Z"},
        {"id": "n", "type": "sleep", "until": "tomorrow"},
        {"id": "n", "type": "sleep", "duration": "-5s"},
        {"id": "w", "type": "wait_for_event", "event_type": "bad type!"},
        {"id": "w", "type": "wait_for_event", "event_type": "x", "filter": {"a": {"=<": 1}}},
        {"id": "w", "type": "wait_for_event", "event_type": "x", "filter": {"a": {"$path": "nowhere.x"}}},
        {"id": "w", "type": "wait_for_event", "event_type": "x", "on_timeout": "retry"},
        {"id": "a", "type": "approval", "on_timeout": "maybe"},
        {"id": "a", "type": "approval", "message": "x" * 2001},
        {"id": "c", "type": "workflow"},
        {"id": "c", "type": "workflow", "workflow": "../etc"},
    ],
)
def test_bad_wait_definitions_are_refused(step: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        WorkflowDefinition.model_validate({"name": "bad", "steps": [step]})


def test_wait_steps_run_no_container() -> None:
    defn = WorkflowDefinition.model_validate({"name": "x", "steps": [
        {"id": "a", "type": "sleep", "duration": 1}, {"id": "b", "type": "wait_for_event", "event_type": "e"},
        {"id": "c", "type": "approval"}, {"id": "d", "type": "workflow", "workflow": "wf-1"}]})
    assert [s.runs_container for s in defn.steps] == [False, False, False, False]


def _event_flow(**wait: Any) -> Clock:
    return Clock({
        "name": "pay",
        "input": {"order": "o-7"},
        "steps": [
            {"id": "quote", **IMG},
            {"id": "paid", "type": "wait_for_event", "event_type": "payment", "depends_on": ["quote"],
             "filter": {"order": {"$path": "input.order"}, "amount": {">=": {"$path": "steps.quote.output.total"}}},
             **wait},
        ],
    })


def _finish_quote(c: Clock, output: Any) -> Plan:
    (d,) = c.plans[-1].dispatch
    engine.claim(c.snap, c.env(), d.step_id, d.index, d.token)
    return c._keep(engine.complete(c.snap, c.env(), d.step_id, d.index, d.token,
                                   TaskResult(task_id="x", ok=True, output=output, exit_code=0)))


def test_wait_filter_references_resolve_when_the_wait_begins_and_only_a_match_ends_it() -> None:
    c = _event_flow(timeout="1h")
    c.start()
    plan = _finish_quote(c, {"total": 40})
    wait = c.wait("paid")
    assert wait["filter"] == {"order": "o-7", "amount": {">=": 40}}
    assert wait["since"] == 50.0  # the workflow's creation: earlier events of the type count too
    member, (event_type, _entry) = next(iter(plan.waiters_add.items()))
    assert event_type == "payment" and member.endswith("|paid|" + wait["token"])
    assert sorted(j.kind for j in plan.wait_jobs) == ["check", "timer"]
    assert c.deliver("paid", {"order": "o-8", "amount": 99}).note == "no match"
    assert c.deliver("paid", {"order": "o-7", "amount": 39}).note == "no match"
    assert c.deliver("paid", {"order": "o-7", "amount": 40}, ts=49.0).note == "no match"  # before the workflow
    plan = c.deliver("paid", {"order": "o-7", "amount": 40.0})
    assert c.status("paid") == StepStatus.SUCCEEDED
    assert c.snap.steps["paid"].output["payload"] == {"order": "o-7", "amount": 40.0}
    assert plan.waiters_remove == [("payment", member, {"order": "o-7", "amount": {">=": 40}})]
    assert wait["timer_job"] in plan.wait_drop_jobs
    assert c.snap.status == WorkflowStatus.COMPLETED
    # a second event (or the same one delivered twice) changes nothing
    assert waitengine.deliver(c.snap, c.env(), "paid", wait["token"], {"payload": {"order": "o-7", "amount": 50}, "ts": 101}).empty


def test_a_missing_filter_reference_fails_the_step() -> None:
    c = _event_flow()
    c.start()
    _finish_quote(c, {"no_total": 1})
    assert c.status("paid") == StepStatus.FAILED
    assert "steps.quote.output.total" in (c.snap.steps["paid"].error or "")


def test_a_stale_token_changes_nothing() -> None:
    c = _event_flow()
    c.start()
    _finish_quote(c, {"total": 1})
    assert c.deliver("paid", {"order": "o-7", "amount": 5}, token="other").empty
    assert waitengine.timer(c.snap, c.env(), "paid", "other").empty


@pytest.mark.parametrize(("on_timeout", "status"), [("fail", StepStatus.FAILED), ("succeed", StepStatus.SUCCEEDED)])
def test_event_timeout_outcomes(on_timeout: str, status: StepStatus) -> None:
    c = _event_flow(timeout="10m", on_timeout=on_timeout, default_output={"late": True})
    c.start()
    _finish_quote(c, {"total": 1})
    c.now += 599
    assert c.timer("paid").note == "early"
    c.now += 1
    c.timer("paid")
    assert c.status("paid") == status
    if status == StepStatus.SUCCEEDED:
        assert c.snap.steps["paid"].output == {"timed_out": True, "payload": {"late": True}}
    else:
        assert "no matching event within 600s" in (c.snap.steps["paid"].error or "")
    assert c.plans[-1].waiters_remove


def test_workflow_timeout_counts_while_waiting_and_cancel_releases_the_wait() -> None:
    c = Clock({"name": "t", "config": {"timeout": "1m"}, "steps": [{"id": "w", "type": "wait_for_event", "event_type": "e"}]})
    c.start()
    c.now += 61
    plan = engine.deadline(c.snap, c.env())
    assert c.snap.status == WorkflowStatus.FAILED and c.status("w") == StepStatus.CANCELLED
    assert plan.waiters_remove == [("e", f"wf-18c-aaaa|w|{c.wait('w')['token']}", {})]
    c2 = Clock({"name": "t", "steps": [{"id": "nap", "type": "sleep", "duration": "1h"}]})
    c2.start()
    plan = engine.cancel(c2.snap, c2.env(), "stop")
    assert c2.snap.status == WorkflowStatus.CANCELLED and c2.wait("nap")["timer_job"] in plan.wait_drop_jobs


def _approval(**opts: Any) -> Clock:
    c = Clock({"name": "a", "steps": [{"id": "ok", "type": "approval", "message": "ship it?", **opts}, {"id": "next", "depends_on": ["ok"], **IMG}]})
    c.start()
    return c


def test_approval_records_who_when_and_the_comment() -> None:
    c = _approval()
    c.now = 200.0
    plan = waitengine.decide(c.snap, c.env(), "ok", "approve", by="token:ops", comment="looks good")
    assert c.snap.steps["ok"].output == {"approved": True, "decision": "approve", "by": "token:ops", "at": 200.0,
                                         "comment": "looks good", "timed_out": False}
    assert [d.step_id for d in plan.dispatch] == ["next"]
    with pytest.raises(Conflict):  # twice
        waitengine.decide(c.snap, c.env(), "ok", "reject", by="token:ops", comment=None)


def test_rejection_fails_the_step_or_continues() -> None:
    c = _approval()
    waitengine.decide(c.snap, c.env(), "ok", "reject", by="session:alice", comment="no")
    assert c.status("ok") == StepStatus.FAILED and c.snap.status == WorkflowStatus.FAILED
    assert c.snap.steps["ok"].error == "rejected by session:alice: no"
    assert c.snap.steps["ok"].output["approved"] is False
    c = _approval(on_reject="continue")
    waitengine.decide(c.snap, c.env(), "ok", "reject", by="x", comment=None)
    assert c.status("ok") == StepStatus.SUCCEEDED and c.snap.steps["ok"].output["decision"] == "reject"


def test_bad_decisions() -> None:
    c = _approval()
    with pytest.raises(NotFound):
        waitengine.decide(c.snap, c.env(), "nope", "approve", by="x", comment=None)
    with pytest.raises(Conflict):
        waitengine.decide(c.snap, c.env(), "next", "approve", by="x", comment=None)  # not an approval step
    with pytest.raises(waitrules.WaitRuleError):
        waitengine.decide(c.snap, c.env(), "ok", "approve", by="x", comment="x" * 2001)
    assert c.status("ok") == StepStatus.RUNNING  # nothing changed
    c2 = Clock({"name": "a", "steps": [{"id": "first", **IMG}, {"id": "ok", "type": "approval", "depends_on": ["first"]}]})
    c2.start()
    with pytest.raises(Conflict):  # not begun yet
        waitengine.decide(c2.snap, c2.env(), "ok", "approve", by="x", comment=None)


@pytest.mark.parametrize(
    ("on_timeout", "status", "approved"),
    [("fail", StepStatus.FAILED, None), ("approve", StepStatus.SUCCEEDED, True), ("reject", StepStatus.FAILED, False)],
)
def test_approval_timeout_outcomes(on_timeout: str, status: StepStatus, approved: bool | None) -> None:
    c = _approval(timeout="1d", on_timeout=on_timeout)
    c.now += 86400
    c.timer("ok")
    assert c.status("ok") == status
    out = c.snap.steps["ok"].output
    assert out["timed_out"] is True and out.get("approved") is approved


def test_who_may_decide() -> None:
    assert waitrules.approval_scope_ok(frozenset({"approve"}))
    assert not waitrules.approval_scope_ok(frozenset({"read"}))
    assert not waitrules.approval_scope_ok(frozenset({"trigger"}))


def _parent(**opts: Any) -> Clock:
    c = Clock({"name": "p", "input": {"n": 3}, "steps": [
        {"id": "child", "type": "workflow", "workflow": "wf-tmpl", "input": {"count": {"$path": "input.n"}}, **opts}]})
    c.start()
    return c


def test_workflow_step_starts_a_child_and_takes_its_output() -> None:
    c = _parent(output_step="sum")
    wait = c.wait("child")
    assert wait["input"] == {"count": 3} and wait["template"] == "wf-tmpl"
    assert wait["child_id"] == waitrules.child_id_for("wf-18c-aaaa", "child", wait["token"])
    assert wait["child_id"].startswith("wf-18c-") and [j.kind for j in c.plans[-1].wait_jobs] == ["child_start"]
    assert waitengine.child_finished(c.snap, c.env(), "child", wait["token"], child_id="wf-other", status="completed",
                                     outputs={}, error=None).empty
    waitengine.child_finished(c.snap, c.env(), "child", wait["token"], child_id=wait["child_id"], status="completed",
                              outputs={"sum": 6, "other": 1}, error=None)
    assert c.status("child") == StepStatus.SUCCEEDED and c.snap.steps["child"].output == 6


def test_a_failed_child_is_retried_by_policy_then_fails_the_step() -> None:
    c = _parent(retry={"max_attempts": 2, "initial_delay_s": 5, "jitter": 0})
    first = c.wait("child")["child_id"]
    token = c.wait("child")["token"]
    plan = waitengine.child_finished(c.snap, c.env(), "child", token, child_id=first, status="failed", outputs={}, error="boom")
    wait = c.wait("child")
    assert c.status("child") == StepStatus.RUNNING and wait["attempt"] == 2 and wait["child_id"] != first
    assert [(j.kind, j.run_at) for j in plan.wait_jobs] == [("child_start", 105.0)]
    waitengine.child_finished(c.snap, c.env(), "child", wait["token"], child_id=wait["child_id"], status="failed",
                              outputs={}, error="boom again")
    assert c.status("child") == StepStatus.FAILED and "boom again" in (c.snap.steps["child"].error or "")


def test_cancelling_the_parent_cancels_the_child_and_a_finished_child_notifies_its_parent() -> None:
    c = _parent()
    plan = engine.cancel(c.snap, c.env(), "enough")
    (job,) = [j for j in plan.wait_jobs if j.kind == "child_cancel"]
    assert job.data["child_id"] == c.wait("child")["child_id"]
    child = Clock({"name": "c", "steps": [{"id": "x", **IMG}]},
                  origin=Origin(kind="workflow", parent_id="wf-p", parent_step="child", parent_token="t9"))
    child.start()
    cmds = plan_commands(Keyspace("t"), engine.cancel(child.snap, child.env(), "x"))
    assert any("wait:wf-p:child:t9:child_done" in [str(a) for a in cmd] for cmd in cmds)
