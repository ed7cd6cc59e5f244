"""Engine cost at scale, on a private stack: ``python -m bench.engine_scale [--maps 100,1000]``.

Starts its own redis-server, pool, gateway and one worker on free ports (service id ``bench-engine-*``),
then measures: a 40-step chain (wall time, worker CPU per step, CPU of every process per step), maps of
the given sizes (items/s, worker CPU per item) and the idle worker's CPU. CPU comes from
``/proc/PID/stat`` (utime + stime). Prints one line per figure; no timing assertions anywhere.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "agentainer-flow/python:3.11"
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def _ts(value: str | None) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else 0.0


class Stack:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.redis_port, self.gateway_port, self.pool_port = free_port(), free_port(), free_port()
        self.service_id = f"bench-engine-{secrets.token_hex(3)}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def env(self) -> dict[str, str]:
        host = os.environ.get("DOCKER_HOST") or (ROOT / ".flow" / "docker_host").read_text().strip()
        token = self.home / "pool.token"
        if not token.exists():
            token.write_text(secrets.token_urlsafe(32) + "\n")
            token.chmod(0o600)
        return dict(
            os.environ,
            FLOW_REDIS__URL=f"redis://127.0.0.1:{self.redis_port}/0",
            FLOW_PORT=str(self.gateway_port),
            FLOW_POOL_PORT=str(self.pool_port),
            FLOW_POOL__URL=f"http://127.0.0.1:{self.pool_port}",
            FLOW_SERVICE_ID=self.service_id,
            FLOW_POOL_TOKEN_FILE=str(token),
            FLOW_WORK_DIR=str(self.home / "pool"),
            DOCKER_HOST=host,
            FLOW_DOCKER_HOST=host,
            PYTHONUNBUFFERED="1",
            FLOW_LOG_LEVEL="WARNING",
        )

    def up(self) -> None:
        env = self.env()
        (self.home / "redis").mkdir(exist_ok=True)
        self._spawn("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                              "--dir", str(self.home / "redis"), "--appendonly", "yes", "--save", ""], env)
        for name in ("pool", "gateway", "worker"):
            module = "workers" if name == "worker" else name
            self._spawn(name, [sys.executable, "-m", module], env)
        deadline = time.monotonic() + 60
        for url in (f"http://127.0.0.1:{self.gateway_port}/healthz", f"http://127.0.0.1:{self.pool_port}/healthz"):
            while True:
                try:
                    if httpx.get(url, timeout=2).status_code < 300:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    sys.exit(f"stack did not come up: see {self.home}")
                time.sleep(0.3)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.procs[name] = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)

    def command_counts(self) -> dict[str, int]:
        """Calls per Redis command so far (INFO commandstats)."""
        out = subprocess.run(["redis-cli", "-p", str(self.redis_port), "info", "commandstats"],
                             capture_output=True, text=True, check=True).stdout
        counts: dict[str, int] = {}
        for line in out.splitlines():
            if line.startswith("cmdstat_"):
                name, rest = line[len("cmdstat_"):].split(":", 1)
                counts[name] = int(rest.split("calls=")[1].split(",")[0])
        return counts

    def cpu(self) -> dict[str, float]:
        return {name: cpu_s(p.pid) for name, p in self.procs.items()}

    def down(self) -> None:
        for name in ("worker", "gateway", "pool", "redis"):
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        env = self.env()
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=io.agentainer.flow.service={self.service_id}"],
                             capture_output=True, text=True, env=env, check=False).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, env=env, check=False)


def chain(n: int) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for i in range(n):
        step: dict[str, Any] = {"id": f"s{i}", "image": IMAGE, "command": "echo 1", "mode": "agent",
                                "pool": {"min_size": 1, "max_size": 2}}
        if i:
            step["depends_on"] = [f"s{i - 1}"]
        steps.append(step)
    return {"name": "engine-chain", "config": {"max_parallel": 10}, "steps": steps}


def fan_map(n: int, concurrency: int) -> dict[str, Any]:
    step = {"id": "m", "type": "map", "items": "input.items", "image": IMAGE, "command": "echo 1", "mode": "agent",
            "max_concurrency": concurrency, "pool": {"min_size": concurrency, "max_size": concurrency}}
    return {"name": "engine-map", "input": {"items": list(range(n))}, "config": {"max_parallel": concurrency},
            "steps": [step]}


def run(client: httpx.Client, stack: Stack, definition: dict[str, Any], poll_s: float) -> tuple[float, dict[str, float]]:
    """Wall time (created -> finished, from the record) and CPU seconds per process while it ran."""
    before = stack.cpu()
    r = client.post("/v1/workflows", params={"start": "true"}, json=definition)
    r.raise_for_status()
    wf_id = r.json()["id"]
    while True:
        time.sleep(poll_s)
        body = client.get("/v1/workflows", params={"limit": 1}).json()  # cheap: no tasks
        summary = next((w for w in body.get("workflows", body.get("items", [])) if w.get("id") == wf_id), None)
        status = summary["status"] if summary else client.get(f"/v1/workflows/{wf_id}").json()["status"]
        if status in ("completed", "failed", "cancelled"):
            break
    after = stack.cpu()
    full = client.get(f"/v1/workflows/{wf_id}").json()
    if full["status"] != "completed":
        raise SystemExit(f"workflow {wf_id} ended {full['status']}: {full.get('error')}")
    wall = _ts(full["finished_at"]) - _ts(full["created_at"])
    return wall, {k: after[k] - before[k] for k in after}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--maps", default="100,1000")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--chain", type=int, default=40)
    parser.add_argument("--profile", help="write py-spy's collapsed stacks of the worker during the chains here")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="engine-scale-"))
    stack = Stack(home)
    try:
        stack.up()
        headers = {"Authorization": "Bearer default-token"}
        with httpx.Client(base_url=f"http://127.0.0.1:{stack.gateway_port}", headers=headers, timeout=120) as client:
            run(client, stack, chain(3), 0.05)  # warm the pools
            run(client, stack, fan_map(args.concurrency * 2, args.concurrency), 0.05)
            walls: list[float] = []
            spy = None
            if args.profile:
                spy = subprocess.Popen(["py-spy", "record", "-p", str(stack.procs["worker"].pid), "-o", args.profile,
                                        "--format", "raw", "-r", "250"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
                time.sleep(1)
            for _ in range(3):
                wall, cpu = run(client, stack, chain(args.chain), 0.05)
                walls.append(wall)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=30)
            per_step = {k: v * 1000 / args.chain for k, v in cpu.items()}
            calls = stack.command_counts()
            wall, cpu = run(client, stack, chain(args.chain), 0.05)
            calls = {c: n - calls.get(c, 0) for c, n in stack.command_counts().items() if n - calls.get(c, 0)}
            print(f"chain{args.chain}: Redis commands per step {sum(calls.values()) / args.chain:.1f}: "
                  + ", ".join(f"{c} {n / args.chain:.1f}" for c, n in sorted(calls.items(), key=lambda x: -x[1])))
            print(f"chain{args.chain}: wall {min(walls):.2f}s (runs {', '.join(f'{w:.2f}' for w in walls)}); "
                  f"CPU ms/step: " + ", ".join(f"{k} {v:.1f}" for k, v in per_step.items())
                  + f", total {sum(per_step.values()):.1f}")
            for n in (int(x) for x in args.maps.split(",") if x):
                wall, cpu = run(client, stack, fan_map(n, args.concurrency), 0.5 if n > 500 else 0.1)
                per_item = {k: v * 1000 / n for k, v in cpu.items()}
                print(f"map{n}: {n / wall:.1f} items/s (wall {wall:.2f}s); CPU ms/item: "
                      + ", ".join(f"{k} {v:.1f}" for k, v in per_item.items()) + f", total {sum(per_item.values()):.1f}")
            time.sleep(2)
            pid = stack.procs["worker"].pid
            c0, t0 = cpu_s(pid), time.monotonic()
            time.sleep(10)
            print(f"idle worker: {(cpu_s(pid) - c0) / (time.monotonic() - t0) * 100:.2f}% of a core")
    finally:
        stack.down()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
