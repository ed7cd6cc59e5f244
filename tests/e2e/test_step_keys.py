"""Step-level concurrency keys on the real stack (ADR 019): tasks of two workflows sharing a key of
limit 1 never overlap, a waiting task says why, a slot comes back after a failing task and after its
worker is killed, and bad declarations are refused at submission.

The worker here runs on its own Redis prefix (and short leases) and shares the stack's pool service,
so that killing it disturbs no other test."""

from __future__ import annotations

import itertools
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import redis

from tests.e2e.conftest import Proc, Stack
from tests.e2e.flowhttp import FINISHED, brief, step, wait

LEASE = {"FLOW_LEASE_TTL_S": "2", "FLOW_LEASE_RENEW_S": "0.5"}


class Plane:
    def __init__(self, stack: Stack) -> None:
        self.prefix = f"sk{uuid.uuid4().hex[:6]}"
        self.env = {"FLOW_REDIS__PREFIX": self.prefix, "FLOW_POOL__URL": stack.pool_url, **LEASE}
        self.stack = stack
        self.workers: list[Proc] = []
        self.gateway: Proc | None = None
        self.url = ""

    def start_worker(self) -> Proc:
        proc = self.stack.spawn(f"sk-worker-{len(self.workers)}", "workers", self.env)
        self.workers.append(proc)
        return proc


@pytest.fixture(scope="module")
def plane(stack: Stack) -> Iterator[Plane]:
    from tests.e2e.conftest import _wait_healthy, free_port

    p = Plane(stack)
    port = free_port()
    try:
        p.start_worker()
        p.gateway = stack.spawn("sk-gateway", "gateway", {**p.env, "FLOW_PORT": str(port)})
        p.url = f"http://127.0.0.1:{port}"
        _wait_healthy(f"{p.url}/healthz", [p.gateway])
        yield p
    finally:
        for proc in [*p.workers, *([p.gateway] if p.gateway else [])]:
            proc.stop()


@pytest.fixture
def api(stack: Stack, plane: Plane) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=plane.url, headers=stack.headers(), timeout=30) as client:
        yield client


@pytest.fixture
def db(stack: Stack) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    yield client
    client.close()


def keyed(name: str, key: str, code: str, *, items: list[Any] | None = None, limit: int = 1) -> dict[str, Any]:
    concurrency = {"key": key, "limit": limit}
    if items is None:
        return {"name": name, "input": {"customer": "c1"},
                "steps": [step("pay", code, network="none", concurrency=concurrency)]}
    return {"name": name, "input": {"customer": "c1", "items": items},
            "steps": [step("pay", code, type="map", items="input.items", network="none", concurrency=concurrency)]}


def start(client: httpx.Client, definition: dict[str, Any]) -> str:
    r = client.post("/v1/workflows", params={"start": "true"}, json=definition)
    assert r.status_code == 201, r.text
    wf_id: str = r.json()["id"]
    return wf_id


def tasks_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for s in body["steps"] for t in s.get("tasks", [])]


def until_waiting(client: httpx.Client, wf_id: str, timeout_s: float = 60) -> str:
    """The reason the workflow's first waiting task gives, once one waits for its key."""
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get(f"/v1/workflows/{wf_id}").json()
        for t in tasks_of(body):
            if t.get("waiting_on"):
                return str(t["waiting_on"])
        if body["status"] in FINISHED:
            break
        time.sleep(0.05)
    raise AssertionError(f"no task of {wf_id} waited for its key: {brief(body)}")


def until_running(client: httpx.Client, wf_id: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(f"/v1/workflows/{wf_id}").json()
        if any(t["status"] == "running" for t in tasks_of(body)):
            return
        time.sleep(0.05)
    raise AssertionError(f"no task of {wf_id} started")


def free(db: redis.Redis, prefix: str, key: str, timeout_s: float = 30) -> bool:
    """Whether the key has no holder and no waiter, once its last release (just after the commit) is done."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if db.zcard(f"{prefix}:sk:active:{key}") == 0 and db.zcard(f"{prefix}:sk:q:{key}") == 0:
            return True
        time.sleep(0.05)
    return False


def intervals(bodies: list[dict[str, Any]]) -> list[tuple[datetime, datetime]]:
    out = []
    for body in bodies:
        for t in tasks_of(body):
            out.append((datetime.fromisoformat(t["started_at"]), datetime.fromisoformat(t["finished_at"])))
    return sorted(out)


def assert_disjoint(spans: list[tuple[datetime, datetime]]) -> None:
    for (_, end), (begin, _) in itertools.pairwise(spans):
        assert end <= begin, f"two tasks of one key of limit 1 overlapped: {spans}"


def test_tasks_of_two_workflows_sharing_a_key_of_limit_1_never_overlap(
    api: httpx.Client, plane: Plane, db: redis.Redis
) -> None:
    key = f"ovl-{uuid.uuid4().hex[:6]}"
    code = "time.sleep(0.3); print(json.dumps(doc['item']))"
    first = start(api, keyed("sk-a", f"{key}:{{input.customer}}", code, items=[1, 2, 3]))
    second = start(api, keyed("sk-b", f"{key}:{{input.customer}}", code, items=[4, 5, 6]))
    reason = until_waiting(api, second)
    assert reason.startswith(f"waiting for concurrency key {key}:c1 (1/1 in use")
    bodies = [wait(api, wf, timeout_s=120) for wf in (first, second)]
    assert [b["status"] for b in bodies] == ["completed", "completed"], [brief(b) for b in bodies]
    assert bodies[0]["steps"][0]["output"] == [1, 2, 3] and bodies[1]["steps"][0]["output"] == [4, 5, 6]
    spans = intervals(bodies)
    assert len(spans) == 6
    assert_disjoint(spans)
    assert all(t["waiting_on"] is None for b in bodies for t in tasks_of(b))
    assert free(db, plane.prefix, f"{key}:c1")
    counts = api.get("/v1/metrics/flow-control").json()["step_keys"]
    assert counts["admitted"] >= 6 and counts["queued"] >= 1 and counts["released"] >= 6
    text = api.get("/metrics").text
    assert f'flow_step_key_tasks_total{{outcome="released"}} {float(counts["released"])}' in text


def test_other_keys_run_beside_a_busy_one(api: httpx.Client) -> None:
    key = f"par-{uuid.uuid4().hex[:6]}"
    code = "time.sleep(0.5); print(json.dumps(doc['item']))"
    wf = start(api, keyed("sk-keys", f"{key}:{{item}}", code, items=["a", "b", "a", "b"]))
    body = wait(api, wf, timeout_s=120)
    assert body["status"] == "completed", brief(body)
    by_item: dict[str, list[tuple[datetime, datetime]]] = {}
    for t in tasks_of(body):
        item = ["a", "b", "a", "b"][t["index"]]
        by_item.setdefault(item, []).append((datetime.fromisoformat(t["started_at"]), datetime.fromisoformat(t["finished_at"])))
    for spans in by_item.values():
        assert_disjoint(sorted(spans))


def test_a_failing_task_releases_its_slot(api: httpx.Client, plane: Plane, db: redis.Redis) -> None:
    key = f"fail-{uuid.uuid4().hex[:6]}"
    failing = start(api, keyed("sk-fail", key + ":{input.customer}", "time.sleep(1); sys.exit(3)"))
    until_running(api, failing)
    waiting = start(api, keyed("sk-after", key + ":{input.customer}", "print(json.dumps('ran'))"))
    assert until_waiting(api, waiting).startswith(f"waiting for concurrency key {key}:c1 (1/1 in use")
    failed = wait(api, failing, timeout_s=120)
    assert failed["status"] == "failed", brief(failed)
    after = wait(api, waiting, timeout_s=120)
    assert after["status"] == "completed" and after["steps"][0]["output"] == "ran", brief(after)
    assert free(db, plane.prefix, f"{key}:c1")


def test_cancelling_a_waiting_workflow_frees_its_place(api: httpx.Client, plane: Plane, db: redis.Redis) -> None:
    key = f"cxl-{uuid.uuid4().hex[:6]}"
    template = key + ":{input.customer}"
    holder = start(api, keyed("sk-hold", template, "time.sleep(1.5); print(1)"))
    until_running(api, holder)
    cancelled = start(api, keyed("sk-cxl", template, "print(2)"))
    until_waiting(api, cancelled)
    third = start(api, keyed("sk-third", template, "print(3)"))
    assert "1 task(s) ahead" in until_waiting(api, third)
    assert api.post(f"/v1/workflows/{cancelled}/cancel").status_code in (200, 202)
    assert wait(api, cancelled)["status"] == "cancelled"
    assert wait(api, holder, timeout_s=120)["status"] == "completed"
    done = wait(api, third, timeout_s=120)
    assert done["status"] == "completed", brief(done)
    assert free(db, plane.prefix, f"{key}:c1")


@pytest.mark.parametrize(
    ("concurrency", "where"),
    [
        ({"key": "input.customer", "limit": 0}, "limit"),
        ({"key": "payments:{input.customer", "limit": 1}, "key"),
        ({"key": "nowhere.customer", "limit": 1}, "key"),
        ({"key": "input.customer", "limit": 1, "strategy": "queue"}, "strategy"),
    ],
)
def test_a_bad_step_key_is_a_422_and_creates_nothing(api: httpx.Client, concurrency: dict[str, Any], where: str) -> None:
    before = api.get("/v1/workflows").json()["total"]
    r = api.post("/v1/workflows", json={"name": "sk-bad", "steps": [step("a", "print(1)", concurrency=concurrency)]})
    assert r.status_code == 422, r.text
    assert where in r.text and "concurrency" in r.text
    assert api.get("/v1/workflows").json()["total"] == before


def test_a_key_on_a_control_step_is_a_422(api: httpx.Client) -> None:
    before = api.get("/v1/workflows").json()["total"]
    definition = {"name": "sk-bad-branch", "input": {"x": 1}, "steps": [
        {"id": "b", "type": "branch", "condition": {"field": "input.x", "op": "exists"}, "then": ["a"],
         "concurrency": {"key": "input.x", "limit": 1}},
        step("a", "print(1)"),
    ]}
    r = api.post("/v1/workflows", json=definition)
    assert r.status_code == 422 and "concurrency" in r.text, r.text
    assert api.get("/v1/workflows").json()["total"] == before


def _child_of(client: httpx.Client, parent: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        wait_view = client.get(f"/v1/workflows/{parent}").json()["steps"][0].get("wait") or {}
        child = wait_view.get("child_id")
        if child and client.get(f"/v1/workflows/{child}").status_code == 200:
            return str(child)
        time.sleep(0.05)
    raise AssertionError(f"{parent} started no child")


def test_a_child_run_is_queued_by_its_templates_concurrency_key(api: httpx.Client) -> None:
    name = f"sk-tpl-{uuid.uuid4().hex[:4]}"
    template = {"name": name, "config": {"concurrency": {"key": "input.customer", "limit": 1}},
                "steps": [step("work", "time.sleep(3); print(json.dumps(doc['workflow_input']))", network="none")]}
    r = api.post("/v1/workflows", params={"start": "false"}, json=template)
    assert r.status_code == 201, r.text
    tpl = r.json()["id"]

    def parent(n: int) -> dict[str, Any]:
        return {"name": "sk-parent", "steps": [
            {"id": "child", "type": "workflow", "workflow": tpl, "input": {"customer": "acme", "n": n}}]}

    first = start(api, parent(1))
    first_child = _child_of(api, first)
    until_running(api, first_child)  # it holds the key for a few seconds
    second = start(api, parent(2))
    second_child = _child_of(api, second)
    queued = api.get(f"/v1/workflows/{second_child}").json()
    assert queued["status"] == "queued" and "concurrency key 'acme'" in queued["queued_reason"], queued
    assert queued["origin"]["parent_id"] == second
    assert api.get(f"/v1/workflows/{second}").json()["steps"][0]["status"] == "running"  # the parent waits
    bodies = [wait(api, wf, timeout_s=120) for wf in (first, second)]
    assert [b["status"] for b in bodies] == ["completed", "completed"], [brief(b) for b in bodies]
    children = [wait(api, c, timeout_s=60) for c in (first_child, second_child)]
    assert [c["steps"][0]["output"]["n"] for c in children] == [1, 2]
    ends, begins = datetime.fromisoformat(children[0]["finished_at"]), datetime.fromisoformat(children[1]["started_at"])
    assert ends <= begins, "two children of one key of limit 1 ran at once"
    assert children[1]["admitted_at"] is not None
    counts = api.get("/v1/metrics/flow-control").json()["by_workflow"][name]
    assert counts["admitted"] >= 2 and counts["queued"] >= 1


def test_a_child_refused_by_its_template_fails_its_step_saying_why(api: httpx.Client) -> None:
    name = f"sk-tpl-refuse-{uuid.uuid4().hex[:4]}"
    template = {"name": name, "config": {"concurrency": {"limit": 1, "strategy": "cancel_newest"}},
                "steps": [step("work", "time.sleep(2); print(1)", network="none")]}
    tpl = api.post("/v1/workflows", params={"start": "false"}, json=template).json()["id"]
    holder = start(api, {"name": "sk-p1", "steps": [{"id": "child", "type": "workflow", "workflow": tpl}]})
    _child_of(api, holder)
    refused = start(api, {"name": "sk-p2", "steps": [{"id": "child", "type": "workflow", "workflow": tpl}]})
    body = wait(api, refused, timeout_s=60)
    assert body["status"] == "failed", brief(body)
    assert "cancel_newest" in (body["steps"][0]["error"] or ""), brief(body)
    assert wait(api, holder, timeout_s=60)["status"] == "completed"


def test_a_slot_held_by_a_killed_worker_comes_back(api: httpx.Client, plane: Plane, db: redis.Redis) -> None:
    """Last in the module: it kills the plane's worker (and starts another)."""
    key = f"kill-{uuid.uuid4().hex[:6]}"
    holder = start(api, keyed("sk-killed", key + ":{input.customer}", "time.sleep(3); print(json.dumps('held'))"))
    until_running(api, holder)
    waiting = start(api, keyed("sk-waits", key + ":{input.customer}", "print(json.dumps('ran'))"))
    until_waiting(api, waiting)
    key += ":c1"
    assert db.zcard(f"{plane.prefix}:sk:active:{key}") == 1
    for proc in plane.workers:
        proc.stop(signal.SIGKILL)
    plane.start_worker()
    bodies = [wait(api, wf, timeout_s=120) for wf in (holder, waiting)]
    assert [b["status"] for b in bodies] == ["completed", "completed"], [brief(b) for b in bodies]
    assert bodies[1]["steps"][0]["output"] == "ran"
    assert free(db, plane.prefix, key)
    held = tasks_of(bodies[0])[0]
    assert held["takeovers"] >= 1 or held["attempt"] >= 2, held  # its worker really died holding the slot
