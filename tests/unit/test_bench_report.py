"""The bench's pure parts: /proc/PID/stat parsing, CPU deltas per role, rates, ratios and goal verdicts."""

from __future__ import annotations

from bench import procs, report
from bench.runner import BatchResult
from bench.scenarios import Result, from_batch, merge


def test_parse_stat_counts_fields_after_the_last_parenthesis() -> None:
    # A command name with spaces and parentheses must not shift the fields.
    line = "4242 (py (x) y) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1000 0 0"
    assert procs.parse_stat(line) == (17, 325)


def test_module_role() -> None:
    assert procs.module_role([".venv/bin/python", "-m", "workers"]) == "worker"
    assert procs.module_role(["/usr/bin/python3", "-m", "gateway"]) == "gateway"
    assert procs.module_role(["python", "/repo/scripts/supervise.py", "-f", "Procfile"]) == "supervisor"
    assert procs.module_role(["python", "-m", "bench"]) is None


def test_delta_per_role_new_processes_from_zero_and_lost_ones_counted() -> None:
    before = procs.Snapshot({("worker", "1"): 10.0, ("redis", "2"): 5.0, ("worker", "3"): 1.0})
    after = procs.Snapshot({("worker", "1"): 10.5, ("redis", "2"): 5.25, ("worker", "4"): 0.5})
    d = procs.delta(before, after)
    assert d.by_role == {"worker": 1.0, "redis": 0.25}
    assert d.lost == 1 and d.lost_by_role == {"worker": 1}
    assert d.total(("worker",)) == 1.0


def test_descendants() -> None:
    parent_of = {2: 1, 3: 2, 4: 3, 5: 1, 6: 99}
    assert procs.descendants(2, parent_of) == {3, 4}
    assert procs.descendants(1, parent_of) == {2, 3, 4, 5}


def test_rates_and_cpu_per_task() -> None:
    r = Result("chain", "c", "completed", 40, 2.0, procs.Delta({"worker": 0.4, "redis": 0.08, "engine": 1.0}))
    assert r.per_s == 20.0
    assert abs((r.cpu_ms_per_task() or 0) - 12.0) < 1e-9  # engine left out of ours
    cells = report.cpu_table([r], "run").splitlines()[-1]
    assert "**12.00**" in cells


def test_merge_takes_the_median_wall_and_sums_tasks_and_cpu() -> None:
    runs = [Result("chain", "c", "completed", 40, w, procs.Delta({"worker": 0.4})) for w in (1.0, 3.0, 2.0)]
    merged = merge(runs)
    assert merged.wall_s == 2.0 and merged.tasks == 120 and merged.runs == 3
    assert merged.per_s == 20.0
    assert merged.cpu is not None and abs(merged.cpu.by_role["worker"] - 1.2) < 1e-9


def test_capped_batch_reports_how_far_it_got() -> None:
    batch = BatchResult("map", 1, 10_000, 300, 150.0, {"cancelled": 1}, finished=False, cap_s=150.0)
    r = from_batch("map", batch, None)
    assert r.outcome == "did not finish in 150 s"
    assert not r.finished and r.per_s == 2.0
    refused = BatchResult("sdk", 1, 200, 0, 0.1, refused="413 Payload Too Large")
    assert refused.outcome == "refused: 413 Payload Too Large"


def test_ratio_and_percentile() -> None:
    assert report.ratio(1.0, 2.0) == 0.5
    assert report.ratio(None, 2.0) is None and report.ratio(1.0, 0.0) is None
    assert report.pct([5.0, 1.0, 3.0], 50) == 3.0
    assert report.pct([], 95) == 0.0


def test_goals_verdicts() -> None:
    chain = Result("chain", "40-step chain", "completed", 40, 0.3, procs.Delta({"worker": 0.2}))
    celery = Result("peer", "Celery chain of 40", "completed", 40, 0.4)
    maps = [
        Result("map", "map of 100 items, agent", "completed", 100, 1.0),
        Result("map", "map of 10,000 items, agent", "did not finish in 150 s", 1500, 150.0, finished=False),
    ]
    groups = [Result("peer", "Celery group of 100", "completed", 100, 2.0)]
    dispatch = {"agent, command": [4.0, 6.0, 4.5], "agent, Python function": [2.0, 2.5, 9.0]}
    sdk = Result("sdk", "sdk", "refused: 413 Payload Too Large", 0, 0.1, finished=False)
    rows = {g.name.split(" (")[0].split(":")[0]: g for g in report.goals(chain, celery, maps, groups, 0.5, dispatch, sdk)}
    assert rows["40-step chain"].met is True  # 0.75x
    linearity = rows["items/s"]
    assert linearity.met is False and linearity.measured == "0.10"  # 10 items/s vs 100 items/s, partial
    assert rows["map throughput / Celery group"].met is True  # 100/s vs 50/s
    assert rows["CPU per chain step, our processes + Redis + containers"].met is True  # 5 ms
    assert rows["idle worker CPU"].met is True
    assert rows["function dispatch p50"].met is True and rows["command dispatch p50"].met is True
    assert rows["200-step SDK workflow accepted and runs"].met is False


def test_watcher_tallies_final_status_and_finished_tasks_from_events() -> None:
    from bench.runner import Watcher

    w = Watcher("http://127.0.0.1:1", {})  # never started: events are fed by hand
    w._on_event({"type": "workflow", "workflow_id": "a", "status": "running", "ts": 1.0})
    w._on_event({"type": "task", "workflow_id": "a", "status": "running"})
    w._on_event({"type": "task", "workflow_id": "a", "status": "succeeded"})
    w._on_event({"type": "task", "workflow_id": "a", "status": "failed"})
    w._on_event({"type": "workflow", "workflow_id": "a", "status": "completed", "ts": 5.0})
    w._on_event({"type": "workflow", "workflow_id": "b", "status": "running", "ts": 2.0})
    a, b = w.snapshot(["a", "b"])
    assert (a.status, a.finished_ts, a.tasks_done) == ("completed", 5.0, 2)
    assert b.finished_ts is None
    assert w.wait(["a"], deadline=0.0) is True
    assert w.wait(["a", "b"], deadline=0.0) is False


def test_ended_containers_are_named_in_the_outcome_and_the_engine_only_for_peers() -> None:
    cpu = procs.Delta({"worker": 0.1}, 3, {}, {"containers": 2, "engine": 1})
    ours = report.cpu_table([Result("map", "m", "completed", 10, 1.0, cpu)], "run").splitlines()[-1]
    assert "CPU not counted: 2 containers)" in ours
    peer = report.cpu_table([Result("peer", "p", "completed", 10, 1.0, cpu)], "run").splitlines()[-1]
    assert "2 containers, 1 engine" in peer
