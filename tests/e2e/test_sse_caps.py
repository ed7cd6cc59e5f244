"""Live event streams are bounded per token and per gateway process (issue 13: 300 streams held 303
Redis connections). A second gateway process of the test stack runs with small bounds; the test holds
real SSE connections open over TCP and counts Redis's clients."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.e2e.conftest import Proc, Stack, _wait_healthy, free_port
from tests.e2e.flowhttp import step, submit

PER_CLIENT, TOTAL = 2, 3


@pytest.fixture
def small_gateway(stack: Stack) -> Iterator[str]:
    port = free_port()
    proc: Proc = stack.spawn(
        f"gateway-sse-{port}", "gateway",
        {"FLOW_PORT": str(port), "FLOW_SSE_MAX_STREAMS_PER_CLIENT": str(PER_CLIENT), "FLOW_SSE_MAX_STREAMS": str(TOTAL),
         "FLOW_API_TOKENS": '[{"name": "reader", "hash": "sha256:'
         + __import__("hashlib").sha256(b"reader-token-0123456789abcdef0123").hexdigest() + '", "scopes": ["read"]}]',
         "FLOW_TOKENS": f'["{stack.token}"]'},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(f"{url}/healthz", [proc])
        yield url
    finally:
        proc.stop()


_LIVE: list[Iterator[str]] = []  # line iterators of open streams: dropping one would close its stream


def open_stream(url: str, path: str, token: str, stack: contextlib.ExitStack) -> httpx.Response:
    client = stack.enter_context(httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30))
    response = stack.enter_context(client.stream("GET", path))
    if response.status_code == 200:
        lines = response.iter_lines()
        next(lines)  # the stream is really open: its first frame arrived
        _LIVE.append(lines)
        stack.callback(_LIVE.remove, lines)
    else:
        response.read()
    return response


def redis_clients(stack: Stack) -> int:
    with redis.Redis.from_url(stack.redis_url) as r:
        return len(r.client_list())


def test_streams_are_capped_per_token_and_per_process(stack: Stack, small_gateway: str) -> None:
    with httpx.Client(base_url=stack.url, headers=stack.headers(), timeout=30) as api:
        wf_id = submit(api, {"name": "sse-caps", "steps": [step("s", "time.sleep(60)")]})
    reader = "reader-token-0123456789abcdef0123"
    before = redis_clients(stack)
    with contextlib.ExitStack() as held:
        first = [open_stream(small_gateway, f"/v1/workflows/{wf_id}/events", stack.token, held) for _ in range(PER_CLIENT)]
        assert [r.status_code for r in first] == [200] * PER_CLIENT
        over = open_stream(small_gateway, "/v1/events", stack.token, held)
        assert over.status_code == 429 and over.headers.get("retry-after"), over.text
        assert "live event streams" in over.json()["message"]
        other = open_stream(small_gateway, "/v1/events", reader, held)  # another token still gets one
        assert other.status_code == 200
        full = open_stream(small_gateway, "/v1/events", reader, held)  # the process is full
        assert full.status_code == 503 and full.headers.get("retry-after"), full.text
        # Refused streams hold no Redis connection: the clients grew by at most the admitted streams.
        assert redis_clients(stack) - before <= TOTAL + 2  # + the gateway's own pooled connections
    # Closed streams give their places back (the server notices within a heartbeat or a read).
    deadline = time.monotonic() + 30
    while True:
        with contextlib.ExitStack() as again:
            r = open_stream(small_gateway, "/v1/events", stack.token, again)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
        time.sleep(0.5)
    assert r.status_code == 200
    with httpx.Client(base_url=stack.url, headers=stack.headers(), timeout=30) as api:
        api.post(f"/v1/workflows/{wf_id}/cancel")
