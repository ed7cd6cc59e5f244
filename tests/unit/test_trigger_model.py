"""Trigger specs, input merging and the scheduler's pure decision (catch-up, missed fires)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from flowcore.errors import InvalidInput
from flowcore.triggers import CatchUp, Trigger, TriggerSpec, merge_input, plan_schedule, trigger_view


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def schedule(expr: str = "0 * * * *", *, catch_up: str = "skip", grace_s: float = 60, tz: str = "UTC") -> Trigger:
    spec = TriggerSpec.model_validate(
        {"type": "schedule", "cron_expression": expr, "timezone": tz,
         "config": {"catch_up": catch_up, "misfire_grace_s": grace_s}}
    ).checked()
    return Trigger(id="tr-1", workflow_id="wf-1", spec=spec, created_at=ts(2026, 1, 1))


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"type": "schedule"}, "needs cron_expression"),
        ({"type": "event"}, "needs config.event_type"),
        ({"type": "manual", "cron_expression": "@daily"}, "belong to schedule triggers"),
        ({"type": "webhook", "config": {"event_type": "x"}}, "belong to event triggers"),
        ({"type": "event", "config": {"event_type": "x", "secret": "12345678"}}, "belong to webhook triggers"),
        ({"type": "event", "config": {"event_type": "x", "event_filter": {"a": {"in": 1}}}}, "'in' needs a list"),
        ({"type": "webhook", "config": {"signature": "gitlab"}}, "signature"),
        ({"type": "timer"}, "type"),
        ({"type": "manual", "config": {"unknown_option": 1}}, "unknown_option"),
    ],
)
def test_bad_specs_name_the_problem(body: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        TriggerSpec.model_validate(body)
    assert needle in str(info.value)


def test_cron_alias_and_checked_defaults() -> None:
    spec = TriggerSpec.model_validate({"type": "cron", "cron_expression": "@daily"}).checked()
    assert spec.type.value == "schedule" and spec.timezone == "UTC"
    with pytest.raises(InvalidInput, match="unknown timezone"):
        TriggerSpec.model_validate({"type": "schedule", "cron_expression": "@daily", "timezone": "Nowhere/X"}).checked()
    hook = TriggerSpec.model_validate({"type": "webhook"}).checked()
    assert hook.config.signature is not None and hook.config.signature.value == "generic"
    assert hook.config.secret and len(hook.config.secret) >= 32


def test_view_masks_the_secret_except_at_creation() -> None:
    spec = TriggerSpec.model_validate({"type": "webhook", "config": {"signature": "github", "secret": "s3cret-value"}})
    trigger = Trigger(id="tr-9", workflow_id="wf-1", spec=spec.checked(), created_at=0.0)
    assert trigger_view(trigger)["config"]["secret"] == "********"
    assert trigger_view(trigger, reveal_secret=True)["config"]["secret"] == "s3cret-value"
    assert trigger_view(trigger)["webhook_url"] == "/v1/hooks/tr-9"


@pytest.mark.parametrize(
    ("template", "input_data", "carried", "expected"),
    [
        (None, None, None, None),
        ([1, 2], None, None, [1, 2]),
        ({"a": 1, "b": 1}, {"b": 2, "c": 2}, {"c": 3}, {"a": 1, "b": 2, "c": 3}),
        ({"a": 1}, None, "raw text", {"a": 1, "payload": "raw text"}),
        ([1], {"x": 1}, None, {"input": [1], "x": 1}),
        (None, 5, [9], {"input_data": 5, "payload": [9]}),
    ],
)
def test_merge_input(template: Any, input_data: Any, carried: Any, expected: Any) -> None:
    assert merge_input(template, input_data, carried) == expected


def test_on_time_fire_runs_the_due_time() -> None:
    d = plan_schedule(schedule(), ts(2026, 1, 2, 10), ts(2026, 1, 2, 10, 0, 5))
    assert d.fire_at == ts(2026, 1, 2, 10) and d.missed == 0 and d.next_run == ts(2026, 1, 2, 11)


def test_missed_fires_with_skip_run_nothing_and_are_counted() -> None:
    # Down from 10:00 to 13:30: 10, 11, 12, 13 were missed.
    d = plan_schedule(schedule(), ts(2026, 1, 2, 10), ts(2026, 1, 2, 13, 30))
    assert d.fire_at is None and d.missed == 4 and d.next_run == ts(2026, 1, 2, 14)


def test_missed_fires_with_run_once_run_the_latest_once() -> None:
    d = plan_schedule(schedule(catch_up=CatchUp.RUN_ONCE.value), ts(2026, 1, 2, 10), ts(2026, 1, 2, 13, 30))
    assert d.fire_at == ts(2026, 1, 2, 13) and d.missed == 3 and d.next_run == ts(2026, 1, 2, 14)


def test_a_late_but_in_grace_fire_still_runs_and_earlier_ones_count_as_missed() -> None:
    d = plan_schedule(schedule(grace_s=120), ts(2026, 1, 2, 10), ts(2026, 1, 2, 12, 1))
    assert d.fire_at == ts(2026, 1, 2, 12) and d.missed == 2
