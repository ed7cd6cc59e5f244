"""Two pool services on one engine; one is killed mid-run and its tasks finish on the other."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.e2e.conftest import Stack, _wait_healthy, free_port
from tests.e2e.flowhttp import IMAGE, brief, steps_by_id, submit, wait

# A pool key of its own (the pids limit) so that only the second service holds it warm; shared across
# workflows (scope "image", an explicit opt-in) so that the prewarm's containers serve the workflow.
RESOURCES = {"pids": 77}
POOL = {"min_size": 2, "max_size": 4, "scope": "image"}


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, headers=stack.headers(), timeout=60) as c:
        yield c


def test_killed_pool_service_is_routed_around(client: httpx.Client, stack: Stack) -> None:
    port = free_port()
    service_b = f"{stack.service_id}-b"
    pool_b = stack.spawn(
        "pool-b",
        "pool",
        {"FLOW_POOL_PORT": str(port), "FLOW_SERVICE_ID": service_b, "FLOW_WORK_DIR": str(stack.workdir / "pool-b")},
    )
    url_b = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(f"{url_b}/healthz", [pool_b])
        warm = httpx.post(
            f"{url_b}/v1/tasks",
            json={"task_id": "prewarm", "workflow_id": "prewarm", "step_id": "s", "image": IMAGE,
                  "command": "true", "resources": RESOURCES, "pool": POOL},
            headers=stack.pool_headers(),
            timeout=120,
        )
        assert warm.status_code == 200 and warm.json()["ok"], warm.text
        r = redis.Redis.from_url(stack.redis_url)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the registration advertises its warm containers
            raw = r.hget("flow:pools:services", service_b)
            if raw and any(idle > 0 for idle in json.loads(raw).get("warm", {}).values()):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"pool-b never advertised a warm container: {raw!r}")

        step = {
            "id": "fan", "type": "parallel", "replicas": 4, "image": IMAGE,
            "command": ["python3", "-c", "import time; time.sleep(3); print(1)"],
            "resources": RESOURCES, "pool": POOL,
        }
        wf_id = submit(client, {"name": "failover", "config": {"max_parallel": 4}, "steps": [step]})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tasks = steps_by_id(client.get(f"/v1/workflows/{wf_id}").json())["fan"]["tasks"]
            if sum(t["status"] == "running" for t in tasks) == 4:
                break
            time.sleep(0.05)
        time.sleep(0.5)
        pool_b.popen.send_signal(signal.SIGKILL)
        body = wait(client, wf_id, timeout_s=90)
        tasks = steps_by_id(body)["fan"]["tasks"]
        assert body["status"] == "completed", brief(body) + "\n" + json.dumps(tasks[-1])[:1500] + stack.logs()
        # Some ran on pool-b and moved: their dispatch met the dead pool service and went again.
        stream = client.get(f"/v1/workflows/{wf_id}/events", timeout=30).text
        moved = [line for line in stream.splitlines() if "unreachable" in line or "container_lost" in line
                 or "taken_over" in line]
        assert moved, brief(body)
        assert {t["pool_service"] for t in tasks} == {stack.service_id}
        assert all(t["attempt"] == 1 for t in tasks)  # a lost pool spends no retry attempt
    finally:
        pool_b.stop(signal.SIGKILL)
        env = {**os.environ, "DOCKER_HOST": stack.docker_host}
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=io.agentainer.flow.service={service_b}"],
            env=env, capture_output=True, text=True,
        ).stdout.split()
        if ids:  # a killed pool service cannot clean up; a restart would adopt or remove these
            subprocess.run(["docker", "rm", "-f", *ids], env=env, capture_output=True)
