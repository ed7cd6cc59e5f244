"""Debounce windows close on time to the millisecond (ADR 019, part 3): the workers' timer sleeps until
the earliest close and is woken by a start that opens or moves a window; the flow-control sweep's
one-second cadence no longer bounds a ``250ms`` period."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from flowcore.debounce_store import Debouncer
from flowcore.flowcontrol import DebounceConfig, debounce_due, run_slots
from flowcore.keyspace import Keyspace
from flowcore.models import WorkflowDefinition, WorkflowStatus
from flowcore.records import Origin
from flowcore.store import WorkflowStore
from workers.debounce_timer import close_on_time_forever, sleep_for_s

HOURS_S = 3600.0  # the timer's longest sleep in these tests: only a wake-up or a due close moves it


@pytest.mark.parametrize(
    ("next_close", "now", "expected"),
    [(None, 100.0, 1.0), (100.25, 100.0, 0.25), (100.0, 100.0, 0.001), (90.0, 100.0, 0.001), (500.0, 100.0, 1.0)],
)
def test_the_timer_sleeps_until_the_next_close_and_no_longer(next_close: float | None, now: float,
                                                             expected: float) -> None:
    assert sleep_for_s(next_close, now, 1.0) == pytest.approx(expected)


def test_a_period_in_milliseconds_is_kept_to_the_millisecond() -> None:
    cfg = DebounceConfig.model_validate({"period": "250ms", "max_wait": "1500ms"})
    assert cfg.period_s == 0.25 and cfg.max_wait_s == 1.5
    assert debounce_due(cfg, first_at=10.0, now=10.1) == pytest.approx(10.35)
    assert debounce_due(cfg, first_at=10.0, now=11.4) == pytest.approx(11.5)  # max_wait caps it


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[WorkflowStore]:
    client = Redis.from_url(redis_url)
    yield WorkflowStore(client, Keyspace(f"debt-{secrets.token_hex(4)}"))
    await client.aclose()


async def submit(store: WorkflowStore, n: int) -> str:
    defn = WorkflowDefinition.model_validate({
        "name": "quick", "input": {"n": n}, "config": {"debounce": {"period": "250ms", "inputs": "all"}},
        "steps": [{"id": "a", "image": "img", "command": "true"}],
    })
    run = run_slots(defn.name, defn.config, defn.input)
    assert run is not None
    wf_id, _ = await Debouncer(store).submit(defn, Origin(), run)
    return wf_id


async def status(store: WorkflowStore, wf_id: str) -> WorkflowStatus:
    return (await store.load_summary(wf_id)).status


async def test_a_window_opened_while_the_timer_sleeps_closes_on_time(store: WorkflowStore) -> None:
    timer = asyncio.create_task(close_on_time_forever(store, max_sleep_s=HOURS_S))
    try:
        await asyncio.sleep(0.05)  # the timer found nothing open: it sleeps (for an hour, unless woken)
        wf_id = await submit(store, 1)
        assert await submit(store, 2) == wf_id
        assert await status(store, wf_id) == WorkflowStatus.QUEUED
        for _ in range(200):  # bounded: the close must come from the wake-up, not the hour-long sleep
            if await status(store, wf_id) != WorkflowStatus.QUEUED:
                break
            await asyncio.sleep(0.05)
        snap = await store.load(wf_id)
        assert snap.status == WorkflowStatus.RUNNING and snap.input == [{"n": 1}, {"n": 2}]
        later = await submit(store, 3)  # the next window, closed by the same timer
        assert later != wf_id
        for _ in range(200):
            if await status(store, later) != WorkflowStatus.QUEUED:
                break
            await asyncio.sleep(0.05)
        assert (await store.load(later)).input == [{"n": 3}]
    finally:
        timer.cancel()
        await asyncio.gather(timer, return_exceptions=True)
    assert await store.redis.llen(store.keys.fc_debounce_wake) <= 8

