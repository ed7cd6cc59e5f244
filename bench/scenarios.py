"""The scenarios of ``make bench``, each measured as wall time plus CPU per process.

Every scenario returns a :class:`Result`: how many tasks (steps, map items, Celery tasks) finished,
in how long, and the CPU seconds each process role used meanwhile (:mod:`bench.procs`). Our stack is
driven over HTTP (:mod:`bench.runner`); the peers by :mod:`bench.peers`. Nothing here asserts a
time: the figures go to the report, which compares them with the goals.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench import peers, procs, workflows
from bench.runner import BatchResult, Watcher, run_batch


@dataclass
class Result:
    group: str  # chain | map | concurrency | sdk | peer
    label: str
    outcome: str
    tasks: int  # finished tasks (steps, items, Celery tasks)
    wall_s: float | None
    cpu: procs.Delta | None = None
    latencies_s: list[float] = field(default_factory=list)  # per workflow, submission -> final event
    finished: bool = True
    runs: int = 1  # the wall time is the median over this many runs; tasks and CPU are summed

    @property
    def per_s(self) -> float | None:
        if not self.wall_s or not self.tasks:
            return None
        return self.tasks / self.runs / self.wall_s

    def cpu_ms_per_task(self, roles: tuple[str, ...] | None = None) -> float | None:
        if self.cpu is None or not self.tasks:
            return None
        seconds = self.cpu.total(roles) if roles is not None else self.cpu.total()
        return 1000.0 * seconds / self.tasks


def from_batch(group: str, batch: BatchResult, cpu: procs.Delta | None) -> Result:
    return Result(group, batch.label, batch.outcome, batch.tasks_done, batch.wall_s, cpu, batch.latencies_s,
                  batch.finished and not batch.refused)


def from_peer(result: peers.PeerResult) -> Result:
    outcome = "completed" if result.error is None else f"error: {result.error}"
    return Result("peer", result.label, outcome, result.tasks if result.error is None else 0, result.wall_s, result.cpu)


def merge(results: list[Result]) -> Result:
    """Repeated runs of one scenario: the median wall time, tasks and CPU summed."""
    first = results[0]
    walls = [r.wall_s for r in results if r.wall_s]
    by_role: dict[str, float] = {}
    lost: dict[str, int] = {}
    for r in results:
        for role, seconds in (r.cpu.by_role if r.cpu else {}).items():
            by_role[role] = by_role.get(role, 0.0) + seconds
        for role, n in (r.cpu.lost_by_role if r.cpu else {}).items():
            lost[role] = lost.get(role, 0) + n
    outcomes = sorted({r.outcome for r in results})
    return Result(
        first.group, first.label, ", ".join(outcomes), sum(r.tasks for r in results),
        statistics.median(walls) if walls else None,
        procs.Delta(by_role, sum(lost.values()), {}, lost) if any(r.cpu for r in results) else None,
        [x for r in results for x in r.latencies_s], all(r.finished for r in results), len(results),
    )


@dataclass
class Stack:
    """Our stack under test: where it answers and which processes are its own."""

    url: str
    headers: dict[str, str]
    probe: procs.Probe
    watcher: Watcher
    client_timeout_s: float = 120.0

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=self.client_timeout_s)

    def measure(
        self, group: str, label: str, definitions: list[dict[str, Any]], tasks_each: int, cap_s: float,
        submitters: int = 1,
    ) -> Result:
        before = self.probe.snapshot()
        batch = run_batch(self.client, self.watcher, definitions, label, tasks_each, cap_s, submitters)
        return from_batch(group, batch, procs.delta(before, self.probe.snapshot()))

    def busy(self) -> int:
        """Workflows pending or running on the stack right now (anyone's)."""
        with self.client() as client:
            return sum(
                int(client.get("/v1/workflows", params={"status": status, "limit": 1}).json().get("total", 0))
                for status in ("pending", "running")
            )

    def wait_quiet(self, timeout_s: float) -> int:
        """Wait until no workflow is pending or running (at most ``timeout_s``); how many still are."""
        deadline = time.monotonic() + timeout_s
        while (left := self.busy()) and time.monotonic() < deadline:
            time.sleep(1.0)
        return left

    def idle(self, seconds: float) -> procs.Delta:
        """CPU per role over ``seconds`` with no work submitted (after the stack settled)."""
        before = self.probe.snapshot()
        time.sleep(seconds)
        return procs.delta(before, self.probe.snapshot())


def chain_runs(stack: Stack, steps: int, repeat: int, cap_s: float) -> tuple[Result, Result]:
    """(warm: containers of the image already running, as Celery's workers are; own pool: the workflow
    starts its first container itself, the default pool scope)."""
    stack.measure("warm-up", "warm-up", [workflows.chain(3, scope="image")], 3, cap_s)
    warm = [stack.measure("chain", f"{steps}-step chain, agent, warm pool (ours)",
                          [workflows.chain(steps, scope="image")], steps, cap_s) for _ in range(repeat)]
    own = stack.measure("chain", f"{steps}-step chain, agent, own pool: first container cold (ours)",
                        [workflows.chain(steps)], steps, cap_s)
    return merge(warm), own


def map_runs(stack: Stack, sizes: list[int], concurrency: int, cap_s: float, log: Callable[[str], None]) -> list[Result]:
    """Maps on warm containers (pool scope image, started by a small map first): items/s of the engine."""
    stack.measure("warm-up", "warm-up", [workflows.fan_map(2 * concurrency, "agent", concurrency, "image")],
                  2 * concurrency, cap_s)
    out = []
    for n in sizes:
        log(f"  map of {n:,} items (cap {cap_s:.0f} s) ...")
        out.append(stack.measure("map", f"map of {n:,} items, agent, warm pool (ours)",
                                 [workflows.fan_map(n, "agent", concurrency, "image")], n, cap_s))
    return out


def concurrency_runs(
    stack: Stack, chains: list[int], steps: int, two_steps: int, cap_s: float, log: Callable[[str], None]
) -> list[Result]:
    out = []
    for n in chains:
        log(f"  {n} concurrent {steps}-step chains ...")
        out.append(stack.measure("concurrency", f"{steps}-step chains, {n} at once",
                                 [workflows.chain(steps) for _ in range(n)], steps, cap_s, submitters=min(n, 8)))
    if two_steps:
        log(f"  {two_steps} concurrent two-step workflows ...")
        out.append(stack.measure("concurrency", f"two-step workflows, {two_steps} at once (pool scope image)",
                                 [workflows.two_step(scope="image") for _ in range(two_steps)], 2, cap_s, submitters=8))
    return out


def sdk_run(stack: Stack, cap_s: float) -> Result:
    definition, why, steps = workflows.sdk_chain()
    if definition is None:
        return Result("sdk", "200-step SDK workflow (decorated functions)", why or "SDK error", 0, None, finished=False)
    return stack.measure("sdk", f"{steps}-step SDK workflow (decorated functions)", [definition], steps, cap_s)


def celery_runs(chain_n: int, chain_repeat: int, group_sizes: list[int], chord_n: int, log: Callable[[str], None]) -> list[Result]:
    if not peers.celery_available():
        return [Result("peer", "Celery", "not installed: pip install -e '.[bench]'", 0, None, finished=False)]
    try:
        with peers.CeleryPeer(concurrency=2) as celery:
            log(f"  Celery chain of {chain_n} x {chain_repeat} ...")
            out = [merge([from_peer(celery.run("chain", chain_n)) for _ in range(chain_repeat)])]
            for n in group_sizes:
                log(f"  Celery group of {n} ...")
                out.append(from_peer(celery.run("group", n)))
            if chord_n:
                out.append(from_peer(celery.run("chord", chord_n)))
            return out
    except (RuntimeError, OSError) as exc:
        return [Result("peer", "Celery", f"could not run: {exc}", 0, None, finished=False)]
