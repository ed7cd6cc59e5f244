"""Sentinel settings (ADR 021): addresses parsed and refused clearly, clients made through Sentinel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from flowcore import redisconn, sentinel
from flowcore.replica_ack import ReplicaAck
from flowcore.settings import GatewaySettings, RedisSection, WorkerSettings

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("127.0.0.1:26379", ("127.0.0.1", 26379)),
        ("sentinel-a:5000", ("sentinel-a", 5000)),
        ("sentinel-b", ("sentinel-b", 26379)),
        ("[::1]:26380", ("::1", 26380)),
        ("[::1]", ("::1", 26379)),
        (" 10.0.0.5:1 ", ("10.0.0.5", 1)),
    ],
)
def test_addresses_parse(item: str, expected: tuple[str, int]) -> None:
    assert sentinel.parse_address(item) == expected


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("host:abc", "the port must be a number"),
        ("host:0", "the port must be a number"),
        ("host:70000", "the port must be a number"),
        (":26379", "is not host:port"),
        ("::1:26379", "IPv6 address in brackets"),
        ("redis://host:26379", "is not host:port"),
        ("", "is not host:port"),
    ],
)
def test_bad_addresses_are_refused_naming_the_item(item: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RedisSection(sentinels=["127.0.0.1:26379", item])
    assert message in str(caught.value) and repr(item.strip()) in str(caught.value)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_REDIS__SENTINELS", '["127.0.0.1:26379","127.0.0.1:26380"]')
    monkeypatch.setenv("FLOW_REDIS__SENTINEL_MASTER", "flow")
    monkeypatch.setenv("FLOW_REDIS__MIN_REPLICAS_ACK", "1")
    monkeypatch.setenv("FLOW_REDIS__REPLICA_ACK_TIMEOUT_MS", "250")
    section = WorkerSettings().redis
    assert section.sentinels == ["127.0.0.1:26379", "127.0.0.1:26380"] and section.sentinel_master == "flow"
    assert (section.min_replicas_ack, section.replica_ack_timeout_ms) == (1, 250)
    monkeypatch.setenv("FLOW_REDIS__MIN_REPLICAS_ACK", "-1")
    with pytest.raises(ValidationError):
        GatewaySettings()


def test_defaults_keep_todays_behaviour() -> None:
    section = RedisSection()
    assert section.sentinels == [] and section.min_replicas_ack == 0
    assert not ReplicaAck(section.min_replicas_ack, section.replica_ack_timeout_ms).enabled
    assert redisconn.arq_pool(section) is None
    assert not redisconn.arq_settings(section).sentinel


async def test_every_client_is_made_through_sentinel() -> None:
    section = RedisSection(
        url="redis://:urlpass@ignored:1/3", sentinels=["127.0.0.1:1", "127.0.0.1:2"], sentinel_master="flow",
        sentinel_password="s3cret", sentinel_timeout_s=0.25,
    )
    client = redisconn.connect(section)
    try:
        assert isinstance(client, sentinel.SentinelRedis)
        pool_kwargs = client.connection_pool.connection_kwargs
        assert pool_kwargs["db"] == 3 and pool_kwargs["password"] == "urlpass"  # the URL's db and credentials
        manager = client.sentinel_manager
        asked = [(s.connection_pool.connection_kwargs["port"], s.connection_pool.connection_kwargs["password"],
                  s.connection_pool.connection_kwargs["socket_timeout"]) for s in manager.sentinels]
        assert asked == [(1, "s3cret", 0.25), (2, "s3cret", 0.25)]
        assert client.connection_pool.service_name == "flow"
    finally:
        await client.aclose()
    arq = redisconn.arq_pool(section)
    assert isinstance(arq, sentinel.SentinelArqRedis)
    await arq.aclose()
    settings = redisconn.arq_settings(section)
    assert settings.sentinel and settings.host == [("127.0.0.1", 1), ("127.0.0.1", 2)]
    assert settings.sentinel_master == "flow"
    sync = redisconn.connect_sync(section)
    assert sync.connection_pool.service_name == "flow"  # type: ignore[attr-defined]
    sync.close()


def test_a_process_with_a_bad_sentinel_address_refuses_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")}
    env["FLOW_REDIS__SENTINELS"] = '["127.0.0.1:notaport"]'
    done = subprocess.run([sys.executable, "-m", "workers"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode != 0
    assert "sentinel address '127.0.0.1:notaport': the port must be a number" in done.stderr
