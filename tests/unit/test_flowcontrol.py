"""The pure admission decisions of flow control (ADR 013), with a controllable clock."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from flowcore.flowcontrol import (
    Outcome,
    Overlap,
    RunSlots,
    Slot,
    SlotKind,
    SlotState,
    Strategy,
    decide,
    in_window,
    key_value,
    queue_score,
    run_slots,
)
from flowcore.models import WorkflowConfig, WorkflowDefinition
from flowcore.triggers import TriggerOptions

T0 = 1_800_000_000.0


def conc(limit: int = 1, strategy: Strategy = Strategy.QUEUE, sid: str = "c|w|k", **kw: Any) -> Slot:
    return Slot(sid, SlotKind.CONCURRENCY, limit, strategy, label="concurrency key 'k'", **kw)


def rate(limit: int, period_s: float, sid: str = "r|w|*") -> Slot:
    return Slot(sid, SlotKind.RATE, limit, period_s=period_s, label=f"rate limit {limit}")


def active(n: int) -> SlotState:
    return SlotState(active=[(f"wf-{i}", T0 + i) for i in range(n)])


# ---- concurrency keys, per strategy ------------------------------------------------------------
@pytest.mark.parametrize(
    ("strategy", "running", "outcome"),
    [
        (Strategy.QUEUE, 0, Outcome.ADMIT),
        (Strategy.QUEUE, 1, Outcome.QUEUE),
        (Strategy.CANCEL_NEWEST, 0, Outcome.ADMIT),
        (Strategy.CANCEL_NEWEST, 1, Outcome.REFUSE),
        (Strategy.CANCEL_IN_PROGRESS, 0, Outcome.ADMIT),
        (Strategy.CANCEL_IN_PROGRESS, 1, Outcome.ADMIT),
    ],
)
def test_a_key_at_its_limit_follows_its_strategy(strategy: Strategy, running: int, outcome: Outcome) -> None:
    run = RunSlots((conc(1, strategy),))
    decision = decide(run, {"c|w|k": active(running)}, T0, fresh=True)
    assert decision.outcome == outcome
    if outcome == Outcome.REFUSE:
        assert "cancel_newest" in decision.reason and decision.counter == "refused"
    if outcome == Outcome.QUEUE:
        assert decision.slot is not None and decision.slot.id == "c|w|k" and "limit of 1" in decision.reason


def test_cancel_in_progress_evicts_the_oldest_running_run() -> None:
    decision = decide(RunSlots((conc(2, Strategy.CANCEL_IN_PROGRESS),)), {"c|w|k": active(2)}, T0, fresh=True)
    assert decision.outcome == Outcome.ADMIT
    assert decision.evict == (("wf-0", "c|w|k"),)


def test_a_limit_above_one_admits_up_to_it() -> None:
    run = RunSlots((conc(3),))
    assert decide(run, {"c|w|k": active(2)}, T0, fresh=True).outcome == Outcome.ADMIT
    assert decide(run, {"c|w|k": active(3)}, T0, fresh=True).outcome == Outcome.QUEUE


def test_a_run_that_already_waited_waits_whatever_the_strategy() -> None:
    for strategy in (Strategy.CANCEL_NEWEST, Strategy.CANCEL_IN_PROGRESS):
        decision = decide(RunSlots((conc(1, strategy),)), {"c|w|k": active(1)}, T0, fresh=False)
        assert decision.outcome == Outcome.QUEUE


def test_a_new_start_does_not_jump_a_queue_with_room_in_the_slot() -> None:
    decision = decide(RunSlots((conc(2),)), {"c|w|k": SlotState(active=[], queued=1)}, T0, fresh=True)
    assert decision.outcome == Outcome.QUEUE and "behind 1" in decision.reason
    assert decide(RunSlots((conc(2),)), {"c|w|k": SlotState(queued=0)}, T0, fresh=False).outcome == Outcome.ADMIT


def test_every_slot_must_have_room_and_the_first_full_one_blocks() -> None:
    key, total = conc(1, sid="c|w|a"), conc(2, sid="g|w")
    run = RunSlots((key, total))
    assert decide(run, {"c|w|a": active(0), "g|w": active(1)}, T0, fresh=True).outcome == Outcome.ADMIT
    decision = decide(run, {"c|w|a": active(0), "g|w": active(2)}, T0, fresh=True)
    assert decision.outcome == Outcome.QUEUE and decision.slot == total


def test_other_keys_are_not_blocked_by_a_full_key() -> None:
    states = {"c|w|a": active(1), "c|w|b": active(0)}
    assert decide(RunSlots((conc(1, sid="c|w|a"),)), states, T0, fresh=True).outcome == Outcome.QUEUE
    assert decide(RunSlots((conc(1, sid="c|w|b"),)), states, T0, fresh=True).outcome == Outcome.ADMIT


# ---- rate windows --------------------------------------------------------------------------------
def test_a_rate_window_admits_n_per_period_then_queues_with_an_estimated_start() -> None:
    slot = rate(2, 60.0)
    run = RunSlots((slot,))
    state = SlotState(window=[T0, T0 + 10])
    assert decide(run, {slot.id: SlotState(window=[T0])}, T0 + 20, fresh=True).outcome == Outcome.ADMIT
    decision = decide(run, {slot.id: state}, T0 + 20, fresh=True)
    assert decision.outcome == Outcome.QUEUE and decision.counter == "throttled"
    assert decision.estimated_start == T0 + 60
    assert decide(run, {slot.id: state}, T0 + 60.001, fresh=False).outcome == Outcome.ADMIT


def test_in_window_drops_admissions_older_than_the_period() -> None:
    assert in_window(rate(5, 10.0), [T0 - 11, T0 - 10, T0 - 5, T0], T0) == [T0 - 5, T0]


def test_the_estimated_start_is_when_enough_admissions_leave_the_window() -> None:
    slot = rate(2, 10.0)
    state = SlotState(window=[T0, T0 + 1, T0 + 2])  # over the limit (the limit was lowered)
    decision = decide(RunSlots((slot,)), {slot.id: state}, T0 + 3, fresh=False)
    assert decision.estimated_start == T0 + 1 + 10


# ---- priority ------------------------------------------------------------------------------------
def test_queue_scores_order_by_priority_then_arrival() -> None:
    scores = {
        "late-high": queue_score(10, 50),
        "early-low": queue_score(-5, 1),
        "early-normal": queue_score(0, 2),
        "late-normal": queue_score(0, 40),
    }
    assert sorted(scores, key=scores.__getitem__) == ["late-high", "early-normal", "late-normal", "early-low"]
    assert queue_score(1000, 1) == queue_score(100, 1)  # clamped into the band


# ---- slots of a run --------------------------------------------------------------------------------
def config(**kw: Any) -> WorkflowConfig:
    return WorkflowConfig.model_validate(kw)


def test_a_run_without_flow_control_has_no_slots() -> None:
    assert run_slots("w", config(), {"a": 1}) is None


def test_slots_come_from_the_key_path_of_the_input() -> None:
    run = run_slots(
        "w",
        config(concurrency={"key": "input.customer.id", "limit": 2, "strategy": "cancel_newest"},
               max_concurrent_runs=5, rate_limit={"limit": 3, "period": "1m", "key": "input.customer.id"}, priority=7),
        {"customer": {"id": "acme"}},
    )
    assert run is not None
    assert [s.id for s in run.slots] == ["c|w|acme", "r|w|acme", "g|w"]
    assert run.slots[0].strategy == Strategy.CANCEL_NEWEST and run.slots[1].period_s == 60.0
    assert run.priority == 7
    assert RunSlots.loads(run.dumps()) == run


def test_key_values_missing_numbers_and_long_ones() -> None:
    assert key_value("input.a", {"input": {}}) == ""
    assert key_value("input.a", {"input": {"a": 12}}) == "12"
    assert key_value(None, {"input": {}}) == "*"
    long = key_value("input.a", {"input": {"a": "x" * 500}})
    assert long.startswith("sha256:") and len(long) < 100


# ---- overlap policies --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overlap", "expected"),
    [
        (Overlap.ALLOW_ALL, None),
        (Overlap.SKIP, None),  # handled by the fire itself (skip_if_running), counted on the trigger
        (Overlap.BUFFER_ALL, (Strategy.QUEUE, None)),
        (Overlap.BUFFER_ONE, (Strategy.QUEUE, 1)),
        (Overlap.CANCEL_OTHER, (Strategy.CANCEL_IN_PROGRESS, None)),
    ],
)
def test_overlap_policies_become_a_trigger_slot(overlap: Overlap, expected: tuple[Strategy, int | None] | None) -> None:
    run = run_slots("w", config(), None, trigger_id="tr-1", overlap=overlap)
    if expected is None:
        assert run is None
        return
    assert run is not None
    (slot,) = run.slots
    assert (slot.id, slot.limit, slot.strategy, slot.max_queued) == ("t|tr-1", 1, *expected)


def test_buffer_one_keeps_one_waiting_fire_and_skips_the_next() -> None:
    run = run_slots("w", config(), None, trigger_id="tr-1", overlap=Overlap.BUFFER_ONE)
    assert run is not None
    assert decide(run, {"t|tr-1": active(1)}, T0, fresh=True).outcome == Outcome.QUEUE
    decision = decide(run, {"t|tr-1": SlotState(active=[("wf-0", T0)], queued=1)}, T0, fresh=True)
    assert decision.outcome == Outcome.REFUSE and decision.counter == "skipped"


def test_skip_if_running_is_an_alias_of_overlap_skip() -> None:
    assert TriggerOptions(skip_if_running=True).skips_running
    assert TriggerOptions(overlap="skip").skips_running  # type: ignore[arg-type]
    assert not TriggerOptions(overlap="buffer_all").skips_running  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="contradicts"):
        TriggerOptions(skip_if_running=True, overlap="cancel_other")  # type: ignore[arg-type]


# ---- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cfg",
    [
        {"concurrency": {"key": "input..x"}},
        {"concurrency": {"key": "steps.a.output"}},
        {"concurrency": {"key": "input.x", "limit": 0}},
        {"concurrency": {"key": "input.x", "limit": 10_000_000}},
        {"concurrency": {"key": "input.x", "strategy": "newest"}},
        {"concurrency": {"key": "input.x", "extra": 1}},
        {"rate_limit": {"limit": 1, "period": 0}},
        {"rate_limit": {"limit": 0, "period": 10}},
        {"rate_limit": {"limit": 1}},
        {"max_concurrent_runs": 0},
        {"priority": 101},
    ],
)
def test_bad_flow_control_is_refused(cfg: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        WorkflowDefinition.model_validate({"name": "w", "config": cfg})


@pytest.mark.parametrize("options", [{"overlap": "sometimes"}, {"priority": -1000}])
def test_bad_trigger_overlap_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TriggerOptions.model_validate(options)


# ---- debounce timers ---------------------------------------------------------------------------------
def debounce(**kw: Any) -> Any:
    from flowcore.flowcontrol import DebounceConfig

    return DebounceConfig.model_validate(kw)


def test_a_debounce_window_closes_a_quiet_period_after_the_last_start() -> None:
    from flowcore.flowcontrol import debounce_due

    cfg = debounce(period="10s")
    assert debounce_due(cfg, T0, T0) == T0 + 10
    assert debounce_due(cfg, T0, T0 + 7) == T0 + 17  # each start moves the close
    assert debounce_due(cfg, T0, T0 + 500) == T0 + 510  # no max_wait: a steady stream waits on


def test_max_wait_bounds_the_window_from_its_first_start() -> None:
    from flowcore.flowcontrol import debounce_due

    cfg = debounce(period="10s", max_wait="25s")
    assert debounce_due(cfg, T0, T0 + 7) == T0 + 17
    assert debounce_due(cfg, T0, T0 + 20) == T0 + 25
    assert debounce_due(cfg, T0, T0 + 24.9) == T0 + 25


def test_the_debounced_run_gets_the_last_input_or_all_of_them_in_order() -> None:
    from flowcore.flowcontrol import debounced_input

    inputs = [{"n": 1}, {"n": 2}, {"n": 3}]
    assert debounced_input(debounce(period=1), inputs) == {"n": 3}
    assert debounced_input(debounce(period=1, inputs="all"), inputs) == inputs


def test_debounce_keys_and_bad_debounce() -> None:
    from flowcore.flowcontrol import debounce_slot

    assert debounce_slot("w", debounce(period=1, key="input.user"), {"user": "ann"}) == "d|w|ann"
    assert run_slots("w", config(debounce={"period": 1}), None) is not None  # admission follows the window
    for bad in ({"period": 0}, {"period": 10, "max_wait": 5}, {"period": 1, "inputs": "first"},
                {"period": 1, "key": "steps.x"}, {}):
        with pytest.raises(ValidationError):
            WorkflowDefinition.model_validate({"name": "w", "config": {"debounce": bad}})


@pytest.mark.parametrize(("priority", "head_start_s"), [(0, 0), (3, 3), (100, 100), (-5, 0), (-100, 0)])
def test_a_ready_tasks_head_start_in_the_queue(priority: int, head_start_s: int) -> None:
    # Higher priorities jump ahead; a negative one is never scored into the future, where the queue
    # would treat its task as deferred and an idle worker would leave it waiting.
    from flowcore.commits import PRIORITY_STEP_MS, task_head_start_ms
    from flowcore.models import WorkflowDefinition, WorkflowStatus
    from flowcore.records import Snapshot

    definition = WorkflowDefinition.model_validate(
        {"name": "p", "config": {"priority": priority}, "steps": [{"id": "a", "image": "i", "command": "true"}]}
    )
    snap = Snapshot(wf_id="wf-1", definition=definition, status=WorkflowStatus.RUNNING, input=None, created_at=0.0)
    assert task_head_start_ms(snap) == head_start_s * PRIORITY_STEP_MS
