"""A private stack for benchmarking next to the development one: ``python -m bench.stack up|down|status``.

It runs the same Procfile under ``scripts/supervise.py`` as ``make up`` does, on other ports, with its
own redis-server, pool token, work directory and ``FLOW_SERVICE_ID`` (so ``make down`` of the
development stack never touches its containers, and the reverse). Everything it owns lives in
``.flow/bench-stack/``. ``up`` prints the arguments that point ``python -m bench`` at it.

The Docker engine is the development one (``.flow/docker_host``); nothing here starts one.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".flow" / "bench-stack"
SUPERVISOR_PIDFILE = HOME / "supervise.pid"
REDIS_PIDFILE = HOME / "redis.pid"


def docker_host() -> str:
    saved = ROOT / ".flow" / "docker_host"
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    return saved.read_text().strip() if saved.exists() else "unix:///var/run/docker.sock"


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status < 300)
    except Exception:
        return False


def alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def env_lines(args: argparse.Namespace) -> list[str]:
    host = docker_host()
    return [
        f"FLOW_REDIS__URL=redis://127.0.0.1:{args.redis_port}/0",
        f"FLOW_PORT={args.gateway_port}",
        f"FLOW_POOL_PORT={args.pool_port}",
        f"FLOW_POOL__URL=http://127.0.0.1:{args.pool_port}",
        f"FLOW_SERVICE_ID={args.service_id}",
        f"FLOW_POOL_TOKEN_FILE={HOME / 'pool.token'}",
        f"FLOW_WORK_DIR={HOME / 'pool'}",
        f"DOCKER_HOST={host}",
        f"FLOW_DOCKER_HOST={host}",
        "PYTHONUNBUFFERED=1",
    ]


def up(args: argparse.Namespace) -> None:
    HOME.mkdir(parents=True, exist_ok=True)
    (HOME / "redis").mkdir(exist_ok=True)
    if alive(REDIS_PIDFILE) is None:
        subprocess.run(
            ["redis-server", "--port", str(args.redis_port), "--bind", "127.0.0.1", "--dir", str(HOME / "redis"),
             "--appendonly", "yes", "--daemonize", "yes", "--pidfile", str(REDIS_PIDFILE),
             "--logfile", str(HOME / "redis.log")],
            check=True,
        )
    token = HOME / "pool.token"
    if not token.exists():
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    env_file = HOME / "stack.env"
    env_file.write_text("\n".join(env_lines(args)) + "\n")
    env_file.chmod(0o600)
    if alive(SUPERVISOR_PIDFILE) is None:
        command = [sys.executable, str(ROOT / "scripts" / "supervise.py"), "-f", "Procfile", "-e", str(env_file)]
        if args.workers > 1:
            command += ["-c", f"worker={args.workers}"]
        with open(HOME / "stack.log", "ab") as log:
            child = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        SUPERVISOR_PIDFILE.write_text(f"{child.pid}\n")
    gateway, pool = f"http://127.0.0.1:{args.gateway_port}", f"http://127.0.0.1:{args.pool_port}"
    deadline = time.monotonic() + 60
    while not (healthy(f"{gateway}/healthz") and healthy(f"{pool}/healthz")):
        if time.monotonic() > deadline or alive(SUPERVISOR_PIDFILE) is None:
            sys.exit(f"the bench stack did not come up: see {HOME / 'stack.log'}")
        time.sleep(0.5)
    print(
        f"bench stack up. Run:\n  .venv/bin/python -m bench --url {gateway} --pool-url {pool} "
        f"--redis-url redis://127.0.0.1:{args.redis_port}/0 --service-id {args.service_id} "
        f"--pool-token-file {token} --supervisor-pidfile {SUPERVISOR_PIDFILE}"
    )


def down(args: argparse.Namespace) -> None:
    pid = alive(SUPERVISOR_PIDFILE)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while alive(SUPERVISOR_PIDFILE) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        try:
            os.killpg(pid, signal.SIGKILL)  # children that ignored the SIGTERM (own session since up)
        except OSError:
            pass
    SUPERVISOR_PIDFILE.unlink(missing_ok=True)
    env = dict(os.environ, DOCKER_HOST=docker_host())
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "label=io.agentainer.flow=1",
         "--filter", f"label=io.agentainer.flow.service={args.service_id}"],
        capture_output=True, text=True, env=env, check=False,
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, env=env, check=False)
    redis_pid = alive(REDIS_PIDFILE)
    if redis_pid is not None:
        subprocess.run(["redis-cli", "-p", str(args.redis_port), "shutdown", "nosave"], capture_output=True, check=False)
        deadline = time.monotonic() + 10
        while alive(REDIS_PIDFILE) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
    REDIS_PIDFILE.unlink(missing_ok=True)
    # The next `up` starts empty: workflows left running (a capped map being cancelled) would be
    # taken over after a restart and measured with the next run.
    shutil.rmtree(HOME / "redis", ignore_errors=True)
    print(f"bench stack down ({len(ids)} container(s) removed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--gateway-port", type=int, default=8181)
    parser.add_argument("--pool-port", type=int, default=8190)
    parser.add_argument("--redis-port", type=int, default=6490)
    parser.add_argument("--service-id", default="pool-bench")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (supervise.py -c worker=N)")
    args = parser.parse_args()
    if args.action == "up":
        up(args)
    elif args.action == "down":
        down(args)
    else:
        print(f"supervisor: {alive(SUPERVISOR_PIDFILE) or 'not running'}; redis: {alive(REDIS_PIDFILE) or 'not running'}")
        print(f"gateway: {healthy(f'http://127.0.0.1:{args.gateway_port}/healthz')}, "
              f"pool: {healthy(f'http://127.0.0.1:{args.pool_port}/healthz')}")


if __name__ == "__main__":
    main()
