"""Step-level concurrency keys against real Redis (ADR 019): slots taken under races between processes,
released once, handed on FIFO, and swept when the worker holding them died.

Each ``WorkflowStore`` stands for one process (its own client). Workflows are real records started
by the engine; tasks are claimed as a worker claims them (:func:`workers.stepslots.claim` needs a
runner, so the steps are spelled out here with the same calls)."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import pytest

from flowcore import engine, stepkey_engine
from flowcore.engine import EngineEnv
from flowcore.keyspace import Keyspace, task_field
from flowcore.models import WorkflowDefinition
from flowcore.pool_api import TaskResult
from flowcore.records import TaskRecord, TaskStatus
from flowcore.stepkey_store import Held, StepKeys
from flowcore.stepkeys import SlotNeeded, Verdict
from flowcore.store import WorkflowStore


@pytest.fixture
def keys() -> Keyspace:
    return Keyspace(f"sk-{secrets.token_hex(4)}")


def keyed(customer: str, limit: int = 1, items: int = 1) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate({
        "name": "pay", "input": {"customer": customer, "items": list(range(items))},
        "steps": [{"id": "p", "type": "map", "items": "input.items", "image": "img", "command": "true",
                   "concurrency": {"key": "payments:{input.customer}", "limit": limit}}],
    })


async def started(store: WorkflowStore, defn: WorkflowDefinition) -> str:
    wf_id = await store.create(defn)
    await store.transact(wf_id, lambda snap: engine.start(snap, EngineEnv()))
    return wf_id


async def task(store: WorkflowStore, wf_id: str, index: int = 0) -> TaskRecord:
    raw = await store.redis.hget(store.keys.tasks(wf_id), task_field("p", index))
    assert raw is not None
    return TaskRecord.model_validate_json(raw)


async def claim(store: WorkflowStore, wf_id: str, index: int = 0) -> Held | str:
    """What a worker does with the task's job: a Held slot with the task running, or the wait reason."""
    t = await task(store, wf_id, index)
    field = task_field("p", index)
    try:
        await store.transact(wf_id, lambda s: engine.claim(s, EngineEnv(), "p", index, t.token), tasks=(field,),
                             items=(field,))
    except SlotNeeded as need:
        decision = await StepKeys(store).acquire(need, t.token)
        if decision.verdict == Verdict.WAIT:
            await store.transact(wf_id, lambda s: stepkey_engine.park(s, EngineEnv(), "p", index, t.token,
                                                                         decision.reason), tasks=(field,))
            return decision.reason
        key = need.key
        plan = await store.transact(
            wf_id, lambda s: engine.claim(s, EngineEnv(), "p", index, t.token, held_key=key),
            tasks=(field,), items=(field,),
        )
        assert plan.request is not None
        return Held(key, need.holder, t.token)
    raise AssertionError("a keyed task was claimed without a slot")


async def finish(store: WorkflowStore, wf_id: str, held: Held, index: int = 0, ok: bool = True) -> None:
    result = TaskResult(task_id="x", ok=ok, output=1, exit_code=0 if ok else 1)
    field = task_field("p", index)
    await store.transact(wf_id, lambda s: engine.complete(s, EngineEnv(), "p", index, held.token, result),
                         tasks=(field,))
    await StepKeys(store).release(held)


async def active(store: WorkflowStore, key: str) -> set[str]:
    return {m.decode() for m in await store.redis.zrange(store.keys.sk_active(key), 0, -1)}


async def test_two_processes_racing_for_the_last_slot_never_both_get_it(stores: list[WorkflowStore]) -> None:
    runs = [await started(stores[0], keyed("c1")) for _ in range(6)]
    outcomes: list[Any] = await asyncio.gather(*(claim(stores[i % 2], wf) for i, wf in enumerate(runs)))
    holders = [o for o in outcomes if isinstance(o, Held)]
    assert len(holders) == 1
    assert all(o == "waiting for concurrency key payments:c1 (1/1 in use)" or "ahead" in o
               for o in outcomes if isinstance(o, str))
    assert await active(stores[0], "payments:c1") == {holders[0].holder}
    waiting = [wf for wf, o in zip(runs, outcomes, strict=True) if isinstance(o, str)]
    for wf in waiting:  # parked: queued, saying why, out of the claim queue (the reaper leaves it alone)
        t = await task(stores[0], wf)
        assert t.status == TaskStatus.QUEUED and t.waiting_on is not None
        assert await stores[0].redis.zscore(stores[0].keys.queued, f"{wf}|p|0|{t.token}") is None


async def test_a_release_hands_the_slot_on_fifo_and_happens_once(stores: list[WorkflowStore]) -> None:
    store = stores[0]
    runs = [await started(store, keyed("c2")) for _ in range(3)]
    first = await claim(store, runs[0])
    assert isinstance(first, Held)
    assert isinstance(await claim(store, runs[1]), str)
    assert isinstance(await claim(store, runs[2]), str)
    await finish(store, runs[0], first, ok=False)  # a failure releases as a success does
    assert await active(store, "payments:c2") == {f"{runs[1]}|p|0"}  # reserved for the head
    again = await task(store, runs[1])
    assert again.waiting_on is None and again.status == TaskStatus.QUEUED  # dispatched again, new token
    assert await StepKeys(store).release(first) is False  # a second release frees nothing
    assert await active(store, "payments:c2") == {f"{runs[1]}|p|0"}
    second = await claim(store, runs[1])
    assert isinstance(second, Held)
    assert (await task(store, runs[2])).waiting_on is not None  # still waiting: no overtaking
    counts = await StepKeys(store).counts()
    assert counts["admitted"] == 2 and counts["queued"] == 2 and counts["released"] == 1


async def test_a_cancelled_waiter_is_skipped_by_the_pump(stores: list[WorkflowStore]) -> None:
    store = stores[0]
    runs = [await started(store, keyed("c3")) for _ in range(3)]
    first = await claim(store, runs[0])
    assert isinstance(first, Held)
    await claim(store, runs[1])
    await claim(store, runs[2])
    await store.transact(runs[1], lambda s: engine.cancel(s, EngineEnv()))
    await finish(store, runs[0], first)
    assert await active(store, "payments:c3") == {f"{runs[2]}|p|0"}
    assert (await task(store, runs[1])).status == TaskStatus.CANCELLED


async def test_the_sweep_releases_the_slot_of_a_worker_that_died(stores: list[WorkflowStore]) -> None:
    store = stores[0]
    dead = await started(store, keyed("c4"))
    waiting = await started(store, keyed("c4"))
    held = await claim(store, dead)
    assert isinstance(held, Held)
    assert isinstance(await claim(store, waiting), str)
    slots = StepKeys(store)
    # Its worker is gone: the lease lapses and a reaper hands the attempt over (a new token).
    t = await task(store, dead)
    await store.transact(dead, lambda s: engine.lost(s, EngineEnv(), "p", 0, t.token), tasks=(task_field("p", 0),))
    assert (await slots.sweep_once(now=time.time(), grace_s=60))["released"] == 0  # within the grace: left alone
    done = await slots.sweep_once(now=time.time() + 10, grace_s=5)
    assert done["released"] == 1 and done["pumped"] == 1
    assert await active(store, "payments:c4") == {f"{waiting}|p|0"}
    assert (await slots.counts())["swept"] == 1
    # the dead worker's late release frees nothing
    assert await slots.release(held) is False
    # the taken-over attempt now waits behind, and runs once the slot comes back
    assert isinstance(await claim(store, dead), str)
    after = await claim(store, waiting)
    assert isinstance(after, Held)
    await finish(store, waiting, after)
    assert await active(store, "payments:c4") == {f"{dead}|p|0"}


async def test_the_sweep_redoes_an_unpark_a_crash_interrupted(stores: list[WorkflowStore]) -> None:
    store = stores[0]
    holder = await started(store, keyed("c5"))
    waiting = await started(store, keyed("c5"))
    held = await claim(store, holder)
    assert isinstance(held, Held)
    assert isinstance(await claim(store, waiting), str)
    slots = StepKeys(store)
    await finish(store, holder, held)
    # simulate a pump that reserved the slot and died before unparking: park the task again
    t = await task(store, waiting)
    await store.transact(waiting, lambda s: stepkey_engine.park(s, EngineEnv(), "p", 0, t.token, "waiting"),
                         tasks=(task_field("p", 0),))
    assert (await task(store, waiting)).waiting_on == "waiting"
    done = await slots.sweep_once(now=time.time() + 10, grace_s=5)
    assert done["unparked"] == 1 and (await task(store, waiting)).waiting_on is None
    assert isinstance(await claim(store, waiting), Held)


async def test_a_key_with_nothing_left_is_forgotten_by_the_sweep(stores: list[WorkflowStore]) -> None:
    store = stores[0]
    wf = await started(store, keyed("c6"))
    held = await claim(store, wf)
    assert isinstance(held, Held)
    await finish(store, wf, held)
    await StepKeys(store).sweep_once(now=time.time() + 10)
    assert await store.redis.zscore(store.keys.sk_keys, "payments:c6") is None
