"""Pools and agents through the gateway (which forwards to the pool service)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import Stack
from tests.e2e.flowhttp import IMAGE


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, headers=stack.headers(), timeout=60) as c:
        yield c


def test_pools_are_listed_through_the_gateway(client: httpx.Client) -> None:
    r = client.get("/v1/pools")
    assert r.status_code == 200, r.text
    assert client.get("/v1/pools", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_agent_lifecycle_and_followed_logs(client: httpx.Client) -> None:
    name = f"ticker-{uuid.uuid4().hex[:6]}"
    code = "import time\nfor i in range(10000):\n    print('tick', i, flush=True)\n    time.sleep(0.1)"
    r = client.post("/v1/agents", json={"name": name, "image": IMAGE, "command": ["python3", "-c", code]})
    assert r.status_code == 201, r.text
    agent = r.json()
    agent_id = agent["id"]
    try:
        assert client.get(f"/v1/agents/{agent_id}").status_code == 200
        lines: list[str] = []
        with client.stream("GET", f"/v1/agents/{agent_id}/logs", params={"follow": "true"}) as stream:
            for line in stream.iter_lines():
                if line.strip():
                    lines.append(line)
                if len(lines) >= 3:
                    break
        assert all(line.startswith("tick") for line in lines), lines
        time.sleep(0.3)
        whole = client.get(f"/v1/agents/{agent_id}/logs").text
        assert "tick 0" in whole
        assert client.post(f"/v1/agents/{agent_id}/stop").status_code == 200
    finally:
        assert client.delete(f"/v1/agents/{agent_id}").status_code in (200, 204)
    assert client.get(f"/v1/agents/{agent_id}").status_code == 404


def test_bad_agent_requests_are_4xx(client: httpx.Client) -> None:
    r = client.post("/v1/agents", json={"name": "bad name!", "image": IMAGE})
    assert r.status_code == 422 and "name" in r.text
    assert client.get("/v1/agents/does-not-exist").status_code == 404
