"""With ``FLOW_REDIS__MIN_REPLICAS_ACK=1`` the gateway acknowledges a write only once a replica holds it.

A real master and a real replica (``redis-server --replicaof``); the replica is frozen with SIGSTOP to
make it stop acknowledging: the write requests then answer 503 with Retry-After (``not_replicated``),
reads go on, and a retry with the same event id after the replica is back starts nothing twice.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from chaos.redis_ha import Node, free_port, online_replicas
from flowcore.keyspace import Keyspace
from flowcore.replica_ack import NotReplicated, ReplicaAck
from flowcore.settings import GatewaySettings
from tests.gateway_client import gateway_client
from tests.integration.faults import wait_for

STEP = {"id": "a", "image": "agentainer-flow/python:3.11", "command": ["python3", "-c", "print(1)"]}


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    """A master and its replica, in sync."""
    master_port = free_port()
    base = ["--bind", "127.0.0.1", "--dir", ".", "--save", "", "--appendonly", "no"]
    master = Node("master", master_port, tmp_path / "master", ["--port", str(master_port), *base])
    replica_port = free_port()
    replica = Node("replica", replica_port, tmp_path / "replica",
                   ["--port", str(replica_port), *base, "--replicaof", "127.0.0.1", str(master_port)])
    try:
        master.start()
        replica.start()

        wait_for(lambda: online_replicas(master) == 1, "the replica to sync", timeout_s=20)
        yield master, replica
    finally:
        if replica.proc is not None and replica.alive:
            os.kill(replica.proc.pid, signal.SIGCONT)
        replica.stop()
        master.stop()


def frozen(replica: Node) -> None:
    assert replica.proc is not None
    os.kill(replica.proc.pid, signal.SIGSTOP)


def thawed(replica: Node) -> None:
    assert replica.proc is not None
    os.kill(replica.proc.pid, signal.SIGCONT)


@pytest.fixture
async def conn(pair: tuple[Node, Node]) -> AsyncIterator[Redis]:
    client = Redis(host="127.0.0.1", port=pair[0].port, socket_timeout=5)
    yield client
    await client.aclose()


@pytest.fixture
async def api(conn: Redis, pair: tuple[Node, Node]) -> AsyncIterator[httpx.AsyncClient]:
    settings = GatewaySettings(
        redis={"url": f"redis://127.0.0.1:{pair[0].port}/0", "min_replicas_ack": 1, "replica_ack_timeout_ms": 300},
        pool={"url": "http://127.0.0.1:9"},
    )
    async with gateway_client(settings, conn) as client:
        yield client


async def test_the_barrier_confirms_a_replica_and_refuses_when_none_answers(
    conn: Redis, pair: tuple[Node, Node]
) -> None:
    ack = ReplicaAck(min_replicas=1, timeout_ms=300)
    await conn.set("x", "1")  # on another connection than the barrier's: covered all the same
    assert await ack.confirm(conn, Keyspace()) == 1
    frozen(pair[1])
    await conn.set("y", "1")
    with pytest.raises(NotReplicated) as caught:
        await ack.confirm(conn, Keyspace())
    assert caught.value.status_code == 503 and "0 of the 1 replicas" in caught.value.message
    thawed(pair[1])
    assert await ReplicaAck(min_replicas=1, timeout_ms=10_000).confirm(conn, Keyspace()) == 1
    replica = Redis(host="127.0.0.1", port=pair[1].port)
    try:
        assert await replica.get("y") == b"1"  # WAIT returned 1 only once the replica held it
    finally:
        await replica.aclose()


async def test_submissions_wait_for_a_replica_and_a_retry_starts_nothing_twice(
    api: httpx.AsyncClient, conn: Redis, pair: tuple[Node, Node]
) -> None:
    created = await api.post("/v1/workflows", json={"name": "tpl", "steps": [STEP]})
    assert created.status_code == 201, created.text
    template = created.json()["id"]
    trigger = await api.post(f"/v1/workflows/{template}/triggers",
                             json={"type": "event", "config": {"event_type": "ha.test"}})
    assert trigger.status_code == 201, trigger.text

    frozen(pair[1])
    try:
        refused = await api.post("/v1/events", json={"type": "ha.test", "id": "ev-1", "payload": {}})
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] and refused.json()["error"] == "not_replicated"
        started = await api.post("/v1/workflows?start=true", json={"name": "direct", "steps": [STEP]})
        assert started.status_code == 503 and started.json()["error"] == "not_replicated"
        # Reads never wait for replicas; a refused write may exist all the same (it is on the master).
        listing = await api.get("/v1/workflows")
        assert listing.status_code == 200
    finally:
        thawed(pair[1])
    await ReplicaAck(min_replicas=1, timeout_ms=10_000).confirm(conn, Keyspace())  # the replica is back

    retried = await api.post("/v1/events", json={"type": "ha.test", "id": "ev-1", "payload": {}})
    assert retried.status_code == 202, retried.text
    assert retried.json()["duplicate"] is True  # the refused attempt's workflow was kept: no second one
    runs = await conn.zcard(Keyspace().trigger_runs(trigger.json()["id"]))
    assert runs == 1
    fresh = await api.post("/v1/events", json={"type": "ha.test", "id": "ev-2", "payload": {}})
    assert fresh.status_code == 202 and fresh.json()["started"] == 1
