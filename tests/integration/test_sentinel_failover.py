"""Redis high availability with Sentinel: the master is SIGKILLed during a burst of submissions and events.

A master, one replica and three Sentinels (``redis-server --sentinel``) on free loopback ports; a real
gateway, worker and pool service (``python -m ...``) configured with ``FLOW_REDIS__SENTINELS`` and
``FLOW_REDIS__MIN_REPLICAS_ACK=1``. Mid-burst the master is killed, the Sentinels promote the replica,
the old master is started again (as a replica: with one replica left, nothing can be acknowledged
until then) and the burst goes on. Every acknowledged submission must survive and complete; no event id
may start two workflows; every process must still be running, having followed the new master itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.failover import FlowProcesses, run
from chaos.redis_ha import SentinelCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    # 1 s: lower, a busy machine makes Sentinels see a live master as down (measured: 400 ms did, at promotion).
    ha = SentinelCluster(tmp_path / "redis", replicas=1, down_after_ms=1000, failover_timeout_ms=3000)
    try:
        ha.start()
        yield ha
    finally:
        ha.stop()


@pytest.fixture
def stack(
    tmp_path: Path, cluster: SentinelCluster, docker_host: str, base_image: str, test_labels: dict[str, str]
) -> Iterator[FlowProcesses]:
    procs = FlowProcesses.create(tmp_path / "flow", cluster, docker_host, min_replicas_ack=1, labels=test_labels)
    try:
        procs.start(workers=1)
        yield procs
    finally:
        procs.stop()


async def test_acknowledged_submissions_survive_a_master_kill_and_every_process_follows(
    cluster: SentinelCluster, stack: FlowProcesses
) -> None:
    outcome = await run(cluster, stack, total=24, kill_after=[8], concurrency=3, drain_s=90)
    logs = stack.logs()
    print(f"failover outcome: {outcome}")

    assert len(outcome.failover_s) == 1, "no failover happened"
    assert outcome.acknowledged >= 24
    assert outcome.lost == [], f"acknowledged, then lost in the failover: {outcome.lost}\n{logs}"
    assert outcome.surviving == outcome.acknowledged
    assert outcome.not_completed == [] and outcome.completed == outcome.acknowledged, (outcome, logs)
    assert outcome.duplicated == []
    assert outcome.refused + outcome.unreachable > 0, "the failover refused nothing: was the master killed?"
    assert len(outcome.unacknowledged_s) == 1  # something was acknowledged after the kill
    assert stack.dead() == [], logs
    # The worker and the pool service went through connection errors and carried on with the new master.
    assert "redis is unreachable" in stack.log("worker-0") + stack.log("pool") + stack.log("gateway"), logs
