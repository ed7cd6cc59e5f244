"""The real stack for end-to-end tests: redis-server (AOF on), the pool service, arq workers and the
gateway, each a real process started as the Procfile starts it, on free loopback ports.

``stack`` is session-scoped; tests isolate themselves by the workflows they create. Extra workers
(for the takeover test) come from :meth:`Stack.start_worker`.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.e2e.chromium import Browser, Page, find_chromium
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
TOKEN = "default-token"


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    handle: Any = None

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.handle is not None:
            self.handle.close()
            self.handle = None


@dataclass
class Stack:
    url: str
    token: str
    redis_url: str
    pool_url: str
    service_id: str
    docker_host: str
    workdir: Path
    env: dict[str, str]
    pool_token: str = ""
    procs: list[Proc] = field(default_factory=list)

    def spawn(self, name: str, module: str, extra: dict[str, str] | None = None) -> Proc:
        log = self.workdir / f"{name}.log"
        handle = open(log, "ab")  # noqa: SIM115 - lives as long as the process
        popen = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=REPO,
            env={**self.env, **(extra or {})},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        proc = Proc(name, popen, log, handle)
        self.procs.append(proc)
        return proc

    def start_worker(self, name: str | None = None) -> Proc:
        return self.spawn(name or f"worker-{len(self.procs)}", "workers")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} (exit {p.popen.poll()})\n{p.tail()}" for p in self.procs)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def pool_headers(self) -> dict[str, str]:
        """For a test that talks to a pool service directly, as the workers and the gateway do."""
        return {"Authorization": f"Bearer {self.pool_token}"}


def _wait_healthy(url: str, procs: list[Proc], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in procs:
            if p.popen.poll() is not None:
                raise RuntimeError(f"{p.name} exited with {p.popen.returncode}:\n{p.tail()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become healthy:\n" + "\n".join(p.tail() for p in procs))


@pytest.fixture(scope="session")
def stack(docker_host: str, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("stack")
    redis_port, pool_port, gw_port = free_port(), free_port(), free_port()
    redis_proc = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(workdir),
         "--appendonly", "yes", "--save", "", "--logfile", str(workdir / "redis.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    client = redis.Redis.from_url(redis_url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    service_id = f"e2e-{uuid.uuid4().hex[:8]}"
    pool_token = secrets.token_urlsafe(32)  # every process of the stack gets it, as scripts/stack.sh does
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("FLOW_")
    } | {
        "DOCKER_HOST": docker_host,
        "FLOW_REDIS__URL": redis_url,
        "FLOW_PORT": str(gw_port),
        "FLOW_POOL_PORT": str(pool_port),
        "FLOW_POOL__URL": f"http://127.0.0.1:{pool_port}",
        "FLOW_SERVICE_ID": service_id,
        "FLOW_POOL_TOKEN": pool_token,
        "FLOW_WORK_DIR": str(workdir / "pool"),
        "FLOW_DOCKER_HOST": docker_host,
        "FLOW_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        # As on a development stack (scripts/stack.sh): some example steps read the gateway on loopback.
        "FLOW_POLICY__ALLOW_HOST_NETWORK": "true",
        "FLOW_POLICY__ALLOWED_NETWORKS": '["none","host"]',
    }
    st = Stack(
        url=f"http://127.0.0.1:{gw_port}",
        token=TOKEN,
        redis_url=redis_url,
        pool_url=f"http://127.0.0.1:{pool_port}",
        service_id=service_id,
        docker_host=docker_host,
        workdir=workdir,
        env=env,
        pool_token=pool_token,
    )
    try:
        pool = st.spawn("pool", "pool")
        _wait_healthy(f"{st.pool_url}/healthz", [pool])
        st.start_worker("worker")
        # Two schedulers, as a production stack may run: each fire must still happen once.
        st.spawn("scheduler", "scheduler")
        st.spawn("scheduler-2", "scheduler")
        gateway = st.spawn("gateway", "gateway")
        _wait_healthy(f"{st.url}/healthz", [gateway])
        yield st
    finally:
        for p in reversed(st.procs):
            p.stop()
        client.close()
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        leftover = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=io.agentainer.flow.service={service_id}"],
            env={**os.environ, "DOCKER_HOST": docker_host},
            capture_output=True,
            text=True,
        ).stdout.split()
        if leftover:
            subprocess.run(["docker", "rm", "-f", *leftover], env={**os.environ, "DOCKER_HOST": docker_host})
            pytest.fail(f"the pool service left {len(leftover)} containers behind: {leftover}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Headless Chromium for a module's browser tests (a missing Chromium fails them, never skips)."""
    binary = find_chromium()
    if binary is None:
        pytest.fail("chromium is not installed: run `make bootstrap` (it installs Debian's chromium)")
    chromium = Browser(binary, tmp_path_factory.mktemp("chromium")).start()
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A tab of that browser, closed after the test (tests/e2e/test_dashboard.py keeps a screenshot too)."""
    tab = browser.new_page()
    try:
        yield tab
    finally:
        tab.close()
