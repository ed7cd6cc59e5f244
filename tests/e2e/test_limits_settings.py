"""Size limits from the environment (FLOW_LIMITS__*, issue 12): a gateway process started with lower
limits enforces them with clear 4xx answers, and a pool service whose request limit could not carry a
step's whole output refuses to start, saying which settings disagree."""

from __future__ import annotations

import signal

import httpx

from tests.e2e.conftest import Stack, _wait_healthy, free_port
from tests.e2e.flowhttp import step


def test_a_gateway_enforces_the_limits_of_its_environment(stack: Stack) -> None:
    port = free_port()
    gateway = stack.spawn("gateway-limits", "gateway", extra={
        "FLOW_PORT": str(port), "FLOW_LIMITS__MAX_STEPS": "2", "FLOW_LIMITS__MAX_STATE_VALUE_KIB": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(f"{url}/healthz", [gateway])
        with httpx.Client(base_url=url, headers=stack.headers(), timeout=30) as client:
            before = client.get("/v1/workflows").json()["total"]
            three = {"name": "too-long", "steps": [step(f"s{i}", "print(1)") for i in range(3)]}
            refused = client.post("/v1/workflows", json=three)
            assert refused.status_code == 422 and refused.json()["field"] == "steps", refused.text
            assert "at most 2 steps" in refused.json()["message"]
            assert client.get("/v1/workflows").json()["total"] == before  # nothing stored
            two = client.post("/v1/workflows", json={"name": "fits", "steps": [step("a", "print(1)")]})
            assert two.status_code == 201, two.text
            wf_id = two.json()["id"]
            big = client.put(f"/v1/workflows/{wf_id}/state/k", json={"value": "x" * 2048})
            assert big.status_code == 422 and "the limit is 1024 bytes" in big.json()["message"], big.text
            assert client.put(f"/v1/workflows/{wf_id}/state/k", json={"value": "small"}).status_code == 200
    finally:
        gateway.stop(signal.SIGTERM)


def test_a_pool_whose_request_limit_cannot_carry_an_output_does_not_start(stack: Stack) -> None:
    pool = stack.spawn("pool-incoherent", "pool", extra={
        "FLOW_POOL_PORT": str(free_port()), "FLOW_SERVICE_ID": "e2e-incoherent",
        "FLOW_MAX_BODY_BYTES": str(8 * 1024 * 1024)})
    code = pool.popen.wait(timeout=60)
    assert code != 0
    assert "smaller than one whole step output" in pool.tail()
