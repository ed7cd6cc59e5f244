"""The monotonic counters a commit adds (flowcore.counters, ADR 020): what each transition counts, merged
per field, and the read side (cumulative buckets, `other` = all names less the labelled ones)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from flowcore import counters as c
from flowcore.commits import plan_commands
from flowcore.keyspace import Keyspace
from flowcore.plan import Plan
from tests.unit.test_engine import IMG, Driver, fail, ok

KEYS = Keyspace("t")


class CountingDriver(Driver):
    """The engine's test driver, adding up every plan's increments as a commit would (plans share the
    snapshot, so each is counted as it is made)."""

    def __init__(self, definition: dict[str, Any]) -> None:
        super().__init__(definition)
        self.totals: Counter[str] = Counter()
        self.commands: list[list[tuple[Any, ...]]] = []

    def apply(self, plan: Plan) -> Plan:
        self.totals.update(c.increments(plan))
        self.commands.append([cmd for cmd in plan_commands(KEYS, plan) if cmd[1] in (KEYS.metric_counters, KEYS.metric_names)])
        return super().apply(plan)


@pytest.mark.parametrize(
    ("value_s", "index"),
    [(0.0, 0), (0.005, 0), (0.0051, 1), (1.0, 7), (3600.0, 15), (3600.1, 16), (1e9, 16)],
)
def test_bucket_index_is_the_first_bound_at_or_above(value_s: float, index: int) -> None:
    assert c.bucket_index(value_s, c.TASK_BOUNDS_S) == index


def test_a_chain_counts_each_task_step_and_the_workflow_once() -> None:
    d = CountingDriver({"name": "chain", "steps": [{"id": "a", **IMG}, {"id": "b", "depends_on": ["a"], **IMG}]})
    d.start()
    d.run(lambda s, i, doc: ok(s))
    t = d.totals
    assert t[c.task_field("sequential", "succeeded")] == 2 and t[c.task_field("sequential", "failed")] == 0
    # each task took 1 s (the driver's clock moves 1 s between claim and completion): bucket le=1.0 (index 7)
    assert t["td|sequential|b7"] == 2 and t["td|sequential|sum_ms"] == 2000
    assert sum(v for k, v in t.items() if k.startswith("sd|sequential|b")) == 2
    assert t[c.workflow_field("completed")] == 1 and t[c.workflow_field("completed", "chain")] == 1
    assert sum(v for k, v in t.items() if k.startswith("wd|b")) == 1
    assert t["wd|sum_ms"] == t["wd|chain|sum_ms"] == 2000
    # only the last commit finishes the workflow: one ZADD NX of its name, in that commit
    zadds = [cmd for cmds in d.commands for cmd in cmds if cmd[0] == "ZADD"]
    assert zadds == [("ZADD", KEYS.metric_names, "NX", zadds[0][3], "chain")]
    assert d.commands[0] == []  # the start finishes nothing, so it adds nothing


def test_retries_count_apart_and_a_final_failure_counts_once() -> None:
    d = CountingDriver({"name": "r", "steps": [{"id": "s", "retry": {"max_attempts": 3, "initial_delay_s": 0}, **IMG}]})
    d.start()
    d.run(lambda s, i, doc: fail())
    t = d.totals
    assert t[c.retry_field("sequential")] == 2
    assert t[c.task_field("sequential", "failed")] == 1 and t[c.task_field("sequential", "succeeded")] == 0
    assert sum(v for k, v in t.items() if k.startswith("td|sequential|b")) == 1
    assert t[c.workflow_field("failed", "r")] == 1 and t[c.workflow_field("completed", "r")] == 0


def test_a_map_merges_increments_per_field_and_a_commit_stays_small() -> None:
    n = 40
    d = CountingDriver({
        "name": "m", "input": {"items": list(range(n))}, "config": {"max_parallel": 8},
        "steps": [{"id": "m", "type": "map", "items": "input.items", "max_concurrency": 8, **IMG}],
    })
    d.start()
    d.run(lambda s, i, doc: ok(i))
    assert d.totals[c.task_field("map", "succeeded")] == n
    assert sum(v for k, v in d.totals.items() if k.startswith("sd|map|b")) == 1
    # whatever the map's size, one commit adds at most a handful of commands, one per distinct field
    assert max(len(cmds) for cmds in d.commands) <= 12
    for cmds in d.commands:
        fields = [cmd[2] for cmd in cmds if cmd[0] == "HINCRBY"]
        assert len(fields) == len(set(fields))


def test_a_cancelled_run_that_never_started_counts_without_a_duration() -> None:
    from flowcore import engine

    d = CountingDriver({"name": "x", "steps": [{"id": "a", **IMG}]})
    d.apply(engine.cancel(d.snap, d.env_factory()))
    assert d.totals[c.workflow_field("cancelled", "x")] == 1
    assert not [k for k in d.totals if k.startswith("wd")]


def test_histograms_cumulate_and_other_is_all_less_the_named() -> None:
    values = {"wd|b0": 1, "wd|b3": 2, "wd|b15": 1, "wd|sum_ms": 90_000, "wd|a|b0": 1, "wd|a|sum_ms": 40}
    whole = c.histogram(values, "wd", c.WORKFLOW_BOUNDS_S)
    assert whole.buckets[0] == (0.05, 1) and whole.buckets[3] == (0.5, 3) and whole.buckets[-1][1] == 4
    assert whole.count == 4 and whole.sum_s == 90.0
    named = c.histogram(values, "wd|a", c.WORKFLOW_BOUNDS_S)
    other = c.minus(whole, [named])
    assert other.buckets[0] == (0.05, 0) and other.buckets[-1] == (float("inf"), 3)
    assert other.count == 3 and other.sum_s == pytest.approx(89.96)
    assert c.decode({b"a": b"3", "b": None}) == {"a": 3}
