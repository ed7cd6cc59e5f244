"""The Sentinel failover scenario: a master killed (SIGKILL) during a burst of submissions and events.

A stack of real processes (gateway, workers, pool service, scheduler) runs on Sentinel settings with
``FLOW_REDIS__MIN_REPLICAS_ACK`` set, against a :class:`~chaos.redis_ha.SentinelCluster` on free
loopback ports. Submitters post workflows (``POST /v1/workflows?start=true``) and events with ids
(``POST /v1/events``, retried with the same id until acknowledged) while the master is killed, a
replica is promoted, and the old master is started again (it comes back as a replica). Then every
acknowledged workflow is looked up and waited for:

- ``acknowledged``: workflows the gateway answered 2xx for;
- ``surviving`` / ``lost``: of those, found (or not) after the failover;
- ``completed``: of those, finished as ``completed``;
- ``duplicated``: event ids that started more than one workflow;
- ``failover_s``: per kill, kill -> the Sentinels name the promoted replica; ``unacknowledged_s``: per
  kill, kill -> the first acknowledgement of a submission sent after it (what clients waited).

Used by ``tests/integration/test_sentinel_failover.py`` (small) and ``python -m chaos --scenario
sentinel`` (larger, with its counts in BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from chaos.redis_ha import SentinelCluster, free_port
from flowcore.keyspace import Keyspace

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "agentainer-flow/python:3.11"
EVENT_TYPE = "ha.failover"
STEP = {"id": "a", "image": IMAGE, "command": ["python3", "-c", "print(1)"], "retry": {"max_attempts": 3}}
KEYS = Keyspace()
FINISHED = ("completed", "failed", "cancelled", "timed_out")


@dataclass
class FlowProcesses:
    """Real ``python -m gateway|workers|pool|scheduler`` processes on one environment; all stopped by :meth:`stop`."""

    home: Path
    env: dict[str, str]
    gateway_url: str
    pool_url: str
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    @classmethod
    def create(cls, home: Path, cluster: SentinelCluster, docker_host: str, *, min_replicas_ack: int,
               labels: dict[str, str] | None = None) -> FlowProcesses:
        gateway_port, pool_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")} | {
            "DOCKER_HOST": docker_host,
            "FLOW_DOCKER_HOST": docker_host,
            "FLOW_REDIS__URL": "redis://sentinel-managed/0",  # the host is never used: the Sentinels name it
            "FLOW_REDIS__SENTINELS": json.dumps(cluster.addresses),
            "FLOW_REDIS__MIN_REPLICAS_ACK": str(min_replicas_ack),
            "FLOW_REDIS__REPLICA_ACK_TIMEOUT_MS": "500",
            "FLOW_PORT": str(gateway_port),
            "FLOW_POOL_PORT": str(pool_port),
            "FLOW_POOL__URL": f"http://127.0.0.1:{pool_port}",
            "FLOW_POOL_TOKEN": os.urandom(16).hex(),
            "FLOW_SECRETS_KEY": os.urandom(24).hex(),
            "FLOW_SERVICE_ID": f"ha-{os.urandom(4).hex()}",
            "FLOW_WORK_DIR": f"/tmp/fha{os.urandom(4).hex()}",  # unix socket paths hold 108 bytes
            "FLOW_EXTRA_LABELS": json.dumps(labels or {}),
            "FLOW_TRACING__EXPORTER": "redis",
            "FLOW_REDIS_BACKOFF_MAX_S": "1",
            "FLOW_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
        home.mkdir(parents=True, exist_ok=True)
        return cls(home, env, f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{pool_port}")

    def spawn(self, name: str, module: str) -> None:
        with open(self.home / f"{name}.log", "ab") as log:
            popen = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append((name, popen))

    def start(self, workers: int = 1, timeout_s: float = 90) -> None:
        self.spawn("pool", "pool")
        self._wait_healthy(f"{self.pool_url}/healthz", timeout_s)
        for i in range(workers):
            self.spawn(f"worker-{i}", "workers")
        self.spawn("scheduler", "scheduler")
        self.spawn("gateway", "gateway")
        self._wait_healthy(f"{self.gateway_url}/healthz", timeout_s)

    def _wait_healthy(self, url: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.dead():
                raise RuntimeError(f"exited: {self.dead()}\n{self.logs()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s\n{self.logs()}")
            time.sleep(0.2)

    def dead(self) -> list[str]:
        return [name for name, popen in self.procs if popen.poll() is not None]

    def log(self, name: str) -> str:
        try:
            return (self.home / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def logs(self, lines: int = 40) -> str:
        return "\n".join(f"--- {name}\n" + "\n".join(self.log(name).splitlines()[-lines:]) for name, _ in self.procs)

    def stop(self) -> None:
        for _, popen in reversed(self.procs):
            if popen.poll() is None:
                popen.terminate()
        for _, popen in reversed(self.procs):
            try:
                popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()


@dataclass
class Tally:
    acknowledged: dict[str, str] = field(default_factory=dict)  # workflow id -> "workflow" or the event id
    refused: int = 0  # 503 answers (not replicated in time, or Redis unreachable)
    unreachable: int = 0  # no answer at all
    events: set[str] = field(default_factory=set)  # event ids acknowledged
    killed_at: list[float] = field(default_factory=list)  # when each master was killed
    acked_after: list[float] = field(default_factory=list)  # the first acknowledgement after each kill


async def _post(client: httpx.AsyncClient, tally: Tally, path: str, body: dict[str, Any]) -> httpx.Response | None:
    sent = time.monotonic()
    try:
        response = await client.post(path, json=body)
    except httpx.HTTPError:
        tally.unreachable += 1
        return None
    if response.status_code == 503:
        tally.refused += 1
        return None
    response.raise_for_status()
    if len(tally.acked_after) < len(tally.killed_at) and sent > tally.killed_at[-1]:  # sent after the kill
        tally.acked_after.append(time.monotonic())
    return response


async def _submitter(client: httpx.AsyncClient, tally: Tally, total: int, rng: random.Random, name: str) -> None:
    n = 0
    while len(tally.acknowledged) < total:
        n += 1
        if rng.random() < 0.5:
            response = await _post(client, tally, "/v1/workflows?start=true", {"name": "ha", "steps": [STEP]})
            if response is not None:  # a refused one may exist or not: it was not acknowledged, so not counted
                tally.acknowledged[response.json()["id"]] = "workflow"
            else:
                await asyncio.sleep(0.1)
            continue
        event_id = f"{name}-{n}"
        while len(tally.acknowledged) < total + 50:  # the same id until acknowledged: a retry is safe
            response = await _post(client, tally, "/v1/events", {"type": EVENT_TYPE, "id": event_id, "payload": {}})
            if response is not None:
                tally.events.add(event_id)
                for fire in response.json()["fires"]:
                    if fire.get("workflow_id"):
                        tally.acknowledged[fire["workflow_id"]] = event_id
                break
            await asyncio.sleep(0.1)


@dataclass
class Outcome:
    acknowledged: int
    surviving: int
    lost: list[str]
    completed: int
    not_completed: list[str]
    duplicated: list[str]
    refused: int
    unreachable: int
    failover_s: list[float]
    unacknowledged_s: list[float]
    elapsed_s: float


async def run(cluster: SentinelCluster, procs: FlowProcesses, *, total: int, kill_after: list[int],
              concurrency: int = 3, seed: int = 0, drain_s: float = 120.0) -> Outcome:
    """Submit ``total`` acknowledged workflows, killing the master once ``kill_after[i]`` are acknowledged."""
    started = time.monotonic()
    tally = Tally()
    failover_s: list[float] = []
    headers = {"Authorization": "Bearer default-token"}
    async with httpx.AsyncClient(base_url=procs.gateway_url, headers=headers, timeout=15) as client:
        template = (await client.post("/v1/workflows", json={"name": "ha-tpl", "steps": [STEP]})).json()["id"]
        created = await client.post(f"/v1/workflows/{template}/triggers",
                                    json={"type": "event", "config": {"event_type": EVENT_TYPE}})
        created.raise_for_status()
        rng = random.Random(seed)
        submitters = [asyncio.create_task(_submitter(client, tally, total, random.Random(rng.random()), f"s{i}"))
                      for i in range(concurrency)]
        for threshold in kill_after:
            while len(tally.acknowledged) < threshold and not all(t.done() for t in submitters):
                await asyncio.sleep(0.02)
            old = cluster.master_node()
            old.kill()
            tally.killed_at.append(time.monotonic())
            _, waited_s = await asyncio.to_thread(cluster.wait_promoted, old.port)
            failover_s.append(waited_s)
            old.start()  # it comes back as a replica of the new master (the Sentinels reconfigure it)
            await asyncio.to_thread(cluster.wait_replicas, 1, 60)  # a replica to promote at the next kill
        await asyncio.gather(*submitters)
        unacked_s = [after - killed for killed, after in zip(tally.killed_at, tally.acked_after, strict=False)]
        statuses = await _drain(client, list(tally.acknowledged), time.monotonic() + drain_s)
    lost = [wf for wf, status in statuses.items() if status is None]
    not_completed = [wf for wf, status in statuses.items() if status not in (None, "completed")]
    return Outcome(
        acknowledged=len(tally.acknowledged),
        surviving=len(statuses) - len(lost),
        lost=lost,
        completed=sum(1 for s in statuses.values() if s == "completed"),
        not_completed=not_completed,
        duplicated=duplicated_events(cluster, tally.events),
        refused=tally.refused,
        unreachable=tally.unreachable,
        failover_s=failover_s,
        unacknowledged_s=unacked_s,
        elapsed_s=time.monotonic() - started,
    )


async def _drain(client: httpx.AsyncClient, ids: list[str], deadline: float) -> dict[str, str | None]:
    """The status of every workflow once finished (None: not found), or as it is at the deadline."""
    statuses: dict[str, str | None] = {}
    pending = list(ids)
    while pending:
        still = []
        for wf_id in pending:
            try:
                response = await client.get(f"/v1/workflows/{wf_id}")
            except httpx.HTTPError:
                still.append(wf_id)
                continue
            if response.status_code == 404:
                statuses[wf_id] = None
            elif response.status_code == 200:
                statuses[wf_id] = response.json()["status"]
                if statuses[wf_id] not in FINISHED:
                    still.append(wf_id)
            else:
                still.append(wf_id)
        pending = still
        if pending and time.monotonic() > deadline:
            break
        if pending:
            await asyncio.sleep(0.5)
    return statuses


def duplicated_events(cluster: SentinelCluster, event_ids: set[str]) -> list[str]:
    """Event ids that started more than one workflow (read from the current master)."""
    seen: dict[str, int] = {}
    with cluster.master_node().client() as client:
        for wf_id in client.zrange(KEYS.all_workflows, 0, -1):
            raw = client.hget(KEYS.workflow(wf_id.decode()), "origin")
            if raw is None:
                continue
            origin = json.loads(raw)
            event = origin.get("event_id")
            if origin.get("kind") == "event" and event:
                seen[event] = seen.get(event, 0) + 1
    return sorted(e for e, n in seen.items() if n > 1 and e in event_ids)

