"""Triggers through the gateway in-process on a real Redis: CRUD, manual fires, events, webhooks.

No worker runs here: a fired workflow is created, started and its first task queued, which is all
intake does. Every bad input is answered 4xx with the field named, and starts nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from flowcore.signatures import SignaturePreset, WebhookAuth, sign
from tests.gateway_client import gateway_api

AUTH = {"Authorization": "Bearer default-token"}
STEP = {"image": "agentainer-flow/python:3.11", "command": ["python3", "-c", "print(1)"]}
TEMPLATE = {"name": "on-upload", "input": {"mode": "full"}, "steps": [{"id": "a", **STEP}]}


@pytest.fixture
async def api(redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_api(redis_url, max_body_bytes=512 * 1024) as client:
        yield client


async def template(api: httpx.AsyncClient) -> str:
    r = await api.post("/v1/workflows", json=TEMPLATE)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def add_trigger(api: httpx.AsyncClient, wf_id: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await api.post(f"/v1/workflows/{wf_id}/triggers", json=body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def workflow_count(api: httpx.AsyncClient) -> int:
    return int((await api.get("/v1/workflows")).json()["total"])


async def test_schedule_trigger_crud(api: httpx.AsyncClient) -> None:
    wf = await template(api)
    tr = await add_trigger(api, wf, {"type": "schedule", "cron_expression": "0 9 * * *", "timezone": "Europe/Paris",
                                     "input_data": {"scheduled": True}})
    assert tr["next_run"] and tr["enabled"] and tr["run_count"] == 0 and tr["timezone"] == "Europe/Paris"
    nxt = tr["next_run"]
    assert nxt.endswith(("07:00:00+00:00", "08:00:00+00:00"))  # 09:00 Paris in summer or winter time
    listed = (await api.get(f"/v1/workflows/{wf}/triggers")).json()
    assert [t["id"] for t in listed["items"]] == [tr["id"]]
    assert (await api.get("/v1/triggers")).json()["total"] == 1
    off = (await api.post(f"/v1/triggers/{tr['id']}/disable")).json()
    assert off["enabled"] is False and off["next_run"] is None
    on = (await api.post(f"/v1/triggers/{tr['id']}/enable")).json()
    assert on["enabled"] is True and on["next_run"] == nxt
    assert (await api.delete(f"/v1/triggers/{tr['id']}")).status_code == 204
    assert (await api.get(f"/v1/triggers/{tr['id']}")).status_code == 404


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"type": "schedule", "cron_expression": "61 * * * *"}, "cron_expression", 422),
        ({"type": "schedule", "cron_expression": "@daily", "timezone": "Mars/Base"}, "timezone", 422),
        ({"type": "schedule", "cron_expression": "0 0 30 2 *"}, "cron_expression", 422),
        ({"type": "schedule"}, "cron_expression", 422),
        ({"type": "event", "config": {"event_type": "x", "event_filter": {"a": {"matches": "("}}}}, "config.event_filter", 422),
        ({"type": "nope"}, "type", 422),
        ({"type": "manual", "extra": 1}, "extra", 422),
    ],
)
async def test_bad_trigger_specs_are_refused_and_change_nothing(
    api: httpx.AsyncClient, body: dict[str, Any], field: str, status: int
) -> None:
    wf = await template(api)
    r = await api.post(f"/v1/workflows/{wf}/triggers", json=body)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field or field in r.json()["message"]
    assert (await api.get("/v1/triggers")).json()["total"] == 0


async def test_trigger_on_unknown_workflow_and_unknown_trigger(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/workflows/wf-nope/triggers", json={"type": "manual"})
    assert r.status_code == 404 and "wf-nope" in r.json()["message"]
    for method, path in [("GET", "/v1/triggers/tr-x"), ("DELETE", "/v1/triggers/tr-x"),
                         ("POST", "/v1/triggers/tr-x/enable"), ("POST", "/v1/triggers/tr-x/fire")]:
        r = await api.request(method, path)
        assert r.status_code == 404 and r.json()["field"] == "trigger_id", (method, path, r.text)
    r = await api.post("/v1/workflows/wf-nope/trigger")
    assert r.status_code == 404


async def test_manual_fire_creates_a_started_workflow_with_merged_input(api: httpx.AsyncClient) -> None:
    wf = await template(api)
    r = await api.post(f"/v1/workflows/{wf}/trigger", json={"input_data": {"extra": 1}})
    assert r.status_code == 201, r.text
    new_id = r.json()["workflow_id"]
    assert new_id != wf
    got = (await api.get(f"/v1/workflows/{new_id}")).json()
    assert got["status"] == "running" and got["input"] == {"mode": "full", "extra": 1}
    assert got["origin"]["kind"] == "manual" and got["origin"]["template_id"] == wf
    # The template itself is untouched.
    assert (await api.get(f"/v1/workflows/{wf}")).json()["status"] == "pending"


async def test_manual_fire_idempotency_key(api: httpx.AsyncClient) -> None:
    wf = await template(api)
    first = await api.post(f"/v1/workflows/{wf}/trigger", headers={"Idempotency-Key": "k-1"})
    again = await api.post(f"/v1/workflows/{wf}/trigger", headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["duplicate"] is True and again.json()["workflow_id"] == first.json()["workflow_id"]
    assert await workflow_count(api) == 2
    bad = await api.post(f"/v1/workflows/{wf}/trigger", headers={"Idempotency-Key": "has space"})
    assert bad.status_code == 422 and bad.json()["field"] == "Idempotency-Key"
    bad = await api.post(f"/v1/workflows/{wf}/trigger", json={"input_data": 1, "oops": 2})
    assert bad.status_code == 422 and bad.json()["field"] == "oops"
    assert await workflow_count(api) == 2


async def test_fire_a_disabled_trigger_is_a_conflict(api: httpx.AsyncClient) -> None:
    wf = await template(api)
    tr = await add_trigger(api, wf, {"type": "manual", "enabled": False})
    r = await api.post(f"/v1/triggers/{tr['id']}/fire")
    assert r.status_code == 409 and "disabled" in r.json()["message"]
    await api.post(f"/v1/triggers/{tr['id']}/enable")
    r = await api.post(f"/v1/triggers/{tr['id']}/fire")
    assert r.status_code == 201
    got = (await api.get(f"/v1/triggers/{tr['id']}")).json()
    assert got["run_count"] == 1 and got["last_workflow_id"] == r.json()["workflow_id"] and got["last_run"]
    runs = (await api.get(f"/v1/triggers/{tr['id']}/runs")).json()["items"]
    assert [x["workflow_id"] for x in runs] == [r.json()["workflow_id"]] and runs[0]["status"] == "running"


async def test_events_fire_matching_triggers_once_per_id(api: httpx.AsyncClient) -> None:
    wf = await template(api)
    match = await add_trigger(api, wf, {"type": "event", "config": {
        "event_type": "data_uploaded", "event_filter": {"bucket": "input-data", "object.size": {">": 100}}}})
    nested = await add_trigger(api, wf, {"type": "event", "config": {
        "event_type": "data_uploaded", "event_filter": {"object": {"meta": {"owner": "ann"}}}}})
    other_type = await add_trigger(api, wf, {"type": "event", "config": {"event_type": "other"}})
    disabled = await add_trigger(api, wf, {"type": "event", "enabled": False, "config": {"event_type": "data_uploaded"}})
    event = {"type": "data_uploaded", "id": "evt-1",
             "payload": {"bucket": "input-data", "object": {"size": 512, "meta": {"owner": "bob"}}}}
    r = await api.post("/v1/events", json=event)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["matched"] == 1 and body["started"] == 1 and body["duplicate"] is False
    assert body["fires"][0]["trigger_id"] == match["id"]
    new_id = body["fires"][0]["workflow_id"]
    got = (await api.get(f"/v1/workflows/{new_id}")).json()
    assert got["input"]["bucket"] == "input-data" and got["input"]["mode"] == "full"
    assert got["origin"] == {**got["origin"], "kind": "event", "trigger_id": match["id"], "event_id": "evt-1"}
    again = (await api.post("/v1/events", json=event)).json()
    assert again["duplicate"] is True and again["started"] == 0
    assert again["fires"][0]["workflow_id"] == new_id
    # A nested filter matches a nested payload; the others never fire.
    ann = {"type": "data_uploaded", "payload": {"bucket": "b", "object": {"size": 1, "meta": {"owner": "ann"}}}}
    body = (await api.post("/v1/events", json=ann)).json()
    assert [f["trigger_id"] for f in body["fires"]] == [nested["id"]]
    for t in (other_type, disabled):
        assert (await api.get(f"/v1/triggers/{t['id']}")).json()["run_count"] == 0
    assert await workflow_count(api) == 3  # the template and two fires


async def test_event_bad_input_and_id_reuse_for_another_type(api: httpx.AsyncClient) -> None:
    for body, field in [({"payload": {}}, "type"), ({"type": "bad type"}, "type"), ({"type": "a", "id": ""}, "id"),
                        ({"type": "a", "nope": 1}, "nope")]:
        r = await api.post("/v1/events", json=body)
        assert r.status_code == 422 and r.json()["field"] == field, (body, r.text)
    r = await api.post("/v1/events", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert (await api.post("/v1/events", json={"type": "a", "id": "same"})).status_code == 202
    r = await api.post("/v1/events", json={"type": "b", "id": "same"})
    assert r.status_code == 409 and r.json()["field"] == "id"


async def test_concurrent_duplicates_of_one_event_start_one_workflow(api: httpx.AsyncClient) -> None:
    wf = await template(api)
    await add_trigger(api, wf, {"type": "event", "config": {"event_type": "burst"}})
    answers = await asyncio.gather(*(api.post("/v1/events", json={"type": "burst", "id": "e-42"}) for _ in range(20)))
    assert all(a.status_code == 202 for a in answers)
    assert sum(a.json()["started"] for a in answers) == 1
    assert len({a.json()["fires"][0]["workflow_id"] for a in answers}) == 1
    assert await workflow_count(api) == 2


async def test_skip_if_running_counts_skipped_fires(api: httpx.AsyncClient, redis_url: str) -> None:
    wf = await template(api)
    tr = await add_trigger(api, wf, {"type": "event", "config": {"event_type": "tick", "skip_if_running": True}})
    first = (await api.post("/v1/events", json={"type": "tick"})).json()
    assert first["started"] == 1
    second = (await api.post("/v1/events", json={"type": "tick"})).json()
    assert second["started"] == 0 and second["fires"][0]["status"] == "skipped"
    assert second["fires"][0]["reason"] == "running"
    got = (await api.get(f"/v1/triggers/{tr['id']}")).json()
    assert got["skipped"] == {"running": 1} and got["skipped_count"] == 1 and got["run_count"] == 1
    # Once the run is over (cancelled here), the next fire starts again.
    assert (await api.post(f"/v1/workflows/{first['fires'][0]['workflow_id']}/cancel")).status_code == 202
    third = (await api.post("/v1/events", json={"type": "tick"})).json()
    assert third["started"] == 1


def webhook_headers(auth: WebhookAuth, body: bytes, **extra: str) -> dict[str, str]:
    return {"content-type": "application/json", **sign(auth, body, timestamp=int(time.time())), **extra}


@pytest.mark.parametrize("preset", ["github", "stripe", "generic"])
async def test_webhooks_good_bad_missing_and_replayed(api: httpx.AsyncClient, preset: str) -> None:
    wf = await template(api)
    tr = await add_trigger(api, wf, {"type": "webhook", "input_data": {"source": preset},
                                     "config": {"signature": preset, "secret": "s3cret-value"}})
    assert tr["config"]["secret"] == "s3cret-value"  # shown once, at creation
    assert (await api.get(f"/v1/triggers/{tr['id']}")).json()["config"]["secret"] == "********"
    url = tr["webhook_url"]
    auth = WebhookAuth(SignaturePreset(preset), "s3cret-value")
    body = json.dumps({"id": "evt_77", "action": "opened"}).encode()
    delivery = {"github": {"X-GitHub-Delivery": "d-77"}, "generic": {"X-Flow-Delivery": "d-77"}, "stripe": {}}[preset]
    hook = httpx.AsyncClient(transport=api._transport, base_url="http://gw")  # no bearer token
    async with hook:
        bad = await hook.post(url, content=body, headers=webhook_headers(WebhookAuth(SignaturePreset(preset), "wrong-secret"), body))
        assert bad.status_code == 401 and bad.json()["field"] == "signature"
        missing = await hook.post(url, content=body, headers={"content-type": "application/json"})
        assert missing.status_code == 401 and "missing" in missing.json()["message"]
        ok = await hook.post(url, content=body, headers=webhook_headers(auth, body, **delivery))
        assert ok.status_code == 202 and ok.json()["status"] == "started", ok.text
        replay = await hook.post(url, content=body, headers=webhook_headers(auth, body, **delivery))
        assert replay.status_code == 202 and replay.json()["duplicate"] is True
        assert replay.json()["workflow_id"] == ok.json()["workflow_id"]
        got = (await api.get(f"/v1/workflows/{ok.json()['workflow_id']}")).json()
        assert got["input"] == {"mode": "full", "source": preset, "id": "evt_77", "action": "opened"}
        assert got["origin"]["kind"] == "webhook" and got["origin"]["event_id"] in ("d-77", "evt_77")
    assert await workflow_count(api) == 2


async def test_stripe_expired_signature_and_oversized_body(api: httpx.AsyncClient) -> None:
    wf = await template(api)
    tr = await add_trigger(api, wf, {"type": "webhook", "config": {"signature": "stripe", "secret": "whsec_abcdefgh"}})
    auth = WebhookAuth(SignaturePreset.STRIPE, "whsec_abcdefgh")
    body = b'{"id": "evt_old"}'
    hook = httpx.AsyncClient(transport=api._transport, base_url="http://gw")
    async with hook:
        old = sign(auth, body, timestamp=int(time.time()) - 3600)
        r = await hook.post(tr["webhook_url"], content=body, headers=old)
        assert r.status_code == 401 and "tolerance" in r.json()["message"]
        big = b'{"pad": "' + b"x" * 600_000 + b'"}'
        r = await hook.post(tr["webhook_url"], content=big, headers=sign(auth, big, timestamp=int(time.time())))
        assert r.status_code == 413
        r = await hook.post("/v1/hooks/tr-unknown", content=body)
        assert r.status_code == 404
    assert await workflow_count(api) == 1


async def test_deleting_a_template_deletes_its_triggers(api: httpx.AsyncClient) -> None:
    wf = await template(api)
    tr = await add_trigger(api, wf, {"type": "schedule", "cron_expression": "@hourly"})
    assert (await api.delete(f"/v1/workflows/{wf}")).status_code == 204
    assert (await api.get(f"/v1/triggers/{tr['id']}")).status_code == 404
    assert (await api.get("/v1/triggers")).json()["total"] == 0


async def test_a_template_too_big_for_the_lua_fire_takes_the_watch_path(api: httpx.AsyncClient) -> None:
    # 2,100 independent steps: their records are one HSET of 4,200 arguments, past Lua's unpack() bound.
    steps = [{"id": f"s{i}", **STEP} for i in range(2100)]
    r = await api.post("/v1/workflows", json={"name": "wide", "steps": steps, "config": {"max_parallel": 5}})
    assert r.status_code == 201, r.text
    wf = r.json()["id"]
    first = await api.post(f"/v1/workflows/{wf}/trigger", headers={"Idempotency-Key": "wide-1"})
    again = await api.post(f"/v1/workflows/{wf}/trigger", headers={"Idempotency-Key": "wide-1"})
    assert first.status_code == 201 and again.json()["workflow_id"] == first.json()["workflow_id"]
    got = (await api.get(f"/v1/workflows/{first.json()['workflow_id']}")).json()
    assert got["status"] == "running" and len(got["steps"]) == 2100
    assert sum(len(s.get("tasks", [])) for s in got["steps"]) == 5, got["steps"][:7]  # max_parallel honoured
