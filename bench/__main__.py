"""``python -m bench``: measure a running stack side by side with its peers and write BENCHMARKS.md.

In one run on this machine: the 40-step chain (ours in agent mode, Celery's 40-task chain, a cold
``docker run --rm`` loop), maps of 100 / 1,000 / 10,000 items, 1, 5 and 20 concurrent chains, 500
concurrent two-step workflows, a 200-step SDK workflow, idle CPU, dispatch latency; each with CPU per
task per process (``/proc/PID/stat`` before and after). Celery and its redis-server are started here
(``pip install -e '.[bench]'``). Goals are printed as ratios next to the figures; nothing fails when a
goal is missed, and a scenario that outlives its cap is cancelled and reported as such.

``make bench`` runs it against the development stack; ``python -m bench.stack up`` starts a private
one on other ports and prints the arguments that point this at it.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

from pydantic import SecretStr

from bench import admission, peers, procs, report, scenarios, workflows
from bench import dispatch as dispatch_mod
from bench import waits as bench_waits
from bench.runner import Watcher
from bench.sections import keep_others
from flowcore import pooltoken


def ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args() -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=env("FLOW_URL", "http://127.0.0.1:8081"))
    p.add_argument("--pool-url", default=env("FLOW_POOL__URL", "http://127.0.0.1:8090"))
    p.add_argument("--redis-url", default=env("FLOW_REDIS__URL", "redis://127.0.0.1:6390/0"),
                   help="the stack's Redis (its port finds the redis-server whose CPU is counted)")
    p.add_argument("--token", default=env("FLOW_TOKEN", "default-token"))
    p.add_argument("--pool-token-file", default=env("FLOW_POOL_TOKEN_FILE", ".flow/pool.token"))
    p.add_argument("--supervisor-pidfile", default=".flow/supervise.pid",
                   help="scripts/supervise.py of the stack: its children are the processes measured")
    p.add_argument("--service-id", default=env("FLOW_SERVICE_ID", "pool-1"), help="the pool's, labels its containers")
    p.add_argument("--docker-host", default=None, help="default: DOCKER_HOST, else .flow/docker_host")
    p.add_argument("--chain", type=int, default=40)
    p.add_argument("--chain-repeat", type=int, default=3)
    p.add_argument("--map-sizes", type=ints, default=[100, 1000, 10000])
    p.add_argument("--max-map-items", type=int, default=None, help="a larger map runs with this many items instead")
    p.add_argument("--map-cap-s", type=float, default=150.0, help="wall-time cap of each map; then it is cancelled")
    p.add_argument("--map-concurrency", type=int, default=8)
    p.add_argument("--concurrent-chains", type=ints, default=[1, 5, 20])
    p.add_argument("--two-step", type=int, default=500, help="concurrent two-step workflows (0: skip)")
    p.add_argument("--batch-cap-s", type=float, default=150.0, help="wall-time cap of each concurrency scenario")
    p.add_argument("--sdk-cap-s", type=float, default=180.0)
    p.add_argument("--idle-s", type=float, default=5.0)
    p.add_argument("--dispatch-n", type=int, default=30)
    p.add_argument("--celery-groups", type=ints, default=[100, 200, 1000])
    p.add_argument("--no-celery", action="store_true")
    p.add_argument("--docker-loop", type=int, default=40, help="cold `docker run --rm` loop length (0: skip)")
    p.add_argument("--quiet-timeout-s", type=float, default=60.0,
                   help="wait this long for the stack's pending and running workflows to finish first")
    p.add_argument("--admission-n", type=int, default=500, help="starts per admission scenario (0: skip)")
    p.add_argument("--waits-n", type=int, default=30, help="waiting runs woken by events (0: skip)")
    p.add_argument("--out", default="BENCHMARKS.md")
    return p.parse_args()


def docker_host(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    saved = Path(".flow/docker_host")
    return saved.read_text().strip() if saved.exists() else "unix:///var/run/docker.sock"


def supervisor_pid(pidfile: str) -> int | None:
    try:
        pid = int(Path(pidfile).read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def revision() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout
        return head.strip() + (" with uncommitted changes" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def busy_note(busy: int) -> str:
    if not busy:
        return ""
    return (f"\n**{busy} workflow(s) of someone else were pending or running on the stack when the bench started: "
            "the figures include their work.**")


def log(message: str) -> None:
    print(f"{datetime.now().strftime('%H:%M:%S')} {message}", flush=True)


def main() -> None:
    args = parse_args()
    # SIGTERM (a timeout, an impatient caller) unwinds like Ctrl-C: Celery and its redis-server are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    engine = docker_host(args.docker_host)
    pool_headers = pooltoken.bearer(
        pooltoken.resolve(SecretStr(os.environ.get("FLOW_POOL_TOKEN", "")), args.pool_token_file)
    )
    headers = {"Authorization": f"Bearer {args.token}"}
    sup = supervisor_pid(args.supervisor_pidfile)
    probe = procs.Probe(sup, urlparse(args.redis_url).port or 6379, engine, args.service_id)
    found = probe.found()
    log(f"stack {args.url}: processes {found}" + ("" if sup else f" (no live supervisor in {args.supervisor_pidfile}: "
                                                  "only Redis and the engine are measured)"))
    sizes = sorted({min(n, args.max_map_items) if args.max_map_items else n for n in args.map_sizes})

    with Watcher(args.url, headers) as watcher:
        stack = scenarios.Stack(args.url, headers, probe, watcher, client_timeout_s=max(args.map_cap_s, 120.0))
        busy = stack.wait_quiet(args.quiet_timeout_s)
        if busy:
            log(f"WARNING: {busy} workflow(s) still pending or running on the stack: figures include their work")
        log("warm-up ...")
        stack.measure("warm-up", "warm-up", [workflows.chain(3)], 3, 60)
        time.sleep(1.0)
        log(f"idle CPU over {args.idle_s:.0f} s ...")
        idle = stack.idle(args.idle_s)
        log("dispatch latency through the pool service ...")
        dispatch = dispatch_mod.measure_all(args.pool_url, pool_headers, args.dispatch_n)
        log(f"{args.chain}-step chain x {args.chain_repeat} ...")
        chain, chain_own = scenarios.chain_runs(stack, args.chain, args.chain_repeat, args.batch_cap_s)
        celery: list[scenarios.Result] = []
        if not args.no_celery:
            log("Celery (its own redis-server, prefork -c 2) ...")
            celery = scenarios.celery_runs(args.chain, args.chain_repeat, args.celery_groups, 200, log)
        loop: scenarios.Result | None = None
        if args.docker_loop:
            log(f"cold `docker run --rm` x {args.docker_loop} ...")
            loop = scenarios.from_peer(peers.docker_run_loop(args.docker_loop, workflows.IMAGE, engine))
        log("concurrency ...")
        concurrency = scenarios.concurrency_runs(stack, args.concurrent_chains, args.chain, args.two_step,
                                                 args.batch_cap_s, log)
        log("200-step SDK workflow ...")
        sdk = scenarios.sdk_run(stack, args.sdk_cap_s)
        log("maps ...")
        maps = scenarios.map_runs(stack, sizes, args.map_concurrency, args.map_cap_s, log)

    celery_chain = next((r for r in celery if "chain" in r.label and r.per_s), None)
    celery_groups = [r for r in celery if "group" in r.label or "chord" in r.label]
    idle_worker = 100.0 * idle.by_role.get("worker", 0.0) / args.idle_s if "worker" in found else None
    goal_rows = report.goals(chain, celery_chain, maps, celery_groups, idle_worker, dispatch, sdk)
    text = render(args, found, [chain, chain_own], celery, loop, maps, concurrency, sdk, idle, dispatch, goal_rows,
                  time.monotonic() - started, busy)
    out = Path(args.out)
    out.write_text(keep_others(out.read_text() if out.exists() else "", text))
    print(text)
    if args.admission_n:  # its own redis-server: the cost of flow control's admission (ADR 013)
        log(f"admission: {args.admission_n} starts per scenario ...")
        print(admission.run(args.admission_n, out=args.out))
    if args.waits_n:  # event -> resumed step latency of waiting runs (ADR 012), on the stack measured
        log(f"waits: {args.waits_n} runs woken by events ...")
        print(bench_waits.run(args.url, args.token, args.waits_n, out=args.out))


def render(
    args: argparse.Namespace, found: dict[str, int], chains: list[scenarios.Result], celery: list[scenarios.Result],
    loop: scenarios.Result | None, maps: list[scenarios.Result], concurrency: list[scenarios.Result],
    sdk: scenarios.Result, idle: procs.Delta, dispatch: dict[str, list[float]], goal_rows: list[report.Goal],
    took_s: float, busy: int,
) -> str:
    celery_chain = [r for r in celery if "chain" in r.label or r.label == "Celery"]
    chain_rows = [*chains, *celery_chain, *([loop] if loop else [])]
    processes = ", ".join(f"{role} {n}" for role, n in found.items())
    return f"""# Benchmarks

Measured by `make bench` on {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")} ({took_s / 60:.1f} min), {platform.machine()},
{os.cpu_count()} cores, revision {revision()}. Everything (Redis, Docker engine, gateway, worker, pool, Celery and its
redis-server, this client) ran on the same machine; figures from a noisy shared machine: compare ratios
within one run. Processes measured: {processes}.{busy_note(busy)}

CPU columns are milliseconds of CPU per finished task (step, map item, Celery task), from
`/proc/PID/stat` (utime + stime) before and after each scenario, per process role: `supervisor` is
scripts/supervise.py relaying the processes' logs, `containers` the stack's containers (their cgroups;
containers removed during a run are not counted), `engine` dockerd + containerd (shared with other
stacks, left out of "all" for our rows). The bench client's own CPU is never counted, ours or Celery's.

## Goals (issues 10 and 11)

{report.goals_table(goal_rows)}

## The {args.chain}-step chain: ours, Celery, cold containers

Ours: {args.chain} steps of `echo 1` in agent mode, submit -> final event; "warm pool": the image's
containers are already running (pool scope image, as Celery's workers are already running), median of
{args.chain_repeat} runs (tasks and CPU over all runs; the goal's row); "own pool": the default scope, the
workflow starts its first container. Celery: a `chain()` of {args.chain} no-op tasks (prefork -c 2, its own
redis-server, `.get()`), median of {args.chain_repeat}. Cold: `docker run --rm --network none IMAGE true`
{args.docker_loop} times in sequence.

{report.cpu_table(chain_rows, "run")}

## Maps (one map step of `echo 1` items, max_concurrency {args.map_concurrency}) and Celery groups

The map's {args.map_concurrency} containers are warm (pool scope image, started by a small map first). Each map is capped at {args.map_cap_s:.0f} s (`--map-cap-s`; `--max-map-items N` shrinks the larger maps to N items): a capped
map is cancelled and its rate is that of the items finished within the cap.

{report.cpu_table([*maps, *[r for r in celery if r not in celery_chain]], "run")}

## Concurrency

Workflows submitted at once from 8 client threads; latency = one workflow's submission -> its final event.

{report.cpu_table(concurrency, "run", ["workflow latency p50 / p95 ms"])}

## A decorated SDK workflow (Python-function steps)

{report.cpu_table([sdk], "run")}

## Idle CPU over {args.idle_s:.0f} s (no work submitted)

{report.idle_table(idle.by_role, args.idle_s, idle.pids)}

## Dispatch latency of one trivial task (pool service round trip, ms)

{report.dispatch_table(dispatch)}
"""


if __name__ == "__main__":
    main()
