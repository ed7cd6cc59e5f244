"""Step-level concurrency keys (ADR 019): the key language, the decisions about a task against its
key, and the engine's claim / park / unpark transitions, with a controllable clock."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from flowcore import engine, stepkey_engine
from flowcore.models import WorkflowDefinition
from flowcore.records import TaskStatus
from flowcore.stepkeys import (
    KeyState,
    SlotNeeded,
    Verdict,
    decide_acquire,
    evaluate_key,
    hold_is_stale,
    parse_key,
    room,
)
from tests.unit.test_engine import IMG, Driver, ok

VIEW = {"input": {"customer": "c1", "n": 7, "obj": {"b": 1, "a": [1, 2]}}, "steps": {}, "item": {"id": "x9"}}


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("input.customer", "c1"),
        ("payments:{input.customer}", "payments:c1"),
        ("{input.customer}/{item.id}", "c1/x9"),
        ("n={input.n}", "n=7"),
        ("{input.obj}", '{"a":[1,2],"b":1}'),
        ("p:{input.missing}", "p:"),  # a missing path is the empty string, as at the workflow level
        ("input.missing", ""),
        ("{ input.customer }", "c1"),
    ],
)
def test_a_key_renders_against_the_task_view(expression: str, value: str) -> None:
    assert evaluate_key(expression, VIEW) == value


def test_a_long_key_becomes_its_digest() -> None:
    view = {"input": {"big": "x" * 500}}
    key = evaluate_key("k:{input.big}", view)
    assert key.startswith("sha256:") and len(key) < 100
    assert key == evaluate_key("k:{input.big}", view)


@pytest.mark.parametrize(
    "expression",
    ["payments:{input.customer", "payments:input.customer}", "a{}b", "{foo.bar}", "not a path", "{input..x}",
     "x{{input.a}}"],
)
def test_a_key_that_does_not_parse_is_refused(expression: str) -> None:
    with pytest.raises(ValueError):
        parse_key(expression)


def _definition(step: dict[str, Any]) -> dict[str, Any]:
    return {"name": "k", "steps": [step, {"id": "z", **IMG}]}


@pytest.mark.parametrize(
    "concurrency",
    [{"key": "input.c", "limit": 0}, {"key": "input.c", "limit": -1}, {"key": "input.c", "limit": 10_001},
     {"key": "pay:{input.c", "limit": 1}, {"key": "", "limit": 1}, {"key": "input.c", "extra": 1},
     {"limit": 2}, "input.c"],
)
def test_bad_step_concurrency_is_refused(concurrency: Any) -> None:
    with pytest.raises(pydantic.ValidationError):
        WorkflowDefinition.model_validate(_definition({"id": "a", **IMG, "concurrency": concurrency}))


@pytest.mark.parametrize(
    "step",
    [
        {"id": "b", "type": "branch", "condition": {"field": "input.x", "op": "exists"}, "then": ["z"]},
        {"id": "s", "type": "sleep", "duration": "1s"},
    ],
)
def test_a_key_on_a_control_step_is_refused(step: dict[str, Any]) -> None:
    WorkflowDefinition.model_validate(_definition(step))  # valid without the key
    with pytest.raises(pydantic.ValidationError):
        WorkflowDefinition.model_validate(_definition({**step, "concurrency": {"key": "input.x", "limit": 1}}))


# ---- decisions ---------------------------------------------------------------------------------
def test_a_task_is_admitted_while_there_is_room_and_nobody_waits() -> None:
    assert decide_acquire("k", 2, "t1", KeyState(frozenset())).verdict == Verdict.ADMIT
    assert decide_acquire("k", 2, "t2", KeyState(frozenset({"t1"}))).verdict == Verdict.ADMIT


def test_a_full_key_makes_a_task_wait_saying_why() -> None:
    decision = decide_acquire("payments:c1", 2, "t3", KeyState(frozenset({"t1", "t2"})))
    assert decision.verdict == Verdict.WAIT
    assert decision.reason == "waiting for concurrency key payments:c1 (2/2 in use)"


def test_a_new_task_never_overtakes_waiting_ones() -> None:
    decision = decide_acquire("k", 2, "t9", KeyState(frozenset({"t1"}), queued=3))
    assert decision.verdict == Verdict.WAIT and "3 task(s) ahead" in decision.reason
    # the head of the queue may take the room; the second may not
    assert decide_acquire("k", 2, "w0", KeyState(frozenset({"t1"}), queued=3, rank=0)).verdict == Verdict.ADMIT
    assert decide_acquire("k", 2, "w1", KeyState(frozenset({"t1"}), queued=3, rank=1)).verdict == Verdict.WAIT


def test_a_holder_asking_again_keeps_its_slot_even_when_full() -> None:
    # a reservation by a pump, or the same task after a takeover
    assert decide_acquire("k", 1, "t1", KeyState(frozenset({"t1"}), queued=4)).verdict == Verdict.ADMIT


def test_room_is_never_negative() -> None:
    assert room(3, 1) == 2 and room(1, 1) == 0 and room(1, 3) == 0


@pytest.mark.parametrize(
    ("held", "status", "token", "stale"),
    [
        ("a", "running", "a", False),  # its attempt runs
        ("a", "queued", "a", False),  # taken, claim about to commit
        ("a", "running", "b", True),  # taken over under another token: the dead worker's hold goes
        ("a", "queued", "b", True),  # retried or re-dispatched
        ("a", "succeeded", "a", True),
        ("a", "failed", "a", True),
        ("a", "cancelled", "a", True),
        ("a", None, None, True),  # the workflow was deleted
        ("", "queued", "x", False),  # reserved by a pump, not claimed yet
        ("", "running", "x", False),
        ("", "cancelled", "x", True),
    ],
)
def test_which_holds_the_sweep_releases(held: str, status: str | None, token: str | None, stale: bool) -> None:
    assert hold_is_stale(held, status, token) is stale


# ---- the engine --------------------------------------------------------------------------------
def keyed_map(limit: int = 1) -> Driver:
    return Driver({
        "name": "k",
        "input": {"customers": ["c1", "c2", "c1"]},
        "steps": [{"id": "pay", "type": "map", "items": "input.customers", **IMG,
                   "concurrency": {"key": "payments:{item}", "limit": limit}}],
    })


def test_a_claim_of_a_keyed_task_asks_for_its_slot_first() -> None:
    d = keyed_map()
    d.start()
    step, index, token = d.queue[0]
    with pytest.raises(SlotNeeded) as need:
        engine.claim(d.snap, d.env_factory(), step, index, token)
    assert (need.value.key, need.value.limit, need.value.holder) == ("payments:c1", 1, "wf-1|pay|0")
    with pytest.raises(SlotNeeded):  # holding another key is not holding this one
        engine.claim(d.snap, d.env_factory(), step, index, token, held_key="payments:c2")
    plan = engine.claim(d.snap, d.env_factory(), step, index, token, held_key="payments:c1")
    assert plan.request is not None and d.snap.tasks["pay:0"].status == TaskStatus.RUNNING


def test_a_step_without_a_key_claims_as_before() -> None:
    d = Driver({"name": "p", "steps": [{"id": "a", **IMG}]})
    d.start()
    plan = d.claim(*d.queue[0])
    assert plan.request is not None


def test_a_parked_task_leaves_the_claim_queue_and_an_unpark_dispatches_it_again() -> None:
    d = keyed_map()
    d.start()
    step, index, token = d.queue[2]  # the second c1 item
    plan = stepkey_engine.park(d.snap, d.env_factory(), step, index, token, "waiting for concurrency key payments:c1")
    task = d.snap.tasks["pay:2"]
    assert task.status == TaskStatus.QUEUED and task.waiting_on.startswith("waiting for")  # type: ignore[union-attr]
    assert plan.queued_remove == [f"wf-1|pay|2|{token}"] and not plan.dispatch
    assert stepkey_engine.still_waiting(task)
    again = stepkey_engine.unpark(d.snap, d.env_factory(), step, index)
    assert [(x.step_id, x.index) for x in again.dispatch] == [("pay", 2)]
    assert task.waiting_on is None and task.token != token and task.status == TaskStatus.QUEUED
    # the old job's park is stale now: nothing changes
    assert stepkey_engine.park(d.snap, d.env_factory(), step, index, token, "late").note == "stale"


def test_unpark_of_a_finished_or_cancelled_task_does_nothing() -> None:
    d = keyed_map()
    d.start()
    step, index, token = d.queue[0]
    engine.claim(d.snap, d.env_factory(), step, index, token, held_key="payments:c1")
    engine.complete(d.snap, d.env_factory(), step, index, token, ok(1))
    assert stepkey_engine.unpark(d.snap, d.env_factory(), step, index).note == "stale"
    engine.cancel(d.snap, d.env_factory())
    assert stepkey_engine.unpark(d.snap, d.env_factory(), "pay", 1).note == "stale"


def test_a_completion_never_claims_a_keyed_successor_for_its_worker() -> None:
    d = Driver({"name": "c", "input": {"c": "x"}, "steps": [
        {"id": "a", **IMG},
        {"id": "b", **IMG, "depends_on": ["a"], "concurrency": {"key": "input.c", "limit": 1}},
    ]})
    d.start()
    step, index, token = d.queue.pop(0)
    d.claim(step, index, token)
    plan = engine.complete(d.snap, d.env_factory(), step, index, token, ok(1), claim_next=True)
    assert plan.claimed is None and [x.step_id for x in plan.dispatch] == ["b"]
