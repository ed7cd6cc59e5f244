"""Integration-tier fixtures.

The in-process gateway tests talk to it as ``http://gw`` (or ``gw.test``): names this tier's gateways
are configured to serve, on top of the loopback names (the Host allow-list refuses any other, see
docs/security.md). A test that passes ``allowed_hosts`` itself (the Host tests) is unaffected.
"""

from __future__ import annotations

import json

import pytest

TEST_HOSTS = ["gw", "gw.test", "localhost", "127.0.0.1", "[::1]"]


@pytest.fixture(autouse=True)
def _test_gateway_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_ALLOWED_HOSTS", json.dumps(TEST_HOSTS))
