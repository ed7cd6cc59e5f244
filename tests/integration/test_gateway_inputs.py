"""Inputs that must not stall or crash the gateway (issue 13), performed against the in-process gateway.

Each attack answers a 4xx naming the problem, changes nothing in Redis, and never a 500. How long
each takes is printed (``-s``) rather than asserted: the numbers are in docs/security.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from flowcore.signatures import SignaturePreset, WebhookAuth, sign
from tests.gateway_client import gateway_api

STEP = {"image": "agentainer-flow/python:3.11", "command": ["python3", "-c", "print(1)"]}
YAML = {"content-type": "application/yaml"}
# The "billion laughs": ~400 bytes of aliases of aliases that describe 9^9 strings.
BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.fixture
async def api(redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    # The pool URL points nowhere: a forwarded request that passes the checks answers 503.
    async with gateway_api(redis_url, max_body_bytes=512 * 1024, pool={"url": "http://127.0.0.1:9"}) as client:
        yield client


async def timed(request: Any) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await request
    return response, (time.perf_counter() - started) * 1000


async def keys(api: httpx.AsyncClient) -> list[bytes]:
    redis: Redis = api._transport.app.state.redis  # type: ignore[attr-defined]
    return sorted(await redis.keys("*"))


async def test_a_yaml_alias_bomb_is_refused_at_once(api: httpx.AsyncClient) -> None:
    # Under ``input`` (any JSON value): without the bound, storing it wrote 387 million strings.
    body = "name: bomb\nsteps: [{id: a, image: x, command: [x]}]\ninput:\n" + "".join(
        f"  {line}\n" for line in BOMB.splitlines()
    )
    r, ms = await timed(api.post("/v1/workflows", content=body, headers=YAML))
    print(f"\nalias bomb ({len(body)} bytes): {r.status_code} in {ms:.1f} ms")
    assert r.status_code == 413 and r.json()["error"] == "document_too_complex", r.text
    assert "aliases expanded" in r.json()["message"] and r.json()["field"] == "body"
    assert await keys(api) == []


@pytest.mark.parametrize("levels", [1_000, 5_000, 200_000])
async def test_documents_nested_deep_are_refused(api: httpx.AsyncClient, levels: int) -> None:
    deep_json = '{"name": "x", "steps": [], "input": ' + "[" * levels + "]" * levels + "}"
    deep_yaml = "name: x\nsteps: []\ninput: " + "[" * levels + "]" * levels
    for url, body, headers in [
        ("/v1/workflows", deep_json, {"content-type": "application/json"}),
        ("/v1/workflows", deep_yaml, YAML),
        ("/v1/events", '{"type": "t", "payload": ' + "[" * levels + "]" * levels + "}", {}),
        ("/v1/workflows/wf-none/state/k", '{"value": ' + "[" * levels + "]" * levels + "}", {}),
    ]:
        method = "PUT" if "/state/" in url else "POST"
        r, ms = await timed(api.request(method, url, content=body, headers=headers))
        print(f"\n{method} {url} nested {levels} ({len(body)} bytes, {headers.get('content-type', 'json')}): "
              f"{r.status_code} in {ms:.1f} ms")
        assert r.status_code == 413, r.text
        assert "deeper than 64" in r.json()["message"]
    assert await keys(api) == []


async def test_a_deep_webhook_body_is_refused_and_starts_nothing(api: httpx.AsyncClient) -> None:
    wf = (await api.post("/v1/workflows", json={"name": "t", "steps": [{"id": "a", **STEP}]})).json()["id"]
    tr = (await api.post(f"/v1/workflows/{wf}/triggers",
                         json={"type": "webhook", "config": {"signature": "generic", "secret": "s3cret-value"}})).json()
    body = ("[" * 5000 + "]" * 5000).encode()
    headers = {"content-type": "application/json", **sign(WebhookAuth(SignaturePreset.GENERIC, "s3cret-value"), body)}
    r = await api.post(tr["webhook_url"], content=body, headers=headers)
    assert r.status_code == 413 and "deeper than" in r.json()["message"], r.text
    big = b'{"pad": "' + b"x" * 600_000 + b'"}'
    r = await api.post(tr["webhook_url"], content=_chunks(big), headers=headers)  # chunked: no content-length
    assert r.status_code == 413 and r.json()["error"] == "body_too_large", r.text
    assert (await api.get("/v1/workflows")).json()["total"] == 1


async def test_a_plain_large_yaml_definition_is_quick(api: httpx.AsyncClient) -> None:
    steps = "".join(
        f"  - id: s{i}\n    image: agentainer-flow/python:3.11\n    command: [python3, -c, 'print({i})']\n"
        f"    env: {{A: '1', B: '2'}}\n    depends_on: [s{i - 1}]\n" if i else
        "  - id: s0\n    image: agentainer-flow/python:3.11\n    command: [python3]\n"
        for i in range(1900)
    )
    body = "name: big\nsteps:\n" + steps
    r, ms = await timed(api.post("/v1/workflows", content=body, headers=YAML))
    print(f"\nplain YAML of {len(body) // 1024} KiB, 1900 steps: {r.status_code} in {ms:.0f} ms")
    assert r.status_code == 201, r.text[:300]


async def test_a_catastrophic_event_filter_answers_at_once(api: httpx.AsyncClient) -> None:
    wf = (await api.post("/v1/workflows", json={"name": "t", "steps": [{"id": "a", **STEP}]})).json()["id"]
    spec = {"type": "event", "config": {"event_type": "named", "event_filter": {"name": {"matches": "(a+)+$"}}}}
    assert (await api.post(f"/v1/workflows/{wf}/triggers", json=spec)).status_code == 201
    r, ms = await timed(api.post("/v1/events", json={"type": "named", "payload": {"name": "a" * 27 + "b"}}))
    print(f"\n(a+)+$ filter on 'a'*27+'b': {r.status_code} in {ms:.1f} ms")
    assert r.status_code == 202 and r.json()["matched"] == 0
    r, ms = await timed(api.post("/v1/events", json={"type": "named", "payload": {"name": "a" * 100_000 + "b"}}))
    print(f"(a+)+$ filter on 'a'*100000+'b': {r.status_code} in {ms:.1f} ms")
    assert r.status_code == 202 and r.json()["matched"] == 0


@pytest.mark.parametrize("pattern", [r"(a)\1", r"a(?=b)", "x" * 1001])
async def test_patterns_re2_cannot_run_are_refused_at_submission(api: httpx.AsyncClient, pattern: str) -> None:
    branch = {"id": "b", "type": "branch", "condition": {"field": "input.x", "op": "matches", "value": pattern},
              "then": ["c"]}
    r = await api.post("/v1/workflows", json={"name": "x", "steps": [branch, {"id": "c", **STEP}]})
    assert r.status_code == 422 and r.json()["field"].startswith("steps[0].condition"), r.text
    wf = (await api.post("/v1/workflows", json={"name": "t", "steps": [{"id": "a", **STEP}]})).json()["id"]
    spec = {"type": "event", "config": {"event_type": "e", "event_filter": {"name": {"matches": pattern}}}}
    r = await api.post(f"/v1/workflows/{wf}/triggers", json=spec)
    assert r.status_code == 422 and "event_filter.name" in r.json()["message"], r.text


@pytest.mark.parametrize(
    ("method", "url"),
    [("GET", "/v1/workflows/a:b"), ("POST", "/v1/workflows/a:b/start"), ("GET", "/v1/workflows/a:b/logs"),
     ("GET", "/v1/workflows/wf.1/state"), ("PUT", "/v1/workflows/a:b/state/k"), ("PUT", "/v1/workflows/wf-1/state/a:b"),
     ("POST", "/v1/workflows/wf-1/state/k%3Ax/increment"), ("POST", "/v1/workflows/a:b/triggers"),
     ("POST", "/v1/triggers/tr:1/fire"), ("DELETE", "/v1/triggers/tr:1"), ("POST", "/v1/hooks/tr:1"),
     ("GET", "/v1/workflows/a:b/events"), ("GET", "/v1/workflows/a%20b/spans"), ("POST", "/v1/workflows/a:b/retry")],
)
async def test_ids_outside_the_rule_are_refused_in_every_path(api: httpx.AsyncClient, method: str, url: str) -> None:
    wf = (await api.post("/v1/workflows", json={"name": "t", "steps": [{"id": "a", **STEP}]})).json()["id"]
    before = await keys(api)
    url = url.replace("wf-1", wf)
    r = await api.request(method, url, json={"value": 1} if method in ("PUT", "POST") else None)
    assert r.status_code == 422, (url, r.status_code, r.text)
    assert r.json()["error"] == "invalid_input" and "an id is" in r.json()["message"]
    assert await keys(api) == before  # no orphan key


async def test_event_and_delivery_ids_follow_the_same_rule(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/events", json={"type": "t", "id": "src:1"})
    assert r.status_code == 422 and r.json()["field"] == "id"
    wf = (await api.post("/v1/workflows", json={"name": "t", "steps": [{"id": "a", **STEP}]})).json()["id"]
    tr = (await api.post(f"/v1/workflows/{wf}/triggers",
                         json={"type": "webhook", "config": {"signature": "generic", "secret": "s3cret-value"}})).json()
    body = b'{"a": 1}'
    headers = {"content-type": "application/json", "x-flow-delivery": "d:1",
               **sign(WebhookAuth(SignaturePreset.GENERIC, "s3cret-value"), body)}
    r = await api.post(tr["webhook_url"], content=body, headers=headers)
    assert r.status_code == 422 and r.json()["field"] == "delivery_id", r.text
    assert (await api.get("/v1/workflows")).json()["total"] == 1


async def _chunks(data: bytes, size: int = 65_536) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize(
    ("method", "url", "ctype"),
    [("POST", "/v1/workflows", "application/json"), ("POST", "/v1/workflows", "application/yaml"),
     ("POST", "/v1/events", "application/json"), ("PUT", "/v1/workflows/wf-x/state/k", "application/json"),
     ("POST", "/v1/pools/k/resize", "application/json"),
     ("POST", "/v1/agents", "application/json"), ("POST", "/ui/login", "application/x-www-form-urlencoded")],
)
async def test_every_body_is_capped_with_or_without_a_length(api: httpx.AsyncClient, method: str, url: str,
                                                             ctype: str) -> None:
    big = json.dumps({"pad": "x" * 600_000}).encode()
    r = await api.request(method, url, content=big, headers={"content-type": ctype})
    assert r.status_code == 413 and r.json()["error"] == "body_too_large", r.text[:200]
    r = await api.request(method, url, content=_chunks(big), headers={"content-type": ctype})  # chunked
    assert r.status_code == 413 and r.json()["error"] == "body_too_large", r.text[:200]
    assert await keys(api) == []


async def _raw_request(api: httpx.AsyncClient, method: str, raw_path: bytes) -> tuple[int, dict[str, Any]]:
    """Send a path exactly as given (httpx would resolve ``..`` itself), straight to the ASGI app."""
    from urllib.parse import unquote

    app = api._transport.app  # type: ignore[attr-defined]
    path = unquote(raw_path.decode("latin-1"))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": raw_path, "root_path": "", "query_string": b"", "server": ("gw", 80),
             "client": ("127.0.0.1", 5000), "headers": [(b"host", b"gw"), (b"authorization", b"Bearer default-token")]}
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return messages[0]["status"], json.loads(body)


@pytest.mark.parametrize(
    ("method", "raw"),
    [("POST", b"/v1/pools/../tasks"), ("GET", b"/v1/pools/%2e%2e/healthz"), ("DELETE", b"/v1/pools/%2E%2E/tasks/x"),
     ("GET", b"/v1/agents//x"), ("POST", b"/v1/pools/a%2F..%2F..%2Ftasks/resize"), ("GET", b"/v1/pools/k/../../tasks"),
     ("POST", b"/v1/agents/a/../../tasks"), ("GET", b"/v1/pools/a/b/c")],
)
async def test_the_pool_forwarder_refuses_paths_outside_its_routes(api: httpx.AsyncClient, method: str,
                                                                   raw: bytes) -> None:
    status, body = await _raw_request(api, method, raw)
    assert status in (404, 422), (raw, status, body)
    if status == 422:
        assert "no pool route" in body["message"]


async def test_the_pool_forwarder_still_forwards_its_routes(api: httpx.AsyncClient) -> None:
    for method, raw in [("GET", b"/v1/pools"), ("POST", b"/v1/pools/k1/drain"), ("GET", b"/v1/agents/agent-1/logs")]:
        status, body = await _raw_request(api, method, raw)
        assert status == 503 and "unreachable" in body["message"], (raw, status, body)  # it went out


@pytest.mark.parametrize("preset", ["github", "generic"])
async def test_a_replayed_body_under_a_new_delivery_id_starts_nothing(api: httpx.AsyncClient, preset: str) -> None:
    wf = (await api.post("/v1/workflows", json={"name": "t", "steps": [{"id": "a", **STEP}]})).json()["id"]
    tr = (await api.post(f"/v1/workflows/{wf}/triggers",
                         json={"type": "webhook", "config": {"signature": preset, "secret": "s3cret-value"}})).json()
    auth = WebhookAuth(SignaturePreset(preset), "s3cret-value")
    body = b'{"action": "opened", "number": 7}'
    header = "X-GitHub-Delivery" if preset == "github" else "X-Flow-Delivery"
    answers = []
    for delivery in ("d-1", "d-2", "d-3"):
        headers = {"content-type": "application/json", header: delivery, **sign(auth, body)}
        answers.append(await api.post(tr["webhook_url"], content=body, headers=headers))
    assert [a.status_code for a in answers] == [202, 202, 202]
    assert [a.json()["duplicate"] for a in answers] == [False, True, True], [a.text for a in answers]
    assert len({a.json()["workflow_id"] for a in answers}) == 1
    other = b'{"action": "opened", "number": 8}'
    r = await api.post(tr["webhook_url"], content=other, headers={"content-type": "application/json", header: "d-4",
                                                                  **sign(auth, other)})
    assert r.json()["duplicate"] is False
    assert (await api.get("/v1/workflows")).json()["total"] == 3  # the template and two runs


async def test_the_generic_preset_checks_a_signed_timestamp(api: httpx.AsyncClient) -> None:
    wf = (await api.post("/v1/workflows", json={"name": "t", "steps": [{"id": "a", **STEP}]})).json()["id"]
    config = {"signature": "generic", "secret": "s3cret-value", "timestamp_header": "X-Flow-Timestamp",
              "tolerance_s": 60}
    tr = (await api.post(f"/v1/workflows/{wf}/triggers", json={"type": "webhook", "config": config})).json()
    auth = WebhookAuth(SignaturePreset.GENERIC, "s3cret-value", timestamp_header="X-Flow-Timestamp")
    body = b'{"a": 1}'
    now = int(time.time())
    old = await api.post(tr["webhook_url"], content=body, headers=sign(auth, body, timestamp=now - 3600))
    assert old.status_code == 401 and "tolerance" in old.json()["message"]
    unsigned = {**sign(auth, body, timestamp=now), "X-Flow-Timestamp": str(now + 1)}  # moved, not re-signed
    assert (await api.post(tr["webhook_url"], content=body, headers=unsigned)).status_code == 401
    plain = sign(WebhookAuth(SignaturePreset.GENERIC, "s3cret-value"), body)  # no timestamp at all
    assert (await api.post(tr["webhook_url"], content=body, headers=plain)).status_code == 401
    ok = await api.post(tr["webhook_url"], content=body, headers=sign(auth, body, timestamp=now))
    assert ok.status_code == 202 and ok.json()["status"] == "started", ok.text
    assert (await api.get("/v1/workflows")).json()["total"] == 2
