"""A private stack for chaos runs: the Procfile under ``scripts/supervise.py``, its own redis-server,
ports, pool token, work directory and pool service id, all under one directory of ``.flow/``.

The development stack (``make up``) is left alone, and the reverse: ``make down`` never touches
this stack's containers (another ``FLOW_SERVICE_ID``).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.procs import cmdline, descendants, module_role, parents, redis_pids
from bench.stack import docker_host, healthy

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class PrivateStack:
    home: Path
    gateway_port: int
    pool_port: int
    redis_port: int
    service_id: str
    workers: int = 2
    supervisor: subprocess.Popen[bytes] | None = None

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def pool_url(self) -> str:
        return f"http://127.0.0.1:{self.pool_port}"

    @property
    def token_file(self) -> Path:
        return self.home / "pool.token"

    def env_lines(self) -> list[str]:
        host = docker_host()
        return [
            f"FLOW_REDIS__URL=redis://127.0.0.1:{self.redis_port}/0",
            f"FLOW_PORT={self.gateway_port}",
            f"FLOW_POOL_PORT={self.pool_port}",
            f"FLOW_POOL__URL={self.pool_url}",
            f"FLOW_SERVICE_ID={self.service_id}",
            f"FLOW_POOL_TOKEN_FILE={self.token_file}",
            f"FLOW_WORK_DIR={self.home / 'pool'}",
            f"DOCKER_HOST={host}",
            f"FLOW_DOCKER_HOST={host}",
            "PYTHONUNBUFFERED=1",
        ]

    def start_redis(self) -> None:
        (self.home / "redis").mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(self.home / "redis"),
             "--appendonly", "yes", "--appendfsync", "everysec", "--daemonize", "yes",
             "--logfile", str(self.home / "redis.log")],
            check=True,
        )
        deadline = time.monotonic() + 20
        while subprocess.run(["redis-cli", "-p", str(self.redis_port), "ping"], capture_output=True,
                             check=False).stdout.strip() != b"PONG":
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {self.redis_port} did not start: see {self.home / 'redis.log'}")
            time.sleep(0.1)

    def up(self, timeout_s: float = 90) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if not redis_pids(self.redis_port):
            self.start_redis()
        if not self.token_file.exists():
            fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32) + "\n")
        env_file = self.home / "stack.env"
        env_file.write_text("\n".join(self.env_lines()) + "\n")
        env_file.chmod(0o600)
        command = [sys.executable, str(ROOT / "scripts" / "supervise.py"), "-f", "Procfile", "-e", str(env_file)]
        if self.workers > 1:
            command += ["-c", f"worker={self.workers}"]
        with open(self.home / "stack.log", "ab") as log:
            self.supervisor = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                               start_new_session=True)
        self.wait_healthy(timeout_s)

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not (healthy(f"{self.gateway_url}/healthz") and healthy(f"{self.pool_url}/healthz")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the stack did not come up: see {self.home / 'stack.log'}")
            if self.supervisor is not None and self.supervisor.poll() is not None:
                raise RuntimeError(f"the supervisor exited: see {self.home / 'stack.log'}")
            time.sleep(0.3)

    def pids(self) -> dict[str, list[int]]:
        """The stack's processes by role (gateway, worker, pool, scheduler), children of its supervisor."""
        if self.supervisor is None:
            return {}
        parent_of = parents()
        out: dict[str, list[int]] = {}
        for pid in sorted(descendants(self.supervisor.pid, parent_of)):
            role = module_role(cmdline(pid))
            if role is not None and role != "supervisor":
                out.setdefault(role, []).append(pid)
        return out

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM the supervisor (each process stops as it would in production), then redis."""
        if self.supervisor is not None and self.supervisor.poll() is None:
            self.supervisor.send_signal(signal.SIGTERM)
            try:
                self.supervisor.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.supervisor.pid, signal.SIGKILL)
                self.supervisor.wait()
        subprocess.run(["redis-cli", "-p", str(self.redis_port), "shutdown", "nosave"], capture_output=True,
                       check=False)

    def containers(self) -> list[str]:
        env = dict(os.environ, DOCKER_HOST=docker_host())
        return subprocess.run(
            ["docker", "ps", "-aq", "--filter", "label=io.agentainer.flow=1",
             "--filter", f"label=io.agentainer.flow.service={self.service_id}"],
            capture_output=True, text=True, env=env, check=False,
        ).stdout.split()

    def remove_containers(self, ids: list[str]) -> None:
        if ids:
            env = dict(os.environ, DOCKER_HOST=docker_host())
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, env=env, check=False)
