"""``python -m chaos --scenario sentinel``: Redis Sentinel failovers under a burst, counted in BENCHMARKS.md.

A master with two replicas and three Sentinels, two workers, a gateway and a pool service on Sentinel
settings with ``FLOW_REDIS__MIN_REPLICAS_ACK=1``; the master is SIGKILLed twice during the burst
(each time the old master is started again and rejoins as a replica). With two replicas, submissions
go on being acknowledged after a failover: the promoted replica still has one. The counts go to the
``chaos-sentinel`` section of BENCHMARKS.md, right after the ``chaos`` one.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.sections import sections, upsert
from bench.stack import docker_host
from chaos.failover import FlowProcesses, Outcome, run
from chaos.redis_ha import SentinelCluster

ROOT = Path(__file__).resolve().parent.parent
SECTION = "chaos-sentinel"
TOTAL = 160
KILL_AFTER = [40, 90]
CONCURRENCY = 6
WORKERS = 2


def report(outcome: Outcome, seed: int) -> str:
    failovers = ", ".join(f"{s:.1f}" for s in outcome.failover_s) or "none"
    windows = ", ".join(f"{s:.1f}" for s in outcome.unacknowledged_s) or "none"
    verdict = "clean" if clean(outcome) else "NOT clean"
    lines = [
        "### Sentinel failover (`make chaos`, scenario `sentinel`, ADR 021)",
        "",
        f"Run on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: a master, 2 replicas and 3 Sentinels "
        f"(down-after 1 s), {WORKERS} workers, `FLOW_REDIS__MIN_REPLICAS_ACK=1`; {CONCURRENCY} clients "
        f"submit workflows and events (events retried with the same id) until {TOTAL} are acknowledged; the "
        f"master is SIGKILLed after {' and '.join(map(str, KILL_AFTER))} acknowledgements, and started again "
        f"after each promotion; seed {seed}; {outcome.elapsed_s:.0f} s in all.",
        "",
        "| count | value |",
        "|---|---|",
        f"| acknowledged submissions | {outcome.acknowledged} |",
        f"| surviving after the failovers | {outcome.surviving} |",
        f"| lost | {len(outcome.lost)} |",
        f"| completed | {outcome.completed} |",
        f"| duplicated (an event id that started two workflows) | {len(outcome.duplicated)} |",
        f"| answers 503 (not replicated in time, or Redis unreachable), retried | {outcome.refused} |",
        f"| requests without an answer | {outcome.unreachable} |",
        f"| failover time: kill -> Sentinels name the new master (s) | {failovers} |",
        f"| kill -> first acknowledgement of a submission sent after it (s) | {windows} |",
        "",
        f"Verdict: **{verdict}**.",
    ]
    if outcome.lost:
        lines.append(f"- lost: {', '.join(outcome.lost[:10])}")
    if outcome.not_completed:
        lines.append(f"- not completed: {', '.join(outcome.not_completed[:10])}")
    return "\n".join(lines) + "\n"


def clean(outcome: Outcome) -> bool:
    return (not outcome.lost and not outcome.not_completed and not outcome.duplicated
            and outcome.completed == outcome.acknowledged and len(outcome.failover_s) == len(KILL_AFTER))


def write_section(path: Path, text: str) -> None:
    """Upsert the section, placed after the ``chaos`` one the first time."""
    current = path.read_text() if path.exists() else ""
    chaos = sections(current).get("chaos")
    if SECTION not in sections(current) and chaos is not None:
        marker = f"<!-- section:{SECTION} -->\n<!-- /section:{SECTION} -->"
        path.write_text(current.replace(chaos, f"{chaos}\n\n{marker}", 1))
    upsert(path, SECTION, text)


def main(*, seed: int, write: bool) -> int:
    """Run the scenario; 0 when every acknowledged submission survived and completed once."""
    home = ROOT / ".flow" / "chaos-sentinel"
    shutil.rmtree(home, ignore_errors=True)
    cluster = SentinelCluster(home / "redis", replicas=2)
    started = time.monotonic()
    print("chaos sentinel: starting a master, 2 replicas, 3 Sentinels and a stack ...", flush=True)
    cluster.start()
    procs = FlowProcesses.create(home / "flow", cluster, docker_host(), min_replicas_ack=1)
    try:
        procs.start(workers=WORKERS)
        outcome = asyncio.run(run(cluster, procs, total=TOTAL, kill_after=KILL_AFTER, concurrency=CONCURRENCY,
                                  seed=seed, drain_s=120))
        dead = procs.dead()
    finally:
        procs.stop()
        cluster.stop()
    text = report(outcome, seed)
    if dead:
        text += f"- processes that exited: {', '.join(dead)}\n"
    print(text, flush=True)
    print(f"chaos sentinel: {time.monotonic() - started:.0f} s", flush=True)
    if write:
        write_section(ROOT / "BENCHMARKS.md", text)
    return 0 if clean(outcome) and not dead else 1
