"""Helpers of the fault tests: a redis-server of the test's own (AOF on) that can be killed and started
again on the same port and data dir, and real service processes (``python -m pool``, ``python -m workers``)
started as the Procfile starts them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from redis.asyncio import Redis

from flowcore import engine
from flowcore.engine import EngineEnv, Plan
from flowcore.keyspace import Keyspace
from flowcore.models import WorkflowDefinition
from flowcore.records import Snapshot
from flowcore.store import WorkflowStore
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], Any], what: str, timeout_s: float = 30.0, interval_s: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned) or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


@dataclass
class KillableRedis:
    """A redis-server on a fixed loopback port and dir, AOF on (``appendfsync everysec``)."""

    dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--save", "", "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            wait_for(lambda: self._pings(client), f"redis-server on port {self.port}", timeout_s=15)
        finally:
            client.close()

    def _pings(self, client: redis.Redis) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"redis-server exited with {self.proc.returncode}:\n{log}")
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError):
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash: the port is closed at once."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Service:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, n: int = 80) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Services:
    """Real pool and worker processes against one Redis, for the fault tests."""

    workdir: Path
    env: dict[str, str]
    pool_url: str
    service_id: str
    started: list[Service] = field(default_factory=list)

    @classmethod
    def create(cls, workdir: Path, redis_url: str, docker_host: str, labels: dict[str, str]) -> Services:
        pool_port = free_port()
        service_id = f"fault-{uuid.uuid4().hex[:8]}"
        pool_dir = Path(f"/tmp/fp{uuid.uuid4().hex[:8]}")  # unix socket paths hold 108 bytes
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")} | {
            "DOCKER_HOST": docker_host,
            "FLOW_DOCKER_HOST": docker_host,
            "FLOW_REDIS__URL": redis_url,
            "FLOW_POOL_PORT": str(pool_port),
            "FLOW_POOL__URL": f"http://127.0.0.1:{pool_port}",
            "FLOW_POOL_TOKEN": uuid.uuid4().hex,
            "FLOW_SERVICE_ID": service_id,
            "FLOW_WORK_DIR": str(pool_dir),
            "FLOW_EXTRA_LABELS": json.dumps(labels),
            "FLOW_TRACING__EXPORTER": "none",
            "FLOW_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
        return cls(workdir=workdir, env=env, pool_url=f"http://127.0.0.1:{pool_port}", service_id=service_id)

    def spawn(self, name: str, module: str, **extra: str) -> Service:
        log = self.workdir / f"{name}.log"
        with open(log, "ab") as handle:
            popen = subprocess.Popen(
                [sys.executable, "-m", module], cwd=REPO, env={**self.env, **extra},
                stdout=handle, stderr=subprocess.STDOUT,
            )
        service = Service(name, popen, log)
        self.started.append(service)
        return service

    def start_pool(self) -> Service:
        pool = self.spawn("pool", "pool")

        def healthy() -> bool:
            if pool.popen.poll() is not None:
                raise AssertionError(f"the pool service exited with {pool.popen.returncode}:\n{pool.tail()}")
            try:
                return httpx.get(f"{self.pool_url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, "the pool service to answer /healthz", timeout_s=60)
        return pool

    def logs(self) -> str:
        return "\n".join(f"--- {s.name} (exit {s.popen.poll()})\n{s.tail()}" for s in self.started)

    def stop(self) -> None:
        for service in reversed(self.started):
            service.stop()


IMAGE = "agentainer-flow/python:3.11"


def python_step(step_id: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "image": IMAGE, "command": ["python3", "-c", code], **extra}


async def submit(store: WorkflowStore, definition: dict[str, Any]) -> tuple[str, Plan]:
    """Create and start a workflow as the gateway does; returns its id and the start's plan."""
    wf_id = await store.create(WorkflowDefinition.model_validate(definition))
    plan = await store.transact(wf_id, lambda snap: engine.start(snap, EngineEnv()))
    return wf_id, plan


async def wait_finished(store: WorkflowStore, wf_id: str, timeout_s: float, logs: Callable[[], str]) -> Snapshot:
    deadline = time.monotonic() + timeout_s
    while True:
        snap = await store.load(wf_id)
        if snap.status.finished:
            return snap
        if time.monotonic() > deadline:
            tasks = {k: (t.status.value, t.token, t.takeovers) for k, t in snap.tasks.items()}
            raise AssertionError(f"{wf_id} still {snap.status.value} after {timeout_s:.0f}s: {tasks}\n{logs()}")
        await asyncio.sleep(0.1)


async def task_events(conn: Redis, keys: Keyspace, wf_id: str, step_id: str) -> list[str]:
    """The statuses the workflow's event stream recorded for the tasks of one step, in order."""
    statuses = []
    for _, fields in await conn.xrange(keys.events(wf_id)):
        event = json.loads(fields[b"data"])
        if event.get("type") == "task" and event.get("step_id") == step_id:
            statuses.append(str(event["status"]))
    return statuses
