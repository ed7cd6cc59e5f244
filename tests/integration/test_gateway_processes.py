"""Several gateway processes serve one port (FLOW_PROCESSES on a stack: FLOW_REUSE_PORT=true).

Two real ``python -m gateway`` processes bind the same loopback port with SO_REUSEPORT; requests
are answered while both run and after one of them is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def gateways(redis_url: str) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    port = free_port()
    env = {
        **os.environ,
        "FLOW_REDIS__URL": redis_url,
        "FLOW_PORT": str(port),
        "FLOW_REUSE_PORT": "true",
        "FLOW_TOKENS": '["processes-token"]',
        "FLOW_POOL_TOKEN": "processes-pool-token",
    }
    procs = [
        subprocess.Popen([sys.executable, "-m", "gateway"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        for _ in range(2)
    ]
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert all(p.poll() is None for p in procs), "a gateway process exited (the port was not shared?)"
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the gateways did not come up"
            time.sleep(0.2)
        time.sleep(1.0)  # the second process binds a moment later
        yield url, procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_two_gateway_processes_share_a_port_and_survive_one_another(
    gateways: tuple[str, list[subprocess.Popen[bytes]]],
) -> None:
    url, procs = gateways
    assert all(p.poll() is None for p in procs), "both processes bound the port"
    headers = {"Authorization": "Bearer processes-token"}
    for _ in range(20):
        # A new connection each time: the kernel spreads them over both processes.
        assert httpx.get(f"{url}/v1/workflows", headers=headers, timeout=10).status_code == 200
    procs[0].kill()
    procs[0].wait(10)
    for _ in range(20):
        assert httpx.get(f"{url}/v1/workflows", headers=headers, timeout=10).status_code == 200
