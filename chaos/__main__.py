"""``python -m chaos`` (``make chaos``): a bounded run that kills and restarts each process of a private
stack at random moments during a mixed workload, then counts what was stuck, lost, duplicated or
leaked, and writes the counts to BENCHMARKS.md (section ``chaos``).

It exits non-zero when anything was stuck, lost, failed, duplicated, missing or leaked.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import threading
import time
from datetime import UTC, datetime

import httpx

from bench.sections import upsert
from chaos.faults import Injector
from chaos.stack import ROOT, PrivateStack
from chaos.verdict import FINISHED, Observed, Verdict, fault_summary, judge
from chaos.workload import Submitter, observe

SCENARIOS = ("mixed", "sentinel", "all")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=90.0, help="how long faults and submissions go on")
    parser.add_argument("--drain-s", type=float, default=240.0, help="then, how long everything may take to finish")
    parser.add_argument("--interval-s", type=float, default=1.0, help="between two submissions")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gateway-port", type=int, default=8281)
    parser.add_argument("--pool-port", type=int, default=8290)
    parser.add_argument("--redis-port", type=int, default=6590)
    parser.add_argument("--service-id", default="pool-chaos")
    parser.add_argument("--token", default=os.environ.get("FLOW_TOKEN", "default-token"))
    parser.add_argument("--no-write", action="store_true", help="print the report, leave BENCHMARKS.md alone")
    parser.add_argument("--scenario", choices=SCENARIOS, default="all",
                        help="mixed: random process kills (the flags above); sentinel: Redis Sentinel failovers "
                        "(chaos/scenario_sentinel.py, its own free ports); all: both")
    return parser.parse_args()


def drain(client: httpx.Client, ids: list[str], deadline: float) -> None:
    """Wait until every acknowledged workflow has finished (or the deadline)."""
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        for wf_id in list(pending):
            try:
                response = client.get(f"/v1/workflows/{wf_id}")
            except httpx.HTTPError:
                break
            if response.status_code == 404 or response.json().get("status") in FINISHED:
                pending.discard(wf_id)
        time.sleep(1.0)


def report(verdict: Verdict, args: argparse.Namespace, seed: int, submitter: Submitter, injector: Injector,
           elapsed_s: float) -> str:
    counts = verdict.counts()
    faults = fault_summary(injector.events)
    lines = [
        "## Chaos (`make chaos`)",
        "",
        f"Run on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {args.duration_s:g} s of faults under a mixed workload "
        f"(4-step chains and 5-12-item maps, one submission every {args.interval_s:g} s, {args.workers} workers), "
        f"then up to {args.drain_s:g} s to finish; seed {seed}; {elapsed_s:.0f} s in all.",
        "",
        "| faults injected | count |",
        "|---|---|",
        *[f"| {name} | {n} |" for name, n in faults.items()],
        "",
        "| outcome | count |",
        "|---|---|",
        *[f"| {name.replace('_', ' ')} | {n} |" for name, n in counts.items()],
        f"| submissions unanswered or refused, then retried | {submitter.unanswered + submitter.refused} |",
        "",
        f"Verdict: **{'clean' if verdict.clean else 'NOT clean'}**. A step commits one state increment; "
        "`duplicated` / `missing commits` count completed workflows whose counter is above / below their "
        "steps; `leaked containers` are the run's containers left after its pool service stopped.",
    ]
    for name in ("stuck", "lost", "failed", "duplicated", "missing_commits"):
        ids = getattr(verdict, name)
        if ids:
            lines.append(f"- {name}: {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}")
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    failed = 0
    if args.scenario in ("sentinel", "all"):
        from chaos import scenario_sentinel

        failed = scenario_sentinel.main(seed=seed, write=not args.no_write)
        if args.scenario == "sentinel":
            return failed
    rng = random.Random(seed)
    home = ROOT / ".flow" / "chaos-stack"
    shutil.rmtree(home / "redis", ignore_errors=True)  # a fresh count every run
    stack = PrivateStack(home, args.gateway_port, args.pool_port, args.redis_port, args.service_id, args.workers)
    started = time.monotonic()
    stack.up()
    headers = {"Authorization": f"Bearer {args.token}"}
    submitter = Submitter(stack.gateway_url, headers, args.interval_s, random.Random(rng.random()))
    injector = Injector(stack, random.Random(rng.random()))
    threads = [threading.Thread(target=submitter.run, daemon=True), threading.Thread(target=injector.run, daemon=True)]
    try:
        print(f"chaos: seed {seed}; faults and submissions for {args.duration_s:g} s ...", flush=True)
        for thread in threads:
            thread.start()
        time.sleep(args.duration_s)
        submitter.stop()
        injector.stop()
        for thread in threads:
            thread.join(60)
        stack.wait_healthy(120)
        print(f"chaos: {len(submitter.acknowledged)} workflows acknowledged, {len(injector.events)} faults; "
              "waiting for them to finish ...", flush=True)
        with httpx.Client(base_url=stack.gateway_url, headers=headers, timeout=30) as client:
            drain(client, [s.wf_id for s in submitter.acknowledged], time.monotonic() + args.drain_s)
            observed = []
            for item in submitter.acknowledged:
                status, done = observe(client, item.wf_id)
                observed.append(Observed(item.wf_id, item.expected, status, done))
    finally:
        stack.stop()
    leaked = stack.containers()
    stack.remove_containers(leaked)
    verdict = judge(observed, len(leaked))
    text = report(verdict, args, seed, submitter, injector, time.monotonic() - started)
    print(text)
    print(json.dumps({"faults": injector.events[-20:]}, indent=None)[:4000])
    if not args.no_write:
        upsert(ROOT / "BENCHMARKS.md", "chaos", text)
    return 0 if verdict.clean and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
