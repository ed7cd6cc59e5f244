"""BENCHMARKS.md from one run: the tables, CPU per task per process, and the goals as ratios.

Pure functions of the measured :class:`bench.scenarios.Result` values (unit-tested in
tests/unit/test_bench_report.py): nothing here measures anything.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from bench.procs import OURS, ROLE_ORDER
from bench.scenarios import Result

CPU_STEP_GOAL_MS = 8.0
IDLE_GOAL_PCT = 1.0
FUNCTION_DISPATCH_GOAL_MS = 3.0
COMMAND_DISPATCH_GOAL_MS = 5.0
MAP_LINEARITY_GOAL = 0.8


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """ours / theirs, or None when either is missing or theirs is zero."""
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def roles_of(results: Iterable[Result]) -> list[str]:
    """The process roles that used CPU in any of ``results``, in report order (peers' roles last)."""
    seen: set[str] = set()
    for r in results:
        if r.cpu:
            seen.update(k for k, v in r.cpu.by_role.items() if v > 0 or k in OURS)
    ordered = [role for role in ROLE_ORDER if role in seen]
    return ordered + sorted(seen - set(ordered))


def cpu_cells(result: Result, roles: list[str]) -> list[str]:
    if result.cpu is None or not result.tasks:
        return ["n/a"] * (len(roles) + 1)
    per = [1000.0 * result.cpu.by_role.get(role, 0.0) / result.tasks for role in roles]
    # Ours: our processes, Redis and the containers (the engine is not on an agent step's path, and it
    # is shared with other stacks). A peer: everything it used (the cold loop is all engine).
    counted = [v for role, v in zip(roles, per, strict=True) if result.group == "peer" or role != "engine"]
    total = sum(counted)
    cells = [f"{v:.2f}" if role in result.cpu.by_role else "-" for role, v in zip(roles, per, strict=True)]
    return [*cells, f"**{total:.2f}**"]


def cpu_table(results: list[Result], first: str, extra: list[str] | None = None) -> str:
    """One row per result: outcome, tasks, wall, rate, then CPU ms per task per role and in all."""
    roles = roles_of(results)
    head = [first, "outcome", "tasks done", "wall s", "tasks/s", *(extra or []), *roles, "all (ms/task)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        outcome = r.outcome
        lost = {k: v for k, v in (r.cpu.lost_by_role if r.cpu else {}).items() if r.group == "peer" or k != "engine"}
        if lost:
            gone = ", ".join(f"{v} {k}" for k, v in sorted(lost.items()))
            outcome += f" (ended during the run, CPU not counted: {gone})"
        cells = [r.label, outcome, f"{r.tasks:,}", fmt(r.wall_s, 2), fmt(r.per_s)]
        if extra:
            lat = r.latencies_s
            cells.append(f"{1000 * statistics.median(lat):.0f} / {1000 * pct(lat, 95):.0f}" if lat else "n/a")
        lines.append("| " + " | ".join(cells + cpu_cells(r, roles)) + " |")
    return "\n".join(lines)


def idle_table(by_role: dict[str, float], seconds: float, found: dict[str, int]) -> str:
    lines = ["| process | processes | % of one core |", "|---|---|---|"]
    for role in ROLE_ORDER:
        if role in by_role or role in found:
            lines.append(f"| {role} | {found.get(role, 0)} | {100.0 * by_role.get(role, 0.0) / seconds:.2f} |")
    return "\n".join(lines)


def dispatch_table(dispatch: dict[str, list[float]]) -> str:
    cold = statistics.median(next(iter(dispatch.values()))) if dispatch else 0.0
    lines = ["| mode | n | p50 | p95 | faster than cold (p50) |", "|---|---|---|---|---|"]
    for label, values in dispatch.items():
        p50 = statistics.median(values)
        lines.append(f"| {label} | {len(values)} | {p50:.1f} | {pct(values, 95):.1f} | {cold / p50:.0f}x |")
    return "\n".join(lines)


def short(label: str) -> str:
    """"map of 1,000 items, agent (ours)" -> "map of 1,000 items"."""
    return label.rsplit(", ", 1)[0] if ", " in label else label


@dataclass
class Goal:
    name: str
    measured: str
    target: str
    met: bool | None  # None: not measured in this run

    def row(self) -> str:
        verdict = "n/a" if self.met is None else ("**met**" if self.met else "missed")
        return f"| {self.name} | {self.measured} | {self.target} | {verdict} |"


def lower_is_better(name: str, value: float | None, limit: float, unit: str, target: str | None = None) -> Goal:
    return Goal(name, "n/a" if value is None else f"{value:.2f}{unit}", target or f"<= {limit:g}{unit}",
                None if value is None else value <= limit)


def goals(
    chain: Result | None,
    celery_chain: Result | None,
    maps: list[Result],
    celery_groups: list[Result],
    idle_worker_pct: float | None,
    dispatch: dict[str, list[float]],
    sdk: Result | None,
) -> list[Goal]:
    out: list[Goal] = []
    chain_ratio = ratio(chain.wall_s if chain and chain.finished else None, celery_chain.wall_s if celery_chain else None)
    out.append(lower_is_better("40-step chain: ours / Celery (wall)", chain_ratio, 1.0, "x", "<= 1x (stretch 0.5x)"))
    small = next((m for m in maps if m.tasks and m.finished), None)
    large = maps[-1] if maps else None
    if small is not None and large is not None and large is not small:
        linear = ratio(large.per_s, small.per_s)
        note = "" if large.finished else " (partial: capped)"
        out.append(Goal(f"items/s: {short(large.label)} / {short(small.label)}{note}",
                        fmt(linear, 2), f">= {MAP_LINEARITY_GOAL}", None if linear is None else linear >= MAP_LINEARITY_GOAL))
    else:
        out.append(Goal("map linearity (largest / 100-item map items/s)", "n/a", f">= {MAP_LINEARITY_GOAL}", None))
    best_map = max((m for m in maps if m.finished and m.per_s), key=lambda m: m.tasks, default=None)
    same = [g for g in celery_groups if g.per_s and best_map and g.tasks == best_map.tasks]
    group = same[0] if same else next((g for g in celery_groups if g.per_s), None)
    map_vs = ratio(best_map.per_s if best_map else None, group.per_s if group else None)
    out.append(Goal(f"map throughput / Celery group ({short(best_map.label) if best_map else 'map'} vs "
                    f"{group.label if group else 'Celery group'})", fmt(map_vs, 2), ">= 1",
                    None if map_vs is None else map_vs >= 1.0))
    out.append(lower_is_better("CPU per chain step, our processes + Redis + containers", chain.cpu_ms_per_task()
                               if chain else None, CPU_STEP_GOAL_MS, " ms"))
    out.append(lower_is_better("idle worker CPU", idle_worker_pct, IDLE_GOAL_PCT, " % of a core"))
    fn = dispatch.get("agent, Python function")
    cmd = dispatch.get("agent, command")
    out.append(lower_is_better("function dispatch p50 (issue 10)", statistics.median(fn) if fn else None,
                               FUNCTION_DISPATCH_GOAL_MS, " ms"))
    out.append(lower_is_better("command dispatch p50 (issue 10)", statistics.median(cmd) if cmd else None,
                               COMMAND_DISPATCH_GOAL_MS, " ms"))
    out.append(Goal("200-step SDK workflow accepted and runs", sdk.outcome if sdk else "not run", "completed",
                    None if sdk is None else sdk.outcome == "completed"))
    return out


def goals_table(rows: list[Goal]) -> str:
    return "\n".join(["| goal | measured | target | verdict |", "|---|---|---|---|", *(g.row() for g in rows)])
