"""Two submission rules, through the gateway in-process on a real Redis (docs/workflows.md, docs/triggers.md):

- a workflow with no steps can be created (to hold state) but not started, nor given triggers
  (422 on ``steps``), instead of a run reported ``completed`` that did nothing;
- in an event filter, what looks like an operator must be one: a typo'd operator (``"=<"``) is a 422
  naming it, instead of a field name no payload has and a trigger that silently never fires.

Nothing is created by a refused request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.gateway_client import gateway_api

STEP = {"image": "agentainer-flow/python:3.11", "command": ["python3", "-c", "print(1)"]}


@pytest.fixture
async def api(redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_api(redis_url, max_body_bytes=64 * 1024) as client:
        yield client


async def total(api: httpx.AsyncClient) -> int:
    return int((await api.get("/v1/workflows")).json()["total"])


@pytest.mark.parametrize(
    ("content", "ctype"),
    [
        ('{"name": "empty", "steps": []}', "application/json"),
        ('{"name": "empty"}', "application/json"),
        ("name: empty\nsteps: []\n", "application/yaml"),
    ],
)
async def test_a_workflow_without_steps_is_refused_at_start(api: httpx.AsyncClient, content: str, ctype: str) -> None:
    before = await total(api)
    r = await api.post("/v1/workflows", params={"start": "true"}, content=content, headers={"content-type": ctype})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid_input" and body["field"] == "steps"
    assert "at least one step to run" in body["message"]
    assert await total(api) == before


async def test_a_workflow_without_steps_can_hold_state_but_never_runs(api: httpx.AsyncClient) -> None:
    before = await total(api)
    r = await api.post("/v1/workflows", json={"name": "state-only"})  # the client API's create_workflow(name=...)
    assert r.status_code == 201, r.text
    wf = r.json()["id"]
    assert (await api.put(f"/v1/workflows/{wf}/state/k", json={"value": 1})).status_code in (200, 204)
    for method, url, body in [
        ("POST", f"/v1/workflows/{wf}/start", None),
        ("POST", f"/v1/workflows/{wf}/trigger", {}),
        ("POST", f"/v1/workflows/{wf}/triggers", {"type": "manual"}),
    ]:
        r = await api.request(method, url, json=body)
        assert r.status_code == 422, (url, r.text)
        assert r.json()["field"] == "steps" and "at least one step to run" in r.json()["message"]
    assert (await api.get(f"/v1/workflows/{wf}")).json()["status"] == "pending"
    assert await total(api) == before + 1  # no run was made from it


async def template(api: httpx.AsyncClient) -> str:
    r = await api.post("/v1/workflows", json={"name": "on-event", "steps": [{"id": "a", **STEP}]})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def event_trigger(flt: dict[str, Any]) -> dict[str, Any]:
    return {"type": "event", "config": {"event_type": "order_paid", "event_filter": flt}}


@pytest.mark.parametrize(
    ("flt", "field_part", "needle"),
    [
        ({"amount": {"=<": 100}}, "amount.=<", "did you mean '<='"),
        ({"amount": {"=>": 100}}, "amount.=>", "did you mean '>='"),
        ({"amount": {"=": 100}}, "amount.=", "did you mean '=='"),
        ({"amount": {"<>": 100}}, "amount.<>", "did you mean '!='"),
        ({"order": {"total": {"=<": 5}}}, "order.total.=<", "not an operator"),
        ({"$or": [{"amount": {"=<": 1}}]}, "$or[0].amount.=<", "not an operator"),
        ({"amount.=<": 100}, "amount.=<", "not an operator"),
        ({">": 100}, ">", "is an operator, not a path"),
        ({"amount": {">": 1, "curency": "EUR"}}, "amount", "mixes operators (>) with field names (curency)"),
        ({"rule": {"in": [1], "name": "x"}}, "rule", "dotted path, 'rule.in'"),
    ],
)
async def test_an_operator_looking_key_that_is_not_an_operator_is_422(
    api: httpx.AsyncClient, flt: dict[str, Any], field_part: str, needle: str
) -> None:
    wf = await template(api)
    r = await api.post(f"/v1/workflows/{wf}/triggers", json=event_trigger(flt))
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid_input"
    assert f"event_filter.{field_part}" in body["message"] and needle in body["message"], body["message"]
    assert (await api.get(f"/v1/workflows/{wf}/triggers")).json()["total"] == 0


async def test_valid_filters_still_fire(api: httpx.AsyncClient) -> None:
    wf = await template(api)
    flt = {"amount": {"<=": 100, ">": 0}, "rule.in": 3, "order": {"currency": "EUR"}}
    r = await api.post(f"/v1/workflows/{wf}/triggers", json=event_trigger(flt))
    assert r.status_code == 201, r.text
    trigger_id = r.json()["id"]
    payload = {"amount": 40, "rule": {"in": 3}, "order": {"currency": "EUR"}}
    r = await api.post("/v1/events", json={"type": "order_paid", "payload": payload})
    assert r.status_code == 202, r.text
    assert [f["trigger_id"] for f in r.json()["fires"] if f["status"] == "started"] == [trigger_id]
