"""The engine's commits against real Redis (ADR 010): one round trip to read what a transition concerns,
one script to commit it only on the version it read, exactly once under races between processes.

Each ``WorkflowStore`` below stands for one process (its own client; its in-process turn-taking does
not span stores), so completions of one map race for real.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from arq.worker import func
from redis.asyncio import Redis

from flowcore import engine, redisconn
from flowcore.commits import plan_commands, queue_commands, script_args
from flowcore.engine import EngineEnv, Plan
from flowcore.keyspace import Keyspace
from flowcore.models import StepStatus, WorkflowDefinition, WorkflowStatus
from flowcore.pool_api import StateOp, TaskResult
from flowcore.records import Snapshot, TaskStatus
from flowcore.settings import RedisSection
from flowcore.store import WorkflowStore, job_deserializer, job_serializer, task_job_id
from workers.pool_client import PoolClient
from workers.reaper import reap_once
from workers.routing import PoolRouter
from workers.runner import TaskRunner
from workers.wakeup import WakingWorker

IMG = {"image": "img", "command": "true"}


@pytest.fixture
def keys() -> Keyspace:
    return Keyspace(f"commits-{secrets.token_hex(4)}")


@pytest.fixture
async def conns(redis_url: str) -> AsyncIterator[list[Redis]]:
    clients = [Redis.from_url(redis_url) for _ in range(4)]
    yield clients
    for client in clients:
        await client.aclose()


def ok(output: Any = None, state: list[StateOp] | None = None) -> TaskResult:
    return TaskResult(task_id="t", ok=True, exit_code=0, output=output, state_updates=state or [])


def map_definition(n: int, concurrency: int) -> dict[str, Any]:
    return {
        "name": "m",
        "input": {"items": list(range(n))},
        "config": {"max_parallel": concurrency},
        "steps": [{"id": "m", "type": "map", "items": "input.items", "max_concurrency": concurrency, **IMG}],
    }


async def submit(store: WorkflowStore, definition: dict[str, Any]) -> tuple[str, Plan]:
    wf_id = await store.create(WorkflowDefinition.model_validate(definition))
    plan = await store.transact(wf_id, lambda s: engine.start(s, EngineEnv()))
    return wf_id, plan


async def claim(store: WorkflowStore, wf_id: str, step: str, index: int, token: str) -> Plan:
    key = (f"{step}:{index}",)
    return await store.transact(wf_id, lambda s: engine.claim(s, EngineEnv(), step, index, token), tasks=key, items=key)


async def complete(store: WorkflowStore, wf_id: str, step: str, index: int, token: str, result: TaskResult) -> Plan:
    return await store.transact(
        wf_id, lambda s: engine.complete(s, EngineEnv(), step, index, token, result), tasks=(f"{step}:{index}",)
    )


async def events(conn: Redis, keys: Keyspace, wf_id: str) -> list[dict[str, Any]]:
    return [json.loads(fields[b"data"]) for _, fields in await conn.xrange(keys.events(wf_id))]


async def test_concurrent_and_duplicate_completions_of_one_map_commit_each_item_exactly_once(
    conns: list[Redis], keys: Keyspace
) -> None:
    stores = [WorkflowStore(c, keys) for c in conns]
    n = 40
    wf_id, plan = await submit(stores[0], map_definition(n, n))
    tokens = {d.index: d.token for d in plan.dispatch}
    assert len(tokens) == n
    await asyncio.gather(*(claim(stores[i % 4], wf_id, "m", i, t) for i, t in tokens.items()))

    # Every item completes twice at once, from different "processes": one of each pair commits.
    results = await asyncio.gather(
        *(complete(stores[(i + k) % 4], wf_id, "m", i, t, ok(i * 10)) for i, t in tokens.items() for k in (0, 1))
    )
    assert sum(1 for p in results if p.note == "stale") == n

    snap = await stores[0].load(wf_id)
    assert snap.status == WorkflowStatus.COMPLETED
    rec = snap.steps["m"]
    assert rec.status == StepStatus.SUCCEEDED and rec.succeeded == n and rec.failed == 0 and rec.dispatched == n
    assert rec.output == [i * 10 for i in range(n)]
    assert all(t.status == TaskStatus.SUCCEEDED and t.attempt == 1 for t in snap.tasks.values())
    seen = await events(conns[0], keys, wf_id)
    assert sum(1 for e in seen if e["type"] == "task" and e.get("status") == "succeeded") == n
    assert [e["status"] for e in seen if e["type"] == "step"] == ["running", "succeeded"]
    assert await conns[0].zcard(keys.leases) == 0 and await conns[0].zcard(keys.queued) == 0


async def test_a_map_transition_reads_only_the_tasks_it_concerns(conns: list[Redis], keys: Keyspace) -> None:
    store = WorkflowStore(conns[0], keys)
    wf_id, plan = await submit(store, map_definition(30, 3))
    # Items are stored once, apart from the step record, and a claim reads only its own.
    assert "items" not in json.loads(await conns[0].hget(keys.steps(wf_id), "m"))
    assert await conns[0].hlen(keys.items(wf_id)) == 30
    queue = [(d.index, d.token) for d in plan.dispatch]
    loaded: list[set[str]] = []
    while queue:
        index, token = queue.pop(0)
        claimed = await claim(store, wf_id, "m", index, token)
        assert claimed.request is not None and claimed.request.input["item"] == index
        done = await complete(store, wf_id, "m", index, token, ok(index))
        assert done.snap.loaded is not None
        loaded.append(done.snap.loaded)
        queue += [(d.index, d.token) for d in done.dispatch]
    # A completion that does not finish the step holds its own task and the one it dispatches...
    assert all(len(x) <= 2 for x in loaded[:-3])
    # ...the last one reads every task of the step once, for the ordered output.
    assert len(loaded[-1]) == 30
    snap = await store.load(wf_id)
    assert snap.status == WorkflowStatus.COMPLETED and snap.steps["m"].output == list(range(30))


async def test_cancel_reads_and_cancels_every_active_task_of_a_running_map(conns: list[Redis], keys: Keyspace) -> None:
    store = WorkflowStore(conns[0], keys)
    wf_id, plan = await submit(store, map_definition(25, 10))
    for d in plan.dispatch[:6]:
        await claim(store, wf_id, "m", d.index, d.token)
    assert await conns[0].zcard(keys.leases) == 6 and await conns[0].zcard(keys.queued) == 4
    cancelled = await store.transact(wf_id, lambda s: engine.cancel(s, EngineEnv()))
    assert len(cancelled.cancelled_tasks) == 6
    snap = await store.load(wf_id)
    assert snap.status == WorkflowStatus.CANCELLED
    assert sorted(t.status.value for t in snap.tasks.values()) == ["cancelled"] * 10
    assert await conns[0].zcard(keys.leases) == 0 and await conns[0].zcard(keys.queued) == 0
    # The cancelled tasks' workers, finishing late, change nothing.
    late = await complete(store, wf_id, "m", 0, plan.dispatch[0].token, ok(0))
    assert late.note == "stale"


async def test_a_late_result_after_a_takeover_is_refused(conns: list[Redis], keys: Keyspace) -> None:
    store, reaper = WorkflowStore(conns[0], keys), WorkflowStore(conns[1], keys)
    wf_id, plan = await submit(store, {"name": "one", "steps": [{"id": "a", **IMG}]})
    (d,) = plan.dispatch
    await claim(store, wf_id, "a", 0, d.token)
    taken = await reaper.transact(wf_id, lambda s: engine.lost(s, EngineEnv(), "a", 0, d.token), tasks=("a:0",))
    (again,) = taken.dispatch
    assert (await complete(store, wf_id, "a", 0, d.token, ok("late"))).note == "stale"
    await claim(store, wf_id, "a", 0, again.token)
    await complete(store, wf_id, "a", 0, again.token, ok("fresh"))
    snap = await store.load(wf_id)
    assert snap.status == WorkflowStatus.COMPLETED and snap.steps["a"].output == "fresh"
    assert snap.tasks["a:0"].takeovers == 1


async def test_a_commit_that_lost_a_race_decides_again_on_fresh_data(
    conns: list[Redis], keys: Keyspace, redis_url: str
) -> None:
    """A state write (the state API, step code) and another commit both land between a transition's read
    and its commit: the script refuses the stale commit and the transition decides again."""
    store = WorkflowStore(conns[0], keys)
    wf_id, plan = await submit(store, {"name": "one", "steps": [{"id": "a", **IMG}]})
    (d,) = plan.dispatch
    await claim(store, wf_id, "a", 0, d.token)
    meddler = redis.Redis.from_url(redis_url)
    calls: list[int] = []

    def decide(snap: Snapshot) -> Plan:
        calls.append(snap.version)
        if len(calls) == 1:  # between this read and its commit: a state write...
            meddler.hset(keys.state(wf_id), "n", "10")
        elif len(calls) == 2:  # ...then a concurrent commit (it bumps the version)
            meddler.hincrby(keys.workflow(wf_id), "version", 1)
        result = ok("done", [StateOp(op="increment", key="n", value=1)])
        return engine.complete(snap, EngineEnv(), "a", 0, d.token, result)

    try:
        committed = await store.transact(wf_id, decide, tasks=("a:0",))
    finally:
        meddler.close()
    assert len(calls) == 3 and calls[2] == calls[1] + 1 and store.conflicts == 2
    assert committed.state_changes == {"n": 11}
    snap = await store.load(wf_id)
    assert snap.state == {"n": 11} and snap.status == WorkflowStatus.COMPLETED


async def test_a_deleted_workflow_is_never_written_back(conns: list[Redis], keys: Keyspace) -> None:
    store = WorkflowStore(conns[0], keys)
    wf_id, plan = await submit(store, {"name": "one", "steps": [{"id": "a", **IMG}]})
    (d,) = plan.dispatch
    stale_plan = engine.claim(await store.load(wf_id), EngineEnv(), "a", 0, d.token)
    await conns[0].delete(keys.workflow(wf_id))
    args = script_args(stale_plan.snap.version, [], plan_commands(keys, stale_plan))
    assert await store._commit(keys=[keys.workflow(wf_id)], args=args) == 0
    assert not await conns[0].exists(keys.workflow(wf_id))


async def test_a_multi_of_a_trigger_fire_carries_the_same_commands(conns: list[Redis], keys: Keyspace) -> None:
    store = WorkflowStore(conns[0], keys)
    definition = WorkflowDefinition.model_validate(map_definition(3, 3))
    snap = Snapshot(wf_id="wf-fire", definition=definition, status=WorkflowStatus.PENDING, input=definition.input,
                    created_at=1.0)
    plan = engine.start(snap, EngineEnv())
    async with conns[0].pipeline(transaction=True) as pipe:
        store.write_new(pipe, "wf-fire", definition, snap.origin, 1.0)
        queue_commands(pipe, plan_commands(keys, plan))
        await pipe.execute()
    assert await conns[0].zcard(keys.queue) == 3 and await conns[0].llen(keys.wake) == 3
    loaded = await store.load("wf-fire")
    assert loaded.status == WorkflowStatus.RUNNING and loaded.version == 1


async def test_an_idle_worker_wakes_on_a_commit_not_on_a_poll(redis_url: str, conns: list[Redis], keys: Keyspace) -> None:
    """The worker's idle wait is a minute here: the job runs because the commit woke it."""
    ran = asyncio.Event()

    async def run_task(ctx: dict[str, Any], **kwargs: Any) -> None:
        ran.set()

    worker = WakingWorker(
        functions=[func(run_task, name="run_task")],
        redis_settings=redisconn.arq_settings(RedisSection(url=redis_url)),
        queue_name=keys.queue, poll_delay=0.005, keep_result=0, handle_signals=False,
        job_serializer=job_serializer, job_deserializer=job_deserializer,
        marker_ttl_s=30, wake_key=keys.wake, idle_wait_s=60,
    )
    running = asyncio.create_task(worker.async_run())
    try:
        for _ in range(200):  # until it blocks on the wake-up list
            if any(c.get("cmd") == "blpop" for c in await conns[0].client_list()):
                break
            await asyncio.sleep(0.05)
        store = WorkflowStore(conns[0], keys)
        await submit(store, {"name": "one", "steps": [{"id": "a", **IMG}]})
        await asyncio.wait_for(ran.wait(), timeout=30)
        assert worker.wakeups >= 1
        while worker.jobs_complete < 1 or not all(t.done() for t in worker.tasks.values()):
            await asyncio.sleep(0.01)  # let arq finish the job before the worker stops
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await worker.close()


async def test_a_successor_claimed_by_a_completion_is_taken_over_when_its_worker_dies(
    conns: list[Redis], keys: Keyspace
) -> None:
    """The successor a completion claims for its own worker has a lease and nothing else (no job, no
    queued entry): a worker that dies running it leaves a lapsing lease, and the reaper takes it over."""
    store = WorkflowStore(conns[0], keys)
    wf_id, plan = await submit(store, {"name": "c", "steps": [{"id": "a", **IMG}, {"id": "b", "depends_on": ["a"], **IMG}]})
    (d,) = plan.dispatch
    await claim(store, wf_id, "a", 0, d.token)
    done = await store.transact(
        wf_id, lambda s: engine.complete(s, EngineEnv(), "a", 0, d.token, ok(1), claim_next=True), tasks=("a:0",)
    )
    assert done.claimed is not None and done.request is not None
    member = f"{wf_id}|b|0|{done.claimed.token}"
    assert await conns[0].zscore(keys.leases, member) is not None
    a_job = task_job_id(wf_id, "a", 0, d.token).encode()  # never taken here: this test plays the worker
    assert await conns[0].zcard(keys.queued) == 0 and await conns[0].zrange(keys.queue, 0, -1) == [a_job]

    await conns[0].zadd(keys.leases, {member: 0})  # its worker died: the lease lapses
    runner = TaskRunner(
        redis=conns[1], keys=keys, pool=PoolClient(), router=PoolRouter(conns[1], keys, "http://127.0.0.1:9"),
        lease_ttl_s=5.0, lease_renew_s=1.0, max_takeovers=5,
    )
    try:
        assert await reap_once(runner) == 1
    finally:
        await runner.pool.aclose()
    snap = await store.load(wf_id)
    task = snap.tasks["b:0"]
    assert task.status == TaskStatus.QUEUED and task.takeovers == 1 and task.token != done.claimed.token
    assert await conns[0].zrange(keys.queue, 0, -1) == sorted([a_job, task_job_id(wf_id, "b", 0, task.token).encode()])
    assert await conns[0].zcard(keys.leases) == 0
    # The dead worker's result, should it arrive, is stale.
    late = await complete(store, wf_id, "b", 0, done.claimed.token, ok(2))
    assert late.note == "stale"


async def test_a_wide_map_does_not_queue_ahead_of_a_newcomers_first_task(conns: list[Redis], keys: Keyspace) -> None:
    """Fair shares (ADR 018): 200 map items made ready first, then another workflow's one task. Workers
    take the lowest score first; the newcomer's task must be among the first few, not behind the 200."""
    store = WorkflowStore(conns[0], keys)
    wide, plan = await submit(store, map_definition(200, 200))
    assert len(plan.dispatch) == 200
    small, _ = await submit(store, {"name": "small", "steps": [{"id": "only", **IMG}]})
    order = [j.decode() for j in await conns[0].zrange(keys.queue, 0, -1)]
    assert len(order) == 201
    rank = next(i for i, job in enumerate(order) if small in job)
    assert rank <= 5, f"the newcomer's task is number {rank} in the queue"
    # Nothing is deferred: every job is due now, so an idle worker takes any of them at once.
    now_ms = await conns[0].time()
    assert await conns[0].zcount(keys.queue, "-inf", now_ms[0] * 1000 + now_ms[1] // 1000) == 201
    # The map's own items keep their order among themselves.
    items = [job for job in order if wide in job]
    assert items == sorted(items, key=lambda job: int(job.split(":")[-2]))


class CountingPool(PoolClient):
    """Our PoolClient interface answering every task at once (no container): counts what it ran."""

    def __init__(self) -> None:
        super().__init__()
        self.ran: list[str] = []

    async def execute(self, base_url: str, request: Any) -> TaskResult:
        self.ran.append(request.step_id)
        return ok(len(self.ran))


async def test_one_job_runs_a_bounded_number_of_successors_then_queues_the_next(
    conns: list[Redis], keys: Keyspace
) -> None:
    """Fair shares (ADR 018): a worker runs the successors its completions claim in the same job, but at
    most RUN_NEXT_MAX of them; the next goes through the queue, where other workflows' tasks compete."""
    from flowcore.fairness import RUN_NEXT_MAX

    store = WorkflowStore(conns[0], keys)
    n = RUN_NEXT_MAX + 8
    steps = [{"id": f"s{i}", **IMG, **({"depends_on": [f"s{i - 1}"]} if i else {})} for i in range(n)]
    wf_id, plan = await submit(store, {"name": "long-chain", "steps": steps})
    (first,) = plan.dispatch
    pool = CountingPool()
    runner = TaskRunner(
        redis=conns[1], keys=keys, pool=pool, router=PoolRouter(conns[1], keys, "http://127.0.0.1:9"),
        lease_ttl_s=5.0, lease_renew_s=1.0, max_takeovers=5,
    )
    try:
        assert await runner.run(wf_id, "s0", 0, first.token) == "ok"
    finally:
        await pool.aclose()
    assert pool.ran == [f"s{i}" for i in range(RUN_NEXT_MAX)]
    snap = await store.load(wf_id)
    nxt = snap.tasks[f"s{RUN_NEXT_MAX}:0"]
    assert nxt.status == TaskStatus.QUEUED  # queued with a job, not claimed by the finished job
    assert task_job_id(wf_id, f"s{RUN_NEXT_MAX}", 0, nxt.token).encode() in await conns[0].zrange(keys.queue, 0, -1)
