"""The peers the bench measures side by side with our stack, started by the bench itself.

- Celery (prefork ``-c 2``, no-op tasks) on its own redis-server on a free loopback port, from the
  optional ``bench`` extra (``pip install -e '.[bench]'``); its client runs in a child process
  (``python -m bench.celery_app``) so this process never imports Celery.
- A cold ``docker run --rm --network none IMAGE true`` loop: the floor of "one fresh container per step".

CPU is read per process as for our stack (:mod:`bench.procs`): the Celery worker and its pool
children, its redis-server; the Docker engine and the ``docker`` CLI for the cold loop.
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from bench import procs

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class PeerResult:
    label: str
    tasks: int
    wall_s: float | None
    cpu: procs.Delta | None = None
    error: str | None = None

    @property
    def per_s(self) -> float | None:
        return self.tasks / self.wall_s if self.wall_s else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def celery_available() -> bool:
    return importlib.util.find_spec("celery") is not None


def _ping_redis(port: int, deadline_s: float = 10.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"redis-server on 127.0.0.1:{port} did not answer")


class CeleryPeer:
    """Celery 5 with its own redis-server; ``run("chain", 40)`` measures one shape of no-op tasks."""

    def __init__(self, concurrency: int = 2) -> None:
        self.concurrency = concurrency
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bench-celery-"))
        self.worker: subprocess.Popen[bytes] | None = None
        self.client: subprocess.Popen[str] | None = None
        self.probe = procs.Probe(supervisor_pid=None, redis_port=self.port, extra={"celery": self._worker_pids})

    def _worker_pids(self) -> list[int]:
        if self.worker is None:
            return []
        return [self.worker.pid, *procs.descendants(self.worker.pid, procs.parents())]

    def __enter__(self) -> CeleryPeer:
        # The same persistence as the stack's redis (AOF, everysec), in a scratch directory.
        subprocess.run(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--save", "", "--daemonize", "yes", "--pidfile", str(self.dir / "redis.pid"),
             "--logfile", str(self.dir / "redis.log")],
            check=True,
        )
        _ping_redis(self.port)
        env = dict(os.environ, BENCH_CELERY_REDIS=f"redis://127.0.0.1:{self.port}", PYTHONPATH=str(ROOT))
        celery = str(Path(sys.executable).with_name("celery"))
        self.worker = subprocess.Popen(
            [celery, "-A", "bench.celery_app", "worker", "-c", str(self.concurrency), "-P", "prefork",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"],
            cwd=ROOT, env=env, stdout=open(self.dir / "worker.log", "wb"), stderr=subprocess.STDOUT,
        )
        self.client = subprocess.Popen(
            [sys.executable, "-m", "bench.celery_app"], cwd=ROOT, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.dir / "client.log", "wb"),
        )
        answer = self._ask("ping 1")
        if "error" in answer:
            raise RuntimeError(f"Celery did not answer: {answer['error']} (logs in {self.dir})")
        return self

    def _ask(self, command: str, timeout_s: float = 300.0) -> dict[str, object]:
        assert self.client is not None and self.client.stdin is not None and self.client.stdout is not None
        self.client.stdin.write(command + "\n")
        self.client.stdin.flush()
        ready, _, _ = select.select([self.client.stdout], [], [], timeout_s)
        if not ready:
            self.client.kill()
            return {"error": f"no answer to {command!r} within {timeout_s:.0f} s (killed; logs in {self.dir})"}
        line = self.client.stdout.readline()
        if not line:
            return {"error": f"the Celery client exited (log {self.dir / 'client.log'})"}
        answer: dict[str, object] = json.loads(line)
        return answer

    def run(self, kind: str, n: int) -> PeerResult:
        label = {"chain": f"Celery chain of {n}", "group": f"Celery group of {n}", "chord": f"Celery chord of {n}"}[kind]
        before = self.probe.snapshot(containers=False)
        answer = self._ask(f"{kind} {n}")
        cpu = procs.delta(before, self.probe.snapshot(containers=False))
        wall = answer.get("wall_s")
        error = answer.get("error")
        return PeerResult(
            label, n, float(wall) if isinstance(wall, int | float) else None, cpu, str(error) if error else None
        )

    def __exit__(self, *exc: object | TracebackType | None) -> None:
        if self.client is not None:
            if self.client.stdin is not None:
                self.client.stdin.close()
            try:
                self.client.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.client.kill()
        if self.worker is not None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def docker_run_loop(n: int, image: str, docker_host: str) -> PeerResult:
    """``docker run --rm --network none IMAGE true``, n times in sequence (a chain of cold containers)."""
    probe = procs.Probe(supervisor_pid=None, redis_port=None, docker_host=docker_host)
    env = dict(os.environ, DOCKER_HOST=docker_host)
    command = ["docker", "run", "--rm", "--network", "none", image, "true"]
    first = subprocess.run(command, capture_output=True, text=True, env=env, check=False)  # warm the image cache
    if first.returncode != 0:
        return PeerResult(f"`docker run --rm` x {n}", n, None, error=first.stderr.strip()[-200:])
    before, cli_before = probe.snapshot(containers=False), _children_cpu_s()
    started = time.perf_counter()
    for _ in range(n):
        subprocess.run(command, capture_output=True, env=env, check=True)
    wall = time.perf_counter() - started
    cpu = procs.delta(before, probe.snapshot(containers=False))
    cpu.by_role["docker CLI"] = _children_cpu_s() - cli_before
    return PeerResult(f"`docker run --rm` x {n}", n, wall, cpu)
