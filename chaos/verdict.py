"""What a chaos run found, decided from what was observed (pure: unit-tested without a stack).

Every workflow the workload submitted carries, in its definition, how many state increments its
steps make when each step commits exactly once (``expected``). After the run:

- **stuck**: acknowledged, still not finished when the drain time ran out;
- **lost**: acknowledged (the gateway answered 201 with its id), and then gone;
- **failed**: finished but not completed (faults are the platform's: none should fail a workflow);
- **duplicated** / **missing commits**: a finished workflow whose ``done`` counter is above / below
  ``expected`` (a step's state updates applied twice, or not at all);
- **leaked containers**: containers of the run's pool service still there after it stopped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

FINISHED = {"completed", "failed", "cancelled"}


@dataclass(frozen=True)
class Observed:
    """One acknowledged workflow at the end of the run."""

    wf_id: str
    expected: int
    status: str | None  # None: the gateway does not know it any more
    done: int | None  # the state counter its steps increment


@dataclass
class Verdict:
    acknowledged: int = 0
    completed: int = 0
    stuck: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    missing_commits: list[str] = field(default_factory=list)
    leaked_containers: int = 0

    @property
    def clean(self) -> bool:
        return not (
            self.stuck or self.lost or self.failed or self.duplicated or self.missing_commits or self.leaked_containers
        )

    def counts(self) -> dict[str, Any]:
        return {
            "acknowledged": self.acknowledged,
            "completed": self.completed,
            "stuck": len(self.stuck),
            "lost": len(self.lost),
            "failed": len(self.failed),
            "duplicated": len(self.duplicated),
            "missing_commits": len(self.missing_commits),
            "leaked_containers": self.leaked_containers,
        }


def judge(observed: Iterable[Observed], leaked_containers: int) -> Verdict:
    verdict = Verdict(leaked_containers=leaked_containers)
    for item in observed:
        verdict.acknowledged += 1
        if item.status is None:
            verdict.lost.append(item.wf_id)
        elif item.status not in FINISHED:
            verdict.stuck.append(item.wf_id)
        elif item.status != "completed":
            verdict.failed.append(item.wf_id)
        else:
            verdict.completed += 1
            done = item.done or 0
            if done > item.expected:
                verdict.duplicated.append(item.wf_id)
            elif done < item.expected:
                verdict.missing_commits.append(item.wf_id)
    return verdict


def fault_summary(events: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many faults of each kind were injected."""
    out: dict[str, int] = {}
    for event in events:
        kind = str(event.get("fault"))
        out[kind] = out.get(kind, 0) + 1
    return dict(sorted(out.items()))
