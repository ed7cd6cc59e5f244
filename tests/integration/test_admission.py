"""Flow control against real Redis (ADR 013): atomic admission under races between processes, release
when a run finishes, and the sweep that finishes what a crashed process left.

Each ``WorkflowStore`` stands for one process (its own client)."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from flowcore import engine
from flowcore.admission_store import GRACE_S, FlowControl
from flowcore.engine import EngineEnv
from flowcore.flowcontrol import run_slots
from flowcore.keyspace import Keyspace
from flowcore.models import WorkflowDefinition, WorkflowStatus
from flowcore.records import Origin
from flowcore.store import WorkflowStore, new_workflow_id


@pytest.fixture
def keys() -> Keyspace:
    return Keyspace(f"fc-{secrets.token_hex(4)}")


def definition(config: dict[str, Any], inp: Any = None, name: str = "billing") -> WorkflowDefinition:
    return WorkflowDefinition.model_validate(
        {"name": name, "config": config, "input": inp, "steps": [{"id": "a", "image": "img", "command": "true"}]}
    )


async def queue_run(store: WorkflowStore, defn: WorkflowDefinition, priority: int | None = None) -> str:
    run = run_slots(defn.name, defn.config, defn.input, priority=priority)
    assert run is not None
    wf_id = new_workflow_id()
    await FlowControl(store).create_queued(wf_id, defn, Origin(), run)
    return wf_id


async def start(store: WorkflowStore, defn: WorkflowDefinition, priority: int | None = None) -> str:
    wf_id = await queue_run(store, defn, priority)
    await FlowControl(store).admit(wf_id)
    return wf_id


async def status(store: WorkflowStore, wf_id: str) -> WorkflowStatus:
    return (await store.load_summary(wf_id)).status


async def finish(store: WorkflowStore, wf_id: str) -> None:
    """Any finishing commit releases (a completion, a failure, a cancel: the same path)."""
    await store.transact(wf_id, lambda snap: engine.cancel(snap, EngineEnv(), "done"))


KEYED = {"concurrency": {"key": "input.customer", "limit": 1}}


async def test_two_processes_admitting_one_key_at_once_never_both_pass(stores: list[WorkflowStore]) -> None:
    a, b = stores
    for i in range(15):
        defn = definition(KEYED, {"customer": f"c{i}"})
        ids = [await queue_run(a, defn), await queue_run(b, defn)]
        results = await asyncio.gather(FlowControl(a).admit(ids[0]), FlowControl(b).admit(ids[1]))
        assert sorted(r.outcome for r in results) == ["admit", "queue"]
        statuses = sorted([(await status(a, w)).value for w in ids])
        assert statuses == ["queued", "running"]


async def test_a_finished_run_releases_its_key_to_the_next_in_line(stores: list[WorkflowStore], keys: Keyspace) -> None:
    a, b = stores
    defn = definition(KEYED, {"customer": "acme"})
    first, second, third = [await start(a, defn) for _ in range(3)]
    other = await start(a, definition(KEYED, {"customer": "globex"}))
    assert [await status(a, w) for w in (first, second, third, other)] == [
        WorkflowStatus.RUNNING, WorkflowStatus.QUEUED, WorkflowStatus.QUEUED, WorkflowStatus.RUNNING
    ]
    snap = await a.load(second)
    assert snap.flow is not None and "concurrency key 'acme'" in snap.flow["queued_reason"]
    await finish(b, first)  # another process commits the finish: it releases
    assert await status(a, second) == WorkflowStatus.RUNNING
    assert await status(a, third) == WorkflowStatus.QUEUED
    await finish(a, second)
    assert await status(a, third) == WorkflowStatus.RUNNING
    counts = await FlowControl(a).counts()
    assert counts["queued"] == 2 and counts["queued:billing"] == 2 and counts["admitted"] == 4


async def test_cancelling_a_queued_run_takes_it_out_of_the_queue(stores: list[WorkflowStore], keys: Keyspace) -> None:
    a, _ = stores
    defn = definition(KEYED, {"customer": "acme"})
    first, waiting, last = [await start(a, defn) for _ in range(3)]
    await finish(a, waiting)
    assert await status(a, waiting) == WorkflowStatus.CANCELLED
    await finish(a, first)
    assert await status(a, last) == WorkflowStatus.RUNNING
    assert await a.redis.zcard(keys.fc_queue("c|billing|acme")) == 0


async def test_cancel_in_progress_cancels_the_running_run_with_a_reason(stores: list[WorkflowStore]) -> None:
    a, _ = stores
    defn = definition({"concurrency": {"key": "input.customer", "limit": 1, "strategy": "cancel_in_progress"}},
                      {"customer": "acme"})
    old = await start(a, defn)
    new = await start(a, defn)
    assert await status(a, new) == WorkflowStatus.RUNNING
    snap = await a.load_summary(old)
    assert snap.status == WorkflowStatus.CANCELLED
    assert snap.error is not None and f"superseded by {new}" in snap.error
    assert (await FlowControl(a).counts())["evicted"] == 1


async def test_cancel_newest_refuses_the_new_start_and_records_it(stores: list[WorkflowStore]) -> None:
    a, _ = stores
    defn = definition({"concurrency": {"key": "input.customer", "strategy": "cancel_newest"}}, {"customer": "acme"})
    old = await start(a, defn)
    new = await start(a, defn)
    assert await status(a, old) == WorkflowStatus.RUNNING
    snap = await a.load_summary(new)
    assert snap.status == WorkflowStatus.CANCELLED and snap.error is not None and "cancel_newest" in snap.error
    assert snap.flow is not None and snap.flow["queued_reason"] == snap.error
    ids, _ = await a.list_ids(WorkflowStatus.CANCELLED, 0, 10)
    assert new in ids
    assert (await FlowControl(a).counts())["refused"] == 1


async def test_a_global_limit_spans_keys_and_queues_fairly(stores: list[WorkflowStore]) -> None:
    a, _ = stores
    cfg = {**KEYED, "max_concurrent_runs": 2}
    r1 = await start(a, definition(cfg, {"customer": "x"}))
    r2 = await start(a, definition(cfg, {"customer": "y"}))
    r3 = await start(a, definition(cfg, {"customer": "z"}))
    r4 = await start(a, definition(cfg, {"customer": "x"}))
    assert [await status(a, w) for w in (r1, r2, r3, r4)] == [
        WorkflowStatus.RUNNING, WorkflowStatus.RUNNING, WorkflowStatus.QUEUED, WorkflowStatus.QUEUED
    ]
    await finish(a, r2)  # frees a global slot: z (waiting longest, its key free) goes first
    assert await status(a, r3) == WorkflowStatus.RUNNING
    assert await status(a, r4) == WorkflowStatus.QUEUED
    await finish(a, r1)
    assert await status(a, r4) == WorkflowStatus.RUNNING


async def test_priority_orders_the_waiting_starts(stores: list[WorkflowStore]) -> None:
    a, _ = stores
    defn = definition(KEYED, {"customer": "acme"})
    holder = await start(a, defn)
    low = await start(a, defn, priority=-5)
    normal = await start(a, defn)
    high = await start(a, defn, priority=10)
    await finish(a, holder)
    assert [await status(a, w) for w in (low, normal, high)] == [
        WorkflowStatus.QUEUED, WorkflowStatus.QUEUED, WorkflowStatus.RUNNING
    ]
    await finish(a, high)
    assert await status(a, normal) == WorkflowStatus.RUNNING


async def test_a_rate_limit_queues_with_an_estimated_start_and_the_sweep_admits_later(
    stores: list[WorkflowStore],
) -> None:
    a, _ = stores
    defn = definition({"rate_limit": {"limit": 2, "period": 30}})
    before = time.time()
    ids = [await start(a, defn) for _ in range(3)]
    assert [await status(a, w) for w in ids] == [WorkflowStatus.RUNNING, WorkflowStatus.RUNNING, WorkflowStatus.QUEUED]
    snap = await a.load_summary(ids[2])
    assert snap.flow is not None and snap.flow["queued_reason"].startswith("throttled: rate limit 2 per 30s")
    assert before + 30 <= snap.flow["estimated_start"] <= time.time() + 30
    control = FlowControl(a)
    await control.sweep_once()
    assert await status(a, ids[2]) == WorkflowStatus.QUEUED  # the window is still full
    await control.sweep_once(now=time.time() + 31)
    assert await status(a, ids[2]) == WorkflowStatus.RUNNING
    assert (await control.counts())["throttled"] == 1


async def test_the_sweep_admits_a_start_whose_process_died_before_admission(stores: list[WorkflowStore]) -> None:
    a, b = stores
    wf_id = await queue_run(a, definition(KEYED, {"customer": "acme"}))  # created, never admitted
    assert (await FlowControl(b).sweep_once())["admitted"] == 0  # still within the grace
    done = await FlowControl(b).sweep_once(grace_s=0)
    assert done["admitted"] == 1
    assert await status(a, wf_id) == WorkflowStatus.RUNNING


async def test_the_sweep_starts_an_admitted_run_whose_process_died_before_starting_it(
    stores: list[WorkflowStore],
) -> None:
    a, b = stores
    wf_id = await queue_run(a, definition(KEYED, {"customer": "acme"}))
    result = await FlowControl(a)._admit(wf_id, None)  # admitted; the process dies before the start
    assert result.outcome == "admit"
    assert await status(a, wf_id) == WorkflowStatus.QUEUED
    assert (await FlowControl(b).sweep_once(grace_s=0))["started"] == 1
    assert await status(a, wf_id) == WorkflowStatus.RUNNING


async def test_the_sweep_releases_a_run_whose_finishing_process_died_before_releasing(
    stores: list[WorkflowStore],
) -> None:
    a, b = stores
    defn = definition(KEYED, {"customer": "acme"})
    first, second = await start(a, defn), await start(a, defn)
    # the finish is committed, and the process dies before its release
    await a._transact(first, lambda snap: engine.cancel(snap, EngineEnv(), "done"))
    assert await status(a, second) == WorkflowStatus.QUEUED
    assert (await FlowControl(b).sweep_once(grace_s=0))["released"] == 0  # busy slots are looked at every 5 s
    done = await FlowControl(b).sweep_once(now=time.time() + GRACE_S + 1, grace_s=0)
    assert done["released"] == 1
    assert await status(a, second) == WorkflowStatus.RUNNING


async def test_the_sweep_cancels_an_eviction_its_process_did_not(stores: list[WorkflowStore]) -> None:
    a, b = stores
    defn = definition({"concurrency": {"strategy": "cancel_in_progress"}})
    old = await start(a, defn)
    new = await queue_run(a, defn)
    result = await FlowControl(a)._admit(new, None)  # admitted, evicting old; dies before cancelling it
    assert result.evicted == (old,)
    assert await status(a, old) == WorkflowStatus.RUNNING
    done = await FlowControl(b).sweep_once(grace_s=0)
    assert done["evicted"] == 1 and done["started"] == 1
    assert await status(a, old) == WorkflowStatus.CANCELLED
    assert await status(a, new) == WorkflowStatus.RUNNING


async def test_queued_starts_survive_a_restart_of_every_process(redis_url: str, keys: Keyspace) -> None:
    first = Redis.from_url(redis_url)
    store = WorkflowStore(first, keys)
    defn = definition(KEYED, {"customer": "acme"})
    holder, waiting = await start(store, defn), await start(store, defn)
    await first.aclose()  # every process gone; new ones come up
    second = Redis.from_url(redis_url)
    try:
        store = WorkflowStore(second, keys)
        assert await status(store, waiting) == WorkflowStatus.QUEUED
        await finish(store, holder)
        assert await status(store, waiting) == WorkflowStatus.RUNNING
    finally:
        await second.aclose()


async def test_ready_tasks_of_a_higher_priority_run_are_taken_first(stores: list[WorkflowStore], keys: Keyspace) -> None:
    a, _ = stores
    ids = {}
    for name, priority in (("low", -1), ("normal", 0), ("high", 5)):
        defn = WorkflowDefinition.model_validate({
            "name": name, "config": {"priority": priority}, "steps": [{"id": "a", "image": "img", "command": "true"}],
        })
        ids[name] = await a.create(defn)
        await a.transact(ids[name], lambda snap: engine.start(snap, EngineEnv()))
    now_ms = time.time() * 1000
    queued = [(m.decode(), score) for m, score in await a.redis.zrange(keys.queue, 0, -1, withscores=True)]
    order = [next(n for n, wf in ids.items() if wf in job) for job, _ in queued]
    # High first; a negative priority orders waiting starts only, so its task keeps its arrival order
    # and is never scored into the future (the queue would hold it as a deferred job).
    assert order == ["high", "low", "normal"]
    assert all(score <= now_ms for _, score in queued)
