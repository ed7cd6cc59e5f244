"""One id rule (flowcore.ids) and the pool forwarder's path check (gateway.routes.pools.forwarded_path)."""

from __future__ import annotations

import pytest

from flowcore.errors import InvalidInput
from flowcore.ids import MAX_ID_LENGTH, check_id, is_valid_id
from gateway.routes.pools import forwarded_path


@pytest.mark.parametrize("value", ["wf-18c3f-0a1b2c3d4e", "tr-0011223344556677", "a", "evt_77", "0" * MAX_ID_LENGTH,
                                   "3f2504e0-4f89-11d3-9a0c-0305e82c3301"])
def test_ids_the_server_makes_and_users_send_are_valid(value: str) -> None:
    assert is_valid_id(value) and check_id(value, "workflow_id") == value


@pytest.mark.parametrize("value", ["", "a:b", "wf:1:state", "a/b", "..", ".a", "a.b", "-a", "_a", "a b", "a%2e",
                                   "é", "a\n", "0" * (MAX_ID_LENGTH + 1)])
def test_anything_else_is_refused_naming_the_field(value: str) -> None:
    assert not is_valid_id(value)
    with pytest.raises(InvalidInput) as caught:
        check_id(value, "trigger_id")
    assert caught.value.field == "trigger_id" and caught.value.status_code == 422


@pytest.mark.parametrize(
    ("raw", "forwarded"),
    [(b"/v1/pools", "/v1/pools"), (b"/v1/pools/k1", "/v1/pools/k1"), (b"/v1/pools/k1/resize", "/v1/pools/k1/resize"),
     (b"/v1/agents", "/v1/agents"), (b"/v1/agents/agent-0a/logs", "/v1/agents/agent-0a/logs"),
     (b"/v1/agents/agent-0a/logs?tail=5", "/v1/agents/agent-0a/logs")],
)
def test_the_pool_routes_are_forwarded_as_they_are(raw: bytes, forwarded: str) -> None:
    assert forwarded_path(raw) == forwarded


@pytest.mark.parametrize(
    "raw",
    [b"/v1/pools/../tasks", b"/v1/pools/%2e%2e/tasks", b"/v1/pools/%2E%2E/%2E%2E/healthz", b"/v1/pools/..",
     b"/v1/agents//x", b"/v1/pools/a%2Fb/resize", b"/v1/pools/a%2fb", b"/v1/pools/k/resize/..",
     b"/v1/pools/k/../../tasks", b"/v1/agents/a/start/x", b"/v1/agents/a/resize", b"/v1/pools/k/logs",
     b"/v1/pools/.", b"/v1/pools/a\\..\\tasks", b"/v1/tasks", b"/v1/pools/", b"/v1/pools/k%00", b"/v1/pools/\xc3\xa9"],
)
def test_anything_else_is_refused_before_it_is_sent(raw: bytes) -> None:
    with pytest.raises(InvalidInput, match="no pool route"):
        forwarded_path(raw)
