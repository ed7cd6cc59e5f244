"""Bulk deletion by filter (DELETE /v1/workflows) and the retention sweep on a real Redis, the routes
in-process, the sweep both in-process and in a real ``python -m scheduler``. Issue 13: nothing expired."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from flowcore.keyspace import Keyspace
from flowcore.settings import GatewaySettings
from scheduler.loop import Scheduler
from tests.conftest import REPO_ROOT
from tests.gateway_client import gateway_client
from tests.integration.driver import Worker, failed, ok

STEP = {"image": "agentainer-flow/python:3.11", "command": ["python3", "-c", "print(1)"]}
KEYS = Keyspace()
DAY_S = 86400.0


async def create(api: httpx.AsyncClient, name: str, start: bool = True, labels: dict[str, str] | None = None) -> str:
    body: dict[str, Any] = {"name": name, "steps": [{"id": "a", **STEP}], "labels": labels or {}}
    r = await api.post("/v1/workflows", params={"start": str(start).lower()}, json=body)
    assert r.status_code == 201, r.text
    wf_id: str = r.json()["id"]
    return wf_id


async def owned_keys(conn: Redis, wf_id: str) -> list[bytes]:
    # arq's job keys belong to the queue (a worker deletes them when it takes the job; this test has no
    # worker, and arq expires them itself); everything else that names the workflow must go.
    return [k async for k in conn.scan_iter(match=f"*{wf_id}*") if not k.startswith(b"arq:")]


async def fleet(api: httpx.AsyncClient, conn: Redis) -> dict[str, str]:
    """One workflow in each state, with names and labels to filter on, and logs and state to own."""
    worker = Worker(conn)
    ids = {
        "done": await create(api, "nightly", labels={"team": "data"}),
        "bad": await create(api, "nightly", labels={"team": "web"}),
        "cancelled": await create(api, "adhoc"),
        "running": await create(api, "nightly"),
        "pending": await create(api, "draft", start=False),
        "template": await create(api, "nightly"),
    }
    await worker.run(ids["done"], "a", ok("c1"), logs=["a line"])
    await api.put(f"/v1/workflows/{ids['done']}/state/k", json={"value": 1})
    await worker.run(ids["bad"], "a", failed("c2"))
    assert (await api.post(f"/v1/workflows/{ids['cancelled']}/cancel")).status_code == 202
    await worker.claim(ids["running"], "a")
    await worker.run(ids["template"], "a", ok("c3"))
    r = await api.post(f"/v1/workflows/{ids['template']}/triggers", json={"type": "event", "config": {"event_type": "x"}})
    assert r.status_code == 201, r.text
    return ids


async def status_of(api: httpx.AsyncClient, wf_id: str) -> str:
    r = await api.get(f"/v1/workflows/{wf_id}")
    return "deleted" if r.status_code == 404 else str(r.json()["status"])


async def test_delete_by_filter_removes_what_matches_and_everything_it_owns(api: httpx.AsyncClient, conn: Redis) -> None:
    ids = await fleet(api, conn)
    assert await owned_keys(conn, ids["done"])

    dry = (await api.delete("/v1/workflows", params={"name": "nightly", "dry_run": "true"})).json()
    assert dry["dry_run"] is True and dry["count"] == 0 and dry["deleted"] == []
    assert sorted(dry["would_delete"]) == sorted([ids["done"], ids["bad"]])
    assert dry["skipped_templates"] == 1  # the trigger's template stays
    assert await status_of(api, ids["done"]) == "completed"  # a dry run changes nothing

    one = (await api.delete("/v1/workflows", params={"name": "nightly", "label": "team=web"})).json()
    assert one["deleted"] == [ids["bad"]] and one["count"] == 1
    assert await status_of(api, ids["bad"]) == "deleted"
    assert await owned_keys(conn, ids["bad"]) == []

    rest = (await api.delete("/v1/workflows", params={"status": "completed,cancelled", "limit": "1"})).json()
    assert rest["count"] == 1 and rest["more"] is True
    rest = (await api.delete("/v1/workflows", params={"status": ["completed", "cancelled"]})).json()
    assert rest["count"] == 1 and rest["more"] is False and rest["skipped_templates"] == 1
    for gone in ("done", "cancelled"):
        assert await status_of(api, ids[gone]) == "deleted"
        assert await owned_keys(conn, ids[gone]) == []
    assert await status_of(api, ids["running"]) == "running"
    assert await status_of(api, ids["template"]) == "completed"

    drafts = (await api.delete("/v1/workflows", params={"status": "pending"})).json()
    assert drafts["deleted"] == [ids["pending"]]
    listed = {w["id"] for w in (await api.get("/v1/workflows")).json()["items"]}
    assert listed == {ids["running"], ids["template"]}


async def test_time_bounds_select_by_creation_and_finish(api: httpx.AsyncClient, conn: Redis) -> None:
    ids = await fleet(api, conn)
    past = time.time() - 3600
    nothing = (await api.delete("/v1/workflows", params={"finished_before": str(past)})).json()
    assert nothing["count"] == 0 and nothing["matched"] == 0
    iso_past = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(past))
    assert (await api.delete("/v1/workflows", params={"created_before": iso_past})).json()["count"] == 0
    assert (await api.delete("/v1/workflows", params={"older_than": "1h"})).json()["count"] == 0
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    answer = (await api.delete("/v1/workflows", params={"finished_before": soon, "status": "failed"})).json()
    assert answer["deleted"] == [ids["bad"]]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "status"),  # a bare DELETE never means "everything"
        ({"dry_run": "true"}, "status"),
        ({"status": "running"}, "status"),
        ({"status": "queued"}, "status"),
        ({"status": "sleeping"}, "status"),
        ({"older_than": "soon"}, "older_than"),
        ({"older_than": "0s"}, "older_than"),
        ({"created_before": "yesterday"}, "created_before"),
        ({"finished_before": "2026-01-01T00:00:00"}, "finished_before"),  # no zone
        ({"label": "team"}, "label"),
        ({"name": "x", "limit": "0"}, "limit"),
        ({"name": "x", "limit": "1001"}, "limit"),
        ({"name": "x", "dry_run": "perhaps"}, "dry_run"),
        ({"name": "x", "statuss": "failed"}, "statuss"),
        ({"name": "x" * 201}, "name"),
        ({"name": "x", "label": [f"k{i}=v" for i in range(21)]}, "label"),
    ],
)
async def test_bad_filters_are_422_and_delete_nothing(
    api: httpx.AsyncClient, conn: Redis, params: dict[str, Any], field: str
) -> None:
    done = await create(api, "x")
    await Worker(conn).run(done, "a", ok("c"))
    r = await api.delete("/v1/workflows", params=params)
    assert r.status_code == 422 and r.json()["field"] == field, r.text
    assert await status_of(api, done) == "completed"


async def test_the_retention_sweep_deletes_only_workflows_finished_before_the_cut(api: httpx.AsyncClient, conn: Redis) -> None:
    ids = await fleet(api, conn)
    now = time.time()
    scheduler = Scheduler(conn, KEYS, workflow_retention_s=30 * DAY_S, retention_sweep_s=60, clock=lambda: now)
    assert await scheduler.sweep_if_due(now) == 0  # all finished just now
    assert scheduler._next_sweep == now + 60  # once a minute
    assert await scheduler.sweep_if_due(now + 30) == 0 and scheduler._next_sweep == now + 60
    assert await scheduler.sweep_if_due(now + 31 * DAY_S) == 3  # done, bad, cancelled
    states = {name: await status_of(api, wf_id) for name, wf_id in ids.items()}
    assert states == {"done": "deleted", "bad": "deleted", "cancelled": "deleted", "running": "running",
                      "pending": "pending", "template": "completed"}
    off = Scheduler(conn, KEYS, workflow_retention_s=0)
    assert await off.sweep_if_due(now + 3650 * DAY_S) == 0  # 0 keeps them forever


def test_a_real_scheduler_process_expires_finished_workflows(redis_url: str) -> None:
    """python -m scheduler with FLOW_RETENTION_S=1: a finished workflow disappears by itself."""
    import asyncio

    async def setup() -> tuple[str, str]:
        conn = Redis.from_url(redis_url)
        settings = GatewaySettings(redis={"url": redis_url}, pool={"url": "http://127.0.0.1:9"})
        async with gateway_client(settings, conn) as api:
            done = await create(api, "short-lived")
            await Worker(conn).run(done, "a", ok("c"))
            running = await create(api, "long-running")
        await conn.aclose()
        return done, running

    done, running = asyncio.run(setup())
    env = {**os.environ, "FLOW_REDIS__URL": redis_url, "FLOW_RETENTION_S": "1", "FLOW_RETENTION_SWEEP_S": "0.2"}
    proc = subprocess.Popen([sys.executable, "-m", "scheduler"], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        import redis as sync_redis

        client = sync_redis.Redis.from_url(redis_url)
        deadline = time.time() + 30
        while client.exists(KEYS.workflow(done)) and time.time() < deadline:
            time.sleep(0.2)
        assert not client.exists(KEYS.workflow(done)), "the finished workflow was not expired"
        assert client.hget(KEYS.workflow(running), "status") is not None  # a running one stays
        assert client.zscore(KEYS.all_workflows, done) is None
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert "retention: deleted 1 workflows" in out, out


async def test_sdk_and_cli_delete_by_filter(api: httpx.AsyncClient, conn: Redis, redis_url: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from agentainer_flow import BulkDeleteResult, WorkflowClient
    from agentainer_flow.cli import _dispatch, build_parser

    ids = await fleet(api, conn)
    transport = api._transport  # the in-process gateway of the `api` fixture
    async with WorkflowClient("http://gw", transport=transport) as client:
        dry = await client.delete_workflows(name="nightly", dry_run=True)
        assert isinstance(dry, BulkDeleteResult) and sorted(dry.would_delete) == sorted([ids["done"], ids["bad"]])
        assert dry.skipped_templates == 1
        done = await client.delete_workflows(status="failed", labels={"team": "web"}, older_than="0.001s")
        assert done.deleted == [ids["bad"]]
        with pytest.raises(Exception, match="say which workflows"):
            await client.delete_workflows()

    args = build_parser().parse_args(["delete", "--status", "completed", "--status", "cancelled", "--limit", "1", "--all"])
    assert await _dispatch(args, transport) == 0
    printed = capsys.readouterr().out
    assert ids["done"] in printed and ids["cancelled"] in printed and "deleted 2 workflow(s)" in printed
    assert "kept 1 trigger template(s)" in printed
    args = build_parser().parse_args(["delete", ids["pending"]])
    assert await _dispatch(args, transport) == 0
    assert await status_of(api, ids["pending"]) == "deleted"
    assert await status_of(api, ids["running"]) == "running"
