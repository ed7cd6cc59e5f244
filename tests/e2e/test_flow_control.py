"""Flow control on the real stack (ADR 013): concurrency keys and their strategies, the race of two
starts for one key through two gateways, overlap policies of triggers, rate limits, priority, bad
input, and queued runs surviving a restart of the worker and the gateway.

The processes here (two gateways, a worker) run on their own Redis prefix and share the stack's pool
service, so that restarting them disturbs no other test."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Proc, Stack, _wait_healthy, free_port
from tests.e2e.flowhttp import FINISHED, brief, step, wait
from tests.unit.test_exposition import samples


@dataclass
class Plane:
    urls: list[str]
    env: dict[str, str]
    gateways: list[Proc] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)


def _gateway(stack: Stack, env: dict[str, str], port: int) -> Proc:
    proc = stack.spawn(f"fc-gateway-{port}", "gateway", {**env, "FLOW_PORT": str(port)})
    _wait_healthy(f"http://127.0.0.1:{port}/healthz", [proc])
    return proc


@pytest.fixture(scope="module")
def plane(stack: Stack) -> Iterator[Plane]:
    env = {"FLOW_REDIS__PREFIX": f"fc{uuid.uuid4().hex[:6]}", "FLOW_POOL__URL": stack.pool_url}
    ports = [free_port(), free_port()]
    p = Plane([f"http://127.0.0.1:{port}" for port in ports], env)
    try:
        p.workers.append(stack.spawn("fc-worker", "workers", env))
        p.gateways += [_gateway(stack, env, port) for port in ports]
        yield p
    finally:
        for proc in [*p.gateways, *p.workers]:
            proc.stop()


def http(stack: Stack, url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers=stack.headers(), timeout=30)


@pytest.fixture
def api(stack: Stack, plane: Plane) -> Iterator[httpx.Client]:
    with http(stack, plane.urls[0]) as client:
        yield client


def held(name: str, config: dict[str, Any], inp: Any, hold_s: float = 1.0) -> dict[str, Any]:
    """A workflow whose one step holds its key for ``hold_s``."""
    return {"name": name, "config": config, "input": inp,
            "steps": [step("work", f"time.sleep({hold_s}); print(json.dumps(doc['input']))", network="none")]}


def start(client: httpx.Client, definition: dict[str, Any], **params: Any) -> dict[str, Any]:
    r = client.post("/v1/workflows", params={"start": "true", **params}, json=definition)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def get(client: httpx.Client, wf_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/v1/workflows/{wf_id}").json()
    return body


def done(client: httpx.Client, wf_id: str) -> dict[str, Any]:
    return wait(client, wf_id, timeout_s=120)


def test_runs_of_one_key_queue_fifo_and_other_keys_go_on(api: httpx.Client) -> None:
    cfg = {"concurrency": {"key": "input.customer", "limit": 1}}
    name = f"fc-queue-{uuid.uuid4().hex[:4]}"
    first, second, third = (start(api, held(name, cfg, {"customer": "acme", "n": i})) for i in range(3))
    other = start(api, held(name, cfg, {"customer": "globex"}))
    assert first["status"] == "running" and other["status"] == "running"
    assert second["status"] == third["status"] == "queued", (second, third)
    assert second["queued_reason"] == "queued: concurrency key 'acme' is at its limit of 1"
    assert third["queued_reason"] == "queued: behind 1 waiting run(s) of concurrency key 'acme'"
    listed = {w["id"]: w for w in api.get("/v1/workflows", params={"status": "queued"}).json()["items"]}
    assert listed[second["id"]]["queued_reason"] == second["queued_reason"]
    results = [done(api, w["id"]) for w in (first, second, third, other)]
    assert [r["status"] for r in results] == ["completed"] * 4, [brief(r) for r in results]
    # one at a time, in order of arrival
    assert results[0]["finished_at"] <= results[1]["started_at"]
    assert results[1]["finished_at"] <= results[2]["started_at"]
    assert results[1]["admitted_at"] is not None and results[1]["queued_reason"] is None


def test_two_starts_for_one_key_at_the_same_instant_through_two_gateways(stack: Stack, plane: Plane) -> None:
    cfg = {"concurrency": {"key": "input.customer", "limit": 1, "strategy": "cancel_newest"}}
    name = f"fc-race-{uuid.uuid4().hex[:4]}"
    clients = [http(stack, url) for url in plane.urls]
    try:
        for attempt in range(5):
            definition = held(name, cfg, {"customer": f"c{attempt}"}, hold_s=0.5)
            barrier = threading.Barrier(2)
            answers: list[dict[str, Any]] = []

            def post(
                client: httpx.Client,
                definition: dict[str, Any] = definition,
                barrier: threading.Barrier = barrier,
                answers: list[dict[str, Any]] = answers,
            ) -> None:
                barrier.wait()
                answers.append(start(client, definition))

            threads = [threading.Thread(target=post, args=(c,)) for c in clients]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(a["status"] for a in answers) == ["cancelled", "running"], answers
            refused = next(a for a in answers if a["status"] == "cancelled")
            assert "cancel_newest" in refused["error"] and refused["queued_reason"] == refused["error"]
            winner = next(a for a in answers if a["status"] == "running")
            assert done(clients[0], winner["id"])["status"] == "completed"
    finally:
        for c in clients:
            c.close()


def test_cancel_in_progress_newest_wins_with_a_reason(api: httpx.Client) -> None:
    cfg = {"concurrency": {"key": "input.customer", "strategy": "cancel_in_progress"}}
    name = f"fc-newest-{uuid.uuid4().hex[:4]}"
    old = start(api, held(name, cfg, {"customer": "acme"}, hold_s=30))
    new = start(api, held(name, cfg, {"customer": "acme"}, hold_s=0.2))
    assert new["status"] == "running"
    cancelled = done(api, old["id"])
    assert cancelled["status"] == "cancelled" and f"superseded by {new['id']}" in cancelled["error"]
    assert done(api, new["id"])["status"] == "completed"


def test_a_rate_limit_queues_the_rest_with_an_estimated_start(api: httpx.Client) -> None:
    name = f"fc-rate-{uuid.uuid4().hex[:4]}"
    definition = held(name, {"rate_limit": {"limit": 1, "period": "2s"}}, {}, hold_s=0)
    first, second = start(api, definition), start(api, definition)
    assert first["status"] == "running"
    assert second["status"] == "queued" and second["queued_reason"].startswith("throttled: rate limit 1 per 2s")
    assert second["estimated_start"] is not None
    assert done(api, second["id"])["status"] == "completed"  # the worker's sweep admits it when the window reopens


def test_priority_orders_waiting_starts(api: httpx.Client) -> None:
    cfg = {"concurrency": {"limit": 1}}
    name = f"fc-prio-{uuid.uuid4().hex[:4]}"
    holder = start(api, held(name, cfg, {}, hold_s=1.5))
    low = start(api, held(name, cfg, {}, hold_s=0), priority=-1)
    high = start(api, held(name, cfg, {}, hold_s=0), priority=5)
    assert (low["status"], high["status"], high["priority"]) == ("queued", "queued", 5)
    results = [done(api, w["id"]) for w in (holder, low, high)]
    assert results[2]["finished_at"] <= results[1]["started_at"]


def test_overlap_buffer_one_on_manual_fires(api: httpx.Client) -> None:
    name = f"fc-overlap-{uuid.uuid4().hex[:4]}"
    template = api.post("/v1/workflows", json=held(name, {}, {}, hold_s=1.5)).json()["id"]
    r = api.post(f"/v1/workflows/{template}/triggers", json={"type": "manual", "config": {"overlap": "buffer_one"}})
    assert r.status_code == 201, r.text
    trigger = r.json()
    assert trigger["config"]["overlap"] == "buffer_one"
    fired = [api.post(f"/v1/triggers/{trigger['id']}/fire").json() for _ in range(3)]
    assert [f["status"] for f in fired] == ["started", "started", "skipped"], fired
    runs = [get(api, f["workflow_id"]) for f in fired]
    assert [w["status"] for w in runs] == ["running", "queued", "cancelled"], runs
    assert runs[2]["queued_reason"].startswith("skipped:")
    assert api.get(f"/v1/triggers/{trigger['id']}").json()["skipped"] == {"overlap": 1}
    assert [done(api, w["id"])["status"] for w in runs[:2]] == ["completed", "completed"]


def test_overlap_cancel_other(api: httpx.Client) -> None:
    name = f"fc-cancel-other-{uuid.uuid4().hex[:4]}"
    template = api.post("/v1/workflows", json=held(name, {}, {}, hold_s=30)).json()["id"]
    trigger = api.post(f"/v1/workflows/{template}/triggers", json={"type": "manual", "config": {"overlap": "cancel_other"}}).json()
    first = api.post(f"/v1/triggers/{trigger['id']}/fire").json()["workflow_id"]
    second = api.post(f"/v1/triggers/{trigger['id']}/fire").json()["workflow_id"]
    assert done(api, first)["status"] == "cancelled"
    assert get(api, second)["status"] == "running"
    api.post(f"/v1/workflows/{second}/cancel")


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"concurrency": {"key": "input..x"}}, "config.concurrency.key"),
        ({"concurrency": {"key": "state.x"}}, "config.concurrency.key"),
        ({"concurrency": {"key": "input.x", "limit": 0}}, "config.concurrency.limit"),
        ({"concurrency": {"key": "input.x", "limit": 10**12}}, "config.concurrency.limit"),
        ({"concurrency": {"strategy": "newest_wins"}}, "config.concurrency.strategy"),
        ({"rate_limit": {"limit": 5, "period": 0}}, "config.rate_limit.period"),
        ({"max_concurrent_runs": -1}, "config.max_concurrent_runs"),
    ],
)
def test_bad_flow_control_is_a_422_and_stores_nothing(api: httpx.Client, config: dict[str, Any], field: str) -> None:
    before = api.get("/v1/workflows").json()["total"]
    r = api.post("/v1/workflows", params={"start": "true"}, json=held("bad", config, {}))
    assert r.status_code == 422, r.text
    assert field in r.text
    assert api.get("/v1/workflows").json()["total"] == before


@pytest.mark.parametrize("priority", ["high", "1000", "-101"])
def test_a_bad_priority_is_a_422_and_stores_nothing(api: httpx.Client, priority: str) -> None:
    before = api.get("/v1/workflows").json()["total"]
    r = api.post("/v1/workflows", params={"start": "true", "priority": priority}, json=held("bad", {}, {}))
    assert r.status_code == 422 and "priority" in r.text
    assert api.get("/v1/workflows").json()["total"] == before


def test_a_bad_overlap_policy_is_a_422(api: httpx.Client) -> None:
    template = api.post("/v1/workflows", json=held("fc-bad-overlap", {}, {})).json()["id"]
    for config in ({"overlap": "sometimes"}, {"overlap": "cancel_other", "skip_if_running": True}):
        r = api.post(f"/v1/workflows/{template}/triggers", json={"type": "manual", "config": config})
        assert r.status_code == 422, r.text
    assert api.get(f"/v1/workflows/{template}/triggers").json()["total"] == 0


def test_queued_runs_survive_a_restart_of_the_worker_and_the_gateway(stack: Stack, plane: Plane) -> None:
    cfg = {"concurrency": {"key": "input.customer", "limit": 1}}
    name = f"fc-restart-{uuid.uuid4().hex[:4]}"
    with http(stack, plane.urls[0]) as client:
        runs = [start(client, held(name, cfg, {"customer": "acme"}, hold_s=1.0)) for _ in range(3)]
    assert [r["status"] for r in runs] == ["running", "queued", "queued"]
    for proc in [*plane.gateways, *plane.workers]:
        proc.stop(signal.SIGKILL)
    port = int(plane.urls[0].rsplit(":", 1)[1])
    plane.workers = [stack.spawn("fc-worker-2", "workers", plane.env)]
    plane.gateways = [_gateway(stack, plane.env, port), _gateway(stack, plane.env, int(plane.urls[1].rsplit(":", 1)[1]))]
    with http(stack, plane.urls[0]) as client:
        results = [wait(client, r["id"], timeout_s=120, until=FINISHED) for r in runs]
    assert [r["status"] for r in results] == ["completed"] * 3, [brief(r) for r in results]
    time.sleep(0)  # (no timing assertion: the order below is what matters)
    assert results[0]["finished_at"] <= results[1]["started_at"] and results[1]["finished_at"] <= results[2]["started_at"]


def test_every_outcome_is_counted_in_the_metrics_and_prometheus(api: httpx.Client) -> None:
    name = f"fc-count-{uuid.uuid4().hex[:4]}"
    cfg = {"concurrency": {"strategy": "cancel_newest"}}
    first = start(api, held(name, cfg, {}, hold_s=0.5))
    refused = start(api, held(name, cfg, {}, hold_s=0))
    assert refused["status"] == "cancelled"
    body = api.get("/v1/metrics/flow-control").json()
    assert body["by_workflow"][name] == {
        "admitted": 1, "queued": 0, "throttled": 0, "refused": 1, "skipped": 0, "evicted": 0, "debounced": 0
    }
    assert body["totals"]["refused"] >= 1
    text = api.get("/metrics").text
    assert samples(text)[("flow_starts_total", (("outcome", "refused"), ("workflow", name)))] == 1
    assert done(api, first["id"])["status"] == "completed"


def test_debounce_starts_once_per_key_with_every_input(api: httpx.Client) -> None:
    name = f"fc-debounce-{uuid.uuid4().hex[:4]}"
    cfg = {"debounce": {"key": "input.user", "period": "1s", "max_wait": "30s", "inputs": "all"}}
    answers = [start(api, held(name, cfg, {"user": "ann", "n": i}, hold_s=0)) for i in range(3)]
    other = start(api, held(name, cfg, {"user": "bob", "n": 9}, hold_s=0))
    assert len({a["id"] for a in answers}) == 1 and other["id"] != answers[0]["id"]
    assert answers[0]["status"] == "queued" and answers[0]["queued_reason"].startswith("debounced:")
    assert answers[0]["estimated_start"] is not None
    result = done(api, answers[0]["id"])
    assert result["status"] == "completed", brief(result)
    assert result["steps"][0]["output"] == [{"user": "ann", "n": i} for i in range(3)]
    assert done(api, other["id"])["steps"][0]["output"] == [{"user": "bob", "n": 9}]
    later = start(api, held(name, cfg, {"user": "ann", "n": 3}, hold_s=0))
    assert later["id"] != answers[0]["id"]  # the next window
    assert done(api, later["id"])["steps"][0]["output"] == [{"user": "ann", "n": 3}]


def test_debounced_event_fires(api: httpx.Client) -> None:
    name = f"fc-debounce-ev-{uuid.uuid4().hex[:4]}"
    event_type = f"fc.{uuid.uuid4().hex[:6]}"
    template = api.post("/v1/workflows", json=held(name, {"debounce": {"period": "1s"}}, {}, hold_s=0)).json()["id"]
    r = api.post(f"/v1/workflows/{template}/triggers", json={"type": "event", "config": {"event_type": event_type}})
    assert r.status_code == 201, r.text
    fired = [api.post("/v1/events", json={"type": event_type, "payload": {"n": i}, "id": f"e{i}-{name}"}).json()
             for i in range(3)]
    runs = {f["fires"][0]["workflow_id"] for f in fired}
    assert len(runs) == 1
    again = api.post("/v1/events", json={"type": event_type, "payload": {"n": 0}, "id": f"e0-{name}"}).json()
    assert again["fires"][0]["workflow_id"] in runs or again.get("duplicate") is True
    result = done(api, runs.pop())
    assert result["status"] == "completed" and result["steps"][0]["output"]["n"] == 2, brief(result)
