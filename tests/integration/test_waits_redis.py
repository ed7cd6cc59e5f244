"""Durable waits on a real Redis (ADR 012), jobs run by calling the worker's function directly: the
publish transaction (log + deliveries together, only matches woken), the event log's bounds, a wait
that begins after its event (the gap), a delivery job run twice, a timer on a cancelled run, a child
whose template is gone, a child created once although its start job runs twice."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.constants import job_key_prefix
from redis.asyncio import Redis

from flowcore import engine, waitrules, waitstore
from flowcore.engine import EngineEnv
from flowcore.keyspace import Keyspace
from flowcore.models import StepStatus, WorkflowDefinition, WorkflowStatus
from flowcore.store import WorkflowStore
from workers.pool_client import PoolClient
from workers.routing import PoolRouter
from workers.runner import TaskRunner
from workers.waits import wait_wake

IMG = {"image": "agentainer-flow/python:3.11", "command": "true"}


@pytest.fixture
def keys() -> Keyspace:
    return Keyspace(f"waits-{secrets.token_hex(4)}")


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    conn = Redis.from_url(redis_url)
    yield conn
    await conn.aclose()


@pytest.fixture
async def ctx(redis: Redis, keys: Keyspace) -> AsyncIterator[dict[str, Any]]:
    pool = PoolClient(token="x")
    runner = TaskRunner(redis=redis, keys=keys, pool=pool, router=PoolRouter(redis, keys, "http://127.0.0.1:9"),
                        lease_ttl_s=5, lease_renew_s=1, max_takeovers=3)
    yield {"runner": runner}
    await pool.aclose()


async def _start(store: WorkflowStore, definition: dict[str, Any]) -> str:
    wf_id = await store.create(WorkflowDefinition.model_validate(definition))
    await store.transact(wf_id, lambda s: engine.start(s, EngineEnv()))
    return wf_id


async def _jobs(redis: Redis, keys: Keyspace) -> list[dict[str, Any]]:
    """The wait jobs in the queue, as (function kwargs)."""
    found = []
    for job_id in await redis.zrange(keys.queue, 0, -1):
        raw = await redis.get(job_key_prefix + job_id.decode())
        if raw is not None:
            job = json.loads(raw)
            if job["f"] == "wait_wake":
                found.append({**job["k"], "job_id": job_id.decode()})
    return found


async def _run(ctx: dict[str, Any], job: dict[str, Any]) -> str:
    kwargs = {k: job[k] for k in ("kind", "workflow_id", "step_id", "token")}
    return await wait_wake(ctx, **kwargs, data=job.get("data"))


def _waiting_flow(kind: str, order: str, first: bool = False) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"id": "paid", "type": "wait_for_event", "event_type": kind,
                                    "filter": {"order": {"$path": "input.order"}}}]
    if first:
        steps.insert(0, {"id": "quote", **IMG})
        steps[1]["depends_on"] = ["quote"]
    return {"name": "w", "input": {"order": order}, "steps": steps}


async def test_publish_logs_the_event_and_queues_deliveries_for_matches_only(
    redis: Redis, keys: Keyspace, ctx: dict[str, Any]
) -> None:
    store = WorkflowStore(redis, keys)
    mine = await _start(store, _waiting_flow("pay", "o-1"))
    other = await _start(store, _waiting_flow("pay", "o-2"))
    assert await redis.hlen(keys.waiters("pay")) == 2
    for job in await _jobs(redis, keys):  # their checks: nothing logged yet
        assert await _run(ctx, job) == "waiting"
    await redis.delete(keys.queue)
    assert await waitstore.publish(redis, keys, "pay", "ev-1", {"order": "o-1", "amount": 3}) == 1
    (job,) = await _jobs(redis, keys)
    assert job["kind"] == "event" and job["workflow_id"] == mine
    assert len(await waitstore.recent_events(redis, keys, "pay", 0)) == 1
    await _run(ctx, job)
    await _run(ctx, job)  # run twice (a worker died after committing): nothing happens twice
    snap = await store.load(mine)
    assert snap.status == WorkflowStatus.COMPLETED and snap.steps["paid"].output["event_id"] == "ev-1"
    assert (await store.load(other)).steps["paid"].status == StepStatus.RUNNING
    assert await redis.hkeys(keys.waiters("pay")) == [f"{other}|paid|{(await store.load(other)).steps['paid'].wait['token']}".encode()]  # type: ignore[index]


async def test_a_wait_that_begins_after_its_event_finds_it_in_the_log(
    redis: Redis, keys: Keyspace, ctx: dict[str, Any]
) -> None:
    store = WorkflowStore(redis, keys)
    wf_id = await _start(store, _waiting_flow("pay", "o-9", first=True))
    assert await waitstore.publish(redis, keys, "pay", "early", {"order": "o-9"}) == 0  # nobody waits yet
    snap = await store.load(wf_id)
    task = snap.tasks["quote:0"]
    from flowcore.pool_api import TaskResult

    await store.transact(wf_id, lambda s: engine.claim(s, EngineEnv(), "quote", 0, task.token))
    await store.transact(wf_id, lambda s: engine.complete(s, EngineEnv(), "quote", 0, task.token,
                                                          TaskResult(task_id="t", ok=True, output=1, exit_code=0)))
    (check,) = [j for j in await _jobs(redis, keys) if j["kind"] == "check"]
    assert await _run(ctx, check) == "delivered"
    snap = await store.load(wf_id)
    assert snap.status == WorkflowStatus.COMPLETED and snap.steps["paid"].output["event_id"] == "early"


async def test_the_event_log_is_bounded(redis: Redis, keys: Keyspace) -> None:
    # A pending workflow waiting for both types makes them logged (from its creation on).
    await WorkflowStore(redis, keys).create(WorkflowDefinition.model_validate({"name": "w", "steps": [
        {"id": "a", "type": "wait_for_event", "event_type": "big"},
        {"id": "b", "type": "wait_for_event", "event_type": "many"}]}))
    big = {"order": "x", "blob": "y" * waitrules.EVENT_LOG_ENTRY_MAX_BYTES}
    await waitstore.publish(redis, keys, "big", "e-big", big)
    assert await redis.exists(keys.event_log("big")) == 0  # too large to keep for later waits
    for i in range(waitrules.EVENT_LOG_MAX + 300):
        await waitstore.publish(redis, keys, "many", f"e{i}", {"i": i})
    assert await redis.xlen(keys.event_log("many")) < waitrules.EVENT_LOG_MAX + 300
    assert 0 < await redis.ttl(keys.event_log("many")) <= waitrules.EVENT_LOG_AGE_S


async def test_only_types_some_workflow_may_wait_for_are_logged(redis: Redis, keys: Keyspace) -> None:
    """Every published event used to be logged under its type: a sender could fill Redis with as many
    types as it liked. Now only a type that a workflow created in the last 7 days waits for is kept."""
    for i in range(50):
        await waitstore.publish(redis, keys, f"noise-{i}", f"e{i}", {"i": i})
    assert [k async for k in redis.scan_iter(match=keys.event_log("noise-*"))] == []
    await WorkflowStore(redis, keys).create(WorkflowDefinition.model_validate({"name": "w", "steps": [
        {"id": "a", "type": "wait_for_event", "event_type": "noise-7"}]}))
    await waitstore.publish(redis, keys, "noise-7", "again", {"i": 7})
    assert await redis.xlen(keys.event_log("noise-7")) == 1
    # Past the window nothing waits any more: the type is forgotten and no longer logged.
    later = time.time() + waitrules.EVENT_LOG_AGE_S + 60
    await waitstore.publish(redis, keys, "noise-7", "late", {"i": 7}, now=later)
    assert await redis.xlen(keys.event_log("noise-7")) == 1
    assert await redis.zscore(keys.watched_event_types, "noise-7") is None


async def test_a_timer_after_cancel_changes_nothing_and_cancel_removes_the_waiter(
    redis: Redis, keys: Keyspace, ctx: dict[str, Any]
) -> None:
    store = WorkflowStore(redis, keys)
    wf_id = await _start(store, {"name": "t", "steps": [
        {"id": "paid", "type": "wait_for_event", "event_type": "pay", "timeout": "1h"}]})
    timer = next(j for j in await _jobs(redis, keys) if j["kind"] == "timer")
    await store.transact(wf_id, lambda s: engine.cancel(s, EngineEnv(), "stop"))
    assert await redis.hlen(keys.waiters("pay")) == 0
    assert await redis.get(job_key_prefix + timer["job_id"]) is None  # the timer job went with the commit
    version = (await store.load_summary(wf_id)).version
    await _run(ctx, timer)
    assert (await store.load_summary(wf_id)).version == version


async def test_a_child_is_created_once_and_a_missing_template_fails_the_step(
    redis: Redis, keys: Keyspace, ctx: dict[str, Any]
) -> None:
    store = WorkflowStore(redis, keys)
    template = await store.create(WorkflowDefinition.model_validate({"name": "tpl", "steps": [
        {"id": "nap", "type": "sleep", "duration": 3600}]}))
    parent = await _start(store, {"name": "p", "steps": [{"id": "kid", "type": "workflow", "workflow": template}]})
    (start,) = [j for j in await _jobs(redis, keys) if j["kind"] == "child_start"]
    assert await _run(ctx, start) == "started"
    assert await _run(ctx, start) == "started"  # again: the same child, not a second one
    child_id = (await store.load(parent)).steps["kid"].wait["child_id"]  # type: ignore[index]
    assert await redis.zcard(keys.all_workflows) == 3
    child = await store.load(child_id)
    assert child.status == WorkflowStatus.RUNNING and child.origin.parent_id == parent

    orphan = await _start(store, {"name": "p2", "steps": [{"id": "kid", "type": "workflow", "workflow": "wf-gone-0"}]})
    (start,) = [j for j in await _jobs(redis, keys) if j["kind"] == "child_start" and j["workflow_id"] == orphan]
    assert await _run(ctx, start) == "refused"
    snap = await store.load(orphan)
    assert snap.status == WorkflowStatus.FAILED and "template" in (snap.steps["kid"].error or "")


async def test_children_nest_at_most_ten_deep(redis: Redis, keys: Keyspace, ctx: dict[str, Any]) -> None:
    from flowcore.records import Origin

    store = WorkflowStore(redis, keys)
    template = await store.create(WorkflowDefinition.model_validate({"name": "tpl", "steps": [{"id": "a", **IMG}]}))
    deep = await store.create(WorkflowDefinition.model_validate(
        {"name": "deep", "steps": [{"id": "kid", "type": "workflow", "workflow": template}]}),
        origin=Origin(kind="workflow", depth=waitstore.MAX_CHILD_DEPTH))
    await store.transact(deep, lambda s: engine.start(s, EngineEnv()))
    (start,) = [j for j in await _jobs(redis, keys) if j["kind"] == "child_start"]
    assert await _run(ctx, start) == "refused"
    snap = await store.load(deep)
    assert snap.status == WorkflowStatus.FAILED and "nest at most 10 deep" in (snap.steps["kid"].error or "")


async def _candidates(redis: Redis, keys: Keyspace, event_type: str, payload: Any) -> set[str]:
    async with redis.pipeline(transaction=True) as pipe:
        await pipe.watch(keys.waiters(event_type))
        found = await waitstore._candidates(pipe, keys, event_type, payload)
        await pipe.reset()
    return {m.decode() if isinstance(m, bytes) else m for m in found}


async def test_publish_reads_only_the_waiters_an_event_can_match(
    redis: Redis, keys: Keyspace, ctx: dict[str, Any]
) -> None:
    """Waiters whose resolved filter pins a field to a value are filed under it (flowcore.waitindex):
    publishing reads the ones filed under the event's value and the few no index covers, not all of
    them; the full filter still decides, and every waiter is unfiled when its wait ends."""
    store = WorkflowStore(redis, keys)
    pinned = {i: await _start(store, _waiting_flow("pay", f"o-{i}")) for i in range(120)}
    numeric = await _start(store, {"name": "n", "input": {"n": 7}, "steps": [
        {"id": "paid", "type": "wait_for_event", "event_type": "pay", "filter": {"order": {"$path": "input.n"}}}]})
    loose = [await _start(store, {"name": "l", "steps": [  # comparisons only: no index covers them
        {"id": "paid", "type": "wait_for_event", "event_type": "pay", "filter": {"amount": {">": i}}}]})
        for i in range(3)]
    assert await redis.hlen(keys.waiters("pay")) == 124
    by_id = {wf_id: i for i, wf_id in pinned.items()}

    def owners(members: set[str]) -> set[str]:
        return {m.split("|")[0] for m in members}

    assert owners(await _candidates(redis, keys, "pay", {"order": "o-17", "amount": 1})) == {pinned[17], *loose}
    # 7 == "7" == 7.0 for filters: a numeric value finds the waiter pinned to the number 7.
    assert owners(await _candidates(redis, keys, "pay", {"order": "7"})) == {numeric, *loose}
    assert owners(await _candidates(redis, keys, "pay", {"order": 7.0})) == {numeric, *loose}
    assert owners(await _candidates(redis, keys, "pay", {"other": 1})) == set(loose)

    for job in await _jobs(redis, keys):
        await _run(ctx, job)  # the checks: nothing logged yet
    await redis.delete(keys.queue)
    assert await waitstore.publish(redis, keys, "pay", "ev-17", {"order": "o-17", "amount": 1}) == 2  # o-17, >0
    woken = {job["workflow_id"] for job in await _jobs(redis, keys)}
    assert woken == {pinned[17], loose[0]}
    for job in await _jobs(redis, keys):
        await _run(ctx, job)
    assert (await store.load(pinned[17])).status == WorkflowStatus.COMPLETED
    assert by_id[pinned[17]] == 17
    # Their waits ended: unfiled from the index and the scan set alike.
    assert owners(await _candidates(redis, keys, "pay", {"order": "o-17", "amount": 1})) == set(loose[1:])
    for wf_id in [*pinned.values(), numeric, *loose]:
        if wf_id not in (pinned[17], loose[0]):  # those two completed
            await store.transact(wf_id, lambda s: engine.cancel(s, EngineEnv(), "done"))
    assert await redis.hlen(keys.waiters("pay")) == 0
    assert await redis.scard(keys.waiters_scan("pay")) == 0
    assert set((await redis.hgetall(keys.waiters_paths("pay"))).values()) == {b"0"}


async def test_waiters_registered_without_the_index_are_still_found(redis: Redis, keys: Keyspace) -> None:
    """A waiter written by a version without the index (only in the waiters hash) makes publishing read
    every waiter of its type, so nothing that waited before an upgrade is missed."""
    store = WorkflowStore(redis, keys)
    await _start(store, _waiting_flow("pay", "o-1"))
    legacy = "wf-legacy|paid|tok"
    await redis.hset(keys.waiters("pay"), legacy, json.dumps({"filter": {"order": "o-2"}, "since": 0}))
    assert legacy in await _candidates(redis, keys, "pay", {"order": "o-2"})
    assert await waitstore.publish(redis, keys, "pay", "ev", {"order": "o-2"}) == 1
