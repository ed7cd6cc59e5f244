"""Debounced starts against real Redis (ADR 013): inputs accumulate in one window per key, the window
closes after the quiet period or max_wait, a start during the close opens the next window, and a
crash between closing and starting is finished by the next sweep. The sweep's clock is passed in."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from flowcore.debounce_store import Debouncer
from flowcore.flowcontrol import run_slots
from flowcore.keyspace import Keyspace
from flowcore.models import WorkflowDefinition, WorkflowStatus
from flowcore.records import Origin
from flowcore.store import WorkflowStore


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[WorkflowStore]:
    client = Redis.from_url(redis_url)
    yield WorkflowStore(client, Keyspace(f"deb-{secrets.token_hex(4)}"))
    await client.aclose()


def definition(debounce: dict[str, Any], inp: Any, **config: Any) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate({
        "name": "digest", "input": inp, "config": {"debounce": debounce, **config},
        "steps": [{"id": "a", "image": "img", "command": "true"}],
    })


async def submit(store: WorkflowStore, defn: WorkflowDefinition) -> tuple[str, bool]:
    run = run_slots(defn.name, defn.config, defn.input)
    assert run is not None
    return await Debouncer(store).submit(defn, Origin(), run)


async def test_starts_of_one_key_accumulate_and_start_once_with_all_inputs(store: WorkflowStore) -> None:
    cfg = {"period": "10s", "key": "input.user", "inputs": "all"}
    first, opened = await submit(store, definition(cfg, {"user": "ann", "n": 1}))
    assert opened
    assert await submit(store, definition(cfg, {"user": "ann", "n": 2})) == (first, False)
    other, _ = await submit(store, definition(cfg, {"user": "bob", "n": 1}))
    assert other != first
    snap = await store.load_summary(first)
    assert snap.status == WorkflowStatus.QUEUED and snap.flow is not None
    assert snap.flow["queued_reason"].startswith("debounced:") and snap.flow["debounced"] == 2
    debouncer = Debouncer(store)
    assert await debouncer.sweep_once() == 0  # still quiet for less than 10 s
    assert await debouncer.sweep_once(now=time.time() + 11) == 2
    snap = await store.load(first)
    assert snap.status == WorkflowStatus.RUNNING
    assert snap.input == [{"user": "ann", "n": 1}, {"user": "ann", "n": 2}]
    assert (await store.load(other)).input == [{"user": "bob", "n": 1}]


async def test_the_last_input_and_max_wait(store: WorkflowStore) -> None:
    cfg = {"period": "10s", "max_wait": "15s"}
    wf_id, _ = await submit(store, definition(cfg, {"n": 1}))
    await submit(store, definition(cfg, {"n": 2}))
    snap = await store.load_summary(wf_id)
    assert snap.flow is not None
    assert snap.flow["estimated_start"] <= time.time() + 15
    await Debouncer(store).sweep_once(now=time.time() + 16)
    snap = await store.load(wf_id)
    assert snap.status == WorkflowStatus.RUNNING and snap.input == {"n": 2}


async def test_a_start_arriving_while_the_window_closes_goes_into_the_next_window(store: WorkflowStore) -> None:
    cfg = {"period": "1s"}
    debouncer = Debouncer(store)
    first, _ = await submit(store, definition(cfg, {"n": 1}))
    at = time.time() + 2
    assert await debouncer._close(first, at)  # closed; the process is about to write its input
    second, opened = await submit(store, definition(cfg, {"n": 2}))
    assert opened and second != first
    await debouncer._finish(first)
    assert (await store.load(first)).input == {"n": 1}
    await debouncer.sweep_once(now=time.time() + 2)
    assert (await store.load(second)).input == {"n": 2}
    assert (await store.load_summary(second)).status == WorkflowStatus.RUNNING


async def test_a_crash_between_closing_and_starting_is_finished_by_the_next_sweep(store: WorkflowStore) -> None:
    debouncer = Debouncer(store)
    wf_id, _ = await submit(store, definition({"period": "1s"}, {"n": 1}))
    assert await debouncer._close(wf_id, time.time() + 2)  # and the process dies here
    assert (await store.load_summary(wf_id)).status == WorkflowStatus.QUEUED
    await debouncer.sweep_once(now=time.time() + 10)
    snap = await store.load(wf_id)
    assert snap.status == WorkflowStatus.RUNNING and snap.input == {"n": 1}


async def test_a_debounced_run_still_passes_its_concurrency_key(store: WorkflowStore) -> None:
    cfg = {"period": "1s"}
    keyed = {"concurrency": {"limit": 1}}
    first, _ = await submit(store, definition(cfg, {"n": 1}, **keyed))
    await Debouncer(store).sweep_once(now=time.time() + 2)
    second, _ = await submit(store, definition(cfg, {"n": 2}, **keyed))
    await Debouncer(store).sweep_once(now=time.time() + 2)
    assert (await store.load_summary(first)).status == WorkflowStatus.RUNNING
    snap = await store.load_summary(second)
    assert snap.status == WorkflowStatus.QUEUED and snap.flow is not None
    assert snap.flow["queued_reason"].startswith("queued: concurrency key")
