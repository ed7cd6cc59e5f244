"""Monotonic counters on real Redis (ADR 020): the commits that finish tasks, steps and workflows add to
``{p}:metrics:counters``; deleting or expiring the records never takes anything back; a duplicate
completion counts nothing; workflow names past the cap report as ``other``, which never goes down.
Workflows are moved on by tests.integration.driver (the worker's own transactions, no pool)."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from flowcore import counters, engine
from flowcore.engine import EngineEnv
from flowcore.keyspace import Keyspace
from tests.integration.driver import Worker, failed, ok
from tests.unit.test_exposition import check_exposition, samples

STEP = {"image": "agentainer-flow/python:3.11", "command": ["python3", "-c", "print(1)"]}
KEYS = Keyspace()
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def run_chain(api: httpx.AsyncClient, worker: Worker, name: str, *, fail_second: bool = False) -> str:
    steps = [{"id": "a", **STEP}, {"id": "b", "depends_on": ["a"], **STEP}]
    r = await api.post("/v1/workflows", params={"start": "true"}, json={"name": name, "steps": steps})
    assert r.status_code == 201, r.text
    wf_id: str = r.json()["id"]
    await worker.run(wf_id, "a", ok())
    await worker.run(wf_id, "b", failed() if fail_second else ok())
    return wf_id


async def scrape(api: httpx.AsyncClient) -> Samples:
    r = await api.get("/metrics")
    assert r.status_code == 200, r.text
    check_exposition(r.text)
    return samples(r.text)


def monotonic_part(v: Samples) -> Samples:
    """Every sample of a counter or histogram family (the gauges may go down)."""
    prefixes = ("flow_tasks_total", "flow_task_retries_total", "flow_task_duration_seconds", "flow_step_duration_seconds",
                "flow_workflows_finished_total", "flow_workflow_duration_seconds")
    return {k: x for k, x in v.items() if k[0].startswith(prefixes)}


def never_lower(before: Samples, after: Samples) -> None:
    for key, value in monotonic_part(before).items():
        assert after.get(key, 0.0) >= value, (key, value, after.get(key))


def finished(v: Samples, name: str, status: str = "completed") -> float:
    return v.get(("flow_workflows_finished_total", (("status", status), ("workflow", name))), 0.0)


async def test_counters_grow_with_commits_and_survive_deletion_and_expiry(api: httpx.AsyncClient, conn: Redis) -> None:
    worker = Worker(conn)
    first = await run_chain(api, worker, "keep")
    broken = await run_chain(api, worker, "keep", fail_second=True)
    v1 = await scrape(api)
    assert finished(v1, "keep") == 1 and finished(v1, "keep", "failed") == 1
    assert v1[("flow_tasks_total", (("outcome", "succeeded"), ("type", "sequential")))] == 3
    assert v1[("flow_tasks_total", (("outcome", "failed"), ("type", "sequential")))] == 1
    assert v1[("flow_step_duration_seconds_count", (("type", "sequential"),))] == 4
    assert v1[("flow_workflow_duration_seconds_count", (("workflow", "keep"),))] == 2
    assert v1[("flow_workflows", (("status", "completed"),))] == 1

    # the records go: one through the API, one as if its keys had expired
    assert (await api.delete(f"/v1/workflows/{first}")).status_code in (200, 204)
    await conn.delete(KEYS.workflow(broken), KEYS.steps(broken), KEYS.tasks(broken), KEYS.state(broken))
    await conn.zrem(KEYS.all_workflows, broken)
    await conn.zrem(KEYS.by_status("failed"), broken)
    v2 = await scrape(api)
    assert v2[("flow_workflows", (("status", "completed"),))] == 0  # a gauge: it follows the records
    assert monotonic_part(v2) == monotonic_part(v1)  # the counters do not

    await run_chain(api, worker, "keep")
    v3 = await scrape(api)
    never_lower(v2, v3)
    assert finished(v3, "keep") == 2
    assert v3[("flow_tasks_total", (("outcome", "succeeded"), ("type", "sequential")))] == 5


async def test_a_duplicate_or_late_completion_counts_nothing(api: httpx.AsyncClient, conn: Redis) -> None:
    worker = Worker(conn)
    r = await api.post("/v1/workflows", params={"start": "true"}, json={"name": "dup", "steps": [{"id": "a", **STEP}]})
    wf_id = r.json()["id"]
    token = await worker.claim(wf_id, "a")
    await worker.complete(wf_id, "a", token, ok())
    before = await conn.hgetall(KEYS.metric_counters)
    await worker.complete(wf_id, "a", token, ok())  # delivered twice: the engine ignores it
    plan = await worker.store.transact(wf_id, lambda s: engine.complete(s, EngineEnv(), "a", 0, token, ok()))
    assert plan.note == "stale"
    assert await conn.hgetall(KEYS.metric_counters) == before
    assert int(before[counters.task_field("sequential", "succeeded").encode()]) == 1


async def test_names_past_the_cap_are_other_and_other_never_goes_down(
    api: httpx.AsyncClient, conn: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(counters, "MAX_WORKFLOW_LABELS", 2)
    worker = Worker(conn)
    history: list[Samples] = []
    for name in ("n1", "n2", "n3", "n4", "n1", "n5", "n2"):
        await run_chain(api, worker, name)
        history.append(await scrape(api))
    for before, after in itertools.pairwise(history):
        never_lower(before, after)
    last = history[-1]
    names = {dict(k[1])["workflow"] for k in last if k[0] == "flow_workflows_finished_total"}
    assert names == {"n1", "n2", "other"}
    assert finished(last, "n1") == 2 and finished(last, "n2") == 2 and finished(last, "other") == 3
    assert last[("flow_workflow_duration_seconds_count", (("workflow", "other"),))] == 3
    total = sum(x for k, x in last.items() if k[0] == "flow_workflow_duration_seconds_count")
    assert total == 7
    registry: list[Any] = await conn.zrange(KEYS.metric_names, 0, -1)
    assert [n.decode() for n in registry] == ["n1", "n2", "n3", "n4", "n5"]
