"""Approval steps through the API (ADR 012): the in-process gateway on a real Redis. Who may decide
(the ``approve`` scope; read and trigger tokens get 403 and nothing changes), what is recorded, and
bad decisions (unknown step 404, not waiting or twice 409, oversize comment 422)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.integration.test_gateway_scopes import (
    ADMIN,
    FIRE,
    READ,
    WRITE,
    api_token,
    bearer,
    client,
    serve,
    settings_for,
)

APPROVER = "approver-token-0123456789abcdef0"
STEP = {"id": "build", "image": "agentainer-flow/python:3.11", "command": ["python3", "-c", "print(1)"]}


@pytest.fixture
def prefix() -> str:
    return f"ap{uuid.uuid4().hex[:8]}"


def _settings(redis_url: str, prefix: str) -> Any:
    s = settings_for(redis_url, prefix)
    return s.model_copy(update={"api_tokens": [*s.api_tokens, *settings_for(redis_url, prefix, api_tokens=[
        api_token("release-managers", APPROVER, ["approve"])]).api_tokens]})


async def _waiting(api: httpx.AsyncClient, **opts: Any) -> str:
    definition = {"name": "release", "steps": [
        {"id": "ok", "type": "approval", "message": "ship v2?", **opts},
        {**STEP, "depends_on": ["ok"]},
    ]}
    r = await api.post("/v1/workflows", params={"start": "true"}, json=definition, headers=bearer(ADMIN))
    assert r.status_code == 201, r.text
    wf = str(r.json()["id"])
    body = (await api.get(f"/v1/workflows/{wf}", headers=bearer(ADMIN))).json()
    ok = next(s for s in body["steps"] if s["id"] == "ok")
    assert ok["status"] == "running" and ok["wait"]["kind"] == "approval" and ok["wait"]["message"] == "ship v2?"
    return wf


async def _step(api: httpx.AsyncClient, wf: str, step: str) -> dict[str, Any]:
    body = (await api.get(f"/v1/workflows/{wf}", headers=bearer(ADMIN))).json()
    return dict(next(s for s in body["steps"] if s["id"] == step))


async def test_an_approver_token_approves_and_who_when_and_the_comment_are_recorded(
    redis_url: str, conn: Redis, prefix: str
) -> None:
    async with serve(_settings(redis_url, prefix), conn) as app, client(app) as api:
        wf = await _waiting(api)
        r = await api.post(f"/v1/workflows/{wf}/steps/ok/approve", json={"comment": "LGTM"}, headers=bearer(APPROVER))
        assert r.status_code == 200, r.text
        answer = r.json()["step"]  # the step as GET shows it: ISO times, and never the wait's token
        assert answer["status"] == "succeeded" and answer["finished_at"].endswith("Z")
        assert "token" not in answer["wait"] and "token" not in r.json()["workflow"]["steps"][0]["wait"]
        out = (await _step(api, wf, "ok"))["output"]
        assert out["approved"] is True and out["by"] == "token:release-managers" and out["comment"] == "LGTM"
        assert out["at"] > 0
        build = await _step(api, wf, "build")
        assert build["status"] == "running" and build["tasks"][0]["status"] == "queued"  # the next step was dispatched
        again = await api.post(f"/v1/workflows/{wf}/steps/ok/approve", headers=bearer(APPROVER))
        assert again.status_code == 409, again.text


async def test_a_write_token_rejects_and_the_rejection_fails_the_step(redis_url: str, conn: Redis, prefix: str) -> None:
    async with serve(_settings(redis_url, prefix), conn) as app, client(app) as api:
        wf = await _waiting(api)
        r = await api.post(f"/v1/workflows/{wf}/steps/ok/reject", json={"comment": "not today"}, headers=bearer(WRITE))
        assert r.status_code == 200, r.text
        ok = await _step(api, wf, "ok")
        assert ok["status"] == "failed" and ok["error"] == "rejected by token:writer: not today"
        body = (await api.get(f"/v1/workflows/{wf}", headers=bearer(ADMIN))).json()
        assert body["status"] == "failed"
        assert (await api.post(f"/v1/workflows/{wf}/steps/ok/approve", headers=bearer(WRITE))).status_code == 409


@pytest.mark.parametrize("token", [READ, FIRE])
async def test_read_and_trigger_tokens_may_not_decide_and_nothing_changes(
    redis_url: str, conn: Redis, prefix: str, token: str
) -> None:
    async with serve(_settings(redis_url, prefix), conn) as app, client(app) as api:
        wf = await _waiting(api)
        version = await conn.hget(f"{prefix}:wf:{wf}", "version")
        for verb in ("approve", "reject"):
            r = await api.post(f"/v1/workflows/{wf}/steps/ok/{verb}", json={"comment": "x"}, headers=bearer(token))
            assert r.status_code == 403, r.text
        assert await conn.hget(f"{prefix}:wf:{wf}", "version") == version
        assert (await _step(api, wf, "ok"))["status"] == "running"


async def test_bad_decisions_are_4xx_and_change_nothing(redis_url: str, conn: Redis, prefix: str) -> None:
    async with serve(_settings(redis_url, prefix), conn) as app, client(app) as api:
        wf = await _waiting(api)
        version = await conn.hget(f"{prefix}:wf:{wf}", "version")
        admin = bearer(ADMIN)
        cases = [
            (f"/v1/workflows/{wf}/steps/nope/approve", {"comment": "x"}, 404),  # unknown step
            (f"/v1/workflows/{wf}/steps/build/approve", None, 409),  # not an approval step
            (f"/v1/workflows/{wf}/steps/ok/approve", {"comment": "x" * 2001}, 422),  # oversize comment
            (f"/v1/workflows/{wf}/steps/ok/approve", {"comment": 5}, 422),
            (f"/v1/workflows/{wf}/steps/ok/approve", {"comment": "x", "by": "someone-else"}, 422),  # no spoofing
            (f"/v1/workflows/{wf}/steps/ok/approve", [1], 422),
            (f"/v1/workflows/{wf}/steps/..%2Fetc/approve", None, 404),  # no route: never a key
            (f"/v1/workflows/{wf}/steps/a%20b/approve", None, 422),
            ("/v1/workflows/wf-nope/steps/ok/approve", None, 404),
        ]
        for path, body, status in cases:
            r = await api.post(path, json=body, headers=admin)
            assert r.status_code == status, (path, body, r.status_code, r.text)
        r = await api.post(f"/v1/workflows/{wf}/steps/ok/approve", content=b"{not json", headers=admin)
        assert r.status_code == 400, r.text
        assert await conn.hget(f"{prefix}:wf:{wf}", "version") == version
        assert (await _step(api, wf, "ok"))["status"] == "running"


async def test_an_approval_that_has_not_begun_or_whose_workflow_was_cancelled_is_409(
    redis_url: str, conn: Redis, prefix: str
) -> None:
    async with serve(_settings(redis_url, prefix), conn) as app, client(app) as api:
        admin = bearer(ADMIN)
        r = await api.post("/v1/workflows", params={"start": "false"}, headers=admin,
                           json={"name": "later", "steps": [{"id": "ok", "type": "approval"}]})
        wf = r.json()["id"]
        assert (await api.post(f"/v1/workflows/{wf}/steps/ok/approve", headers=admin)).status_code == 409
        wf2 = await _waiting(api)
        assert (await api.post(f"/v1/workflows/{wf2}/cancel", headers=admin)).status_code == 202
        assert (await api.post(f"/v1/workflows/{wf2}/steps/ok/approve", headers=admin)).status_code == 409
        assert (await _step(api, wf2, "ok"))["status"] == "cancelled"


async def test_a_workflow_step_naming_a_missing_template_is_refused_and_nothing_is_stored(
    redis_url: str, conn: Redis, prefix: str
) -> None:
    async with serve(_settings(redis_url, prefix), conn) as app, client(app) as api:
        before = await conn.zcard(f"{prefix}:wfs")
        r = await api.post("/v1/workflows", params={"start": "true"}, headers=bearer(ADMIN), json={
            "name": "parent", "steps": [{"id": "kid", "type": "workflow", "workflow": "wf-nope-123"}]})
        assert r.status_code == 422, r.text
        assert "steps[0].workflow" in r.text and "not found" in r.text
        assert await conn.zcard(f"{prefix}:wfs") == before
