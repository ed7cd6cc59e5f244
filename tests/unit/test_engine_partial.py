"""Transitions on partial snapshots (ADR 010): a decision reads the task records it concerns, counts from
the step counters, and asks (:class:`~flowcore.engine.NeedReads`) for exactly what else it needs.
Also the pure parts of the commit path: the definition cache and the script's argument layout."""

from __future__ import annotations

import copy

import pytest

from flowcore import commits, engine
from flowcore.defcache import DefinitionCache, digest
from flowcore.engine import NeedReads
from flowcore.keyspace import Keyspace
from flowcore.models import StepStatus, WorkflowDefinition
from flowcore.records import Snapshot
from tests.unit.test_engine import IMG, Driver, ok


def map_driver(n: int, concurrency: int) -> Driver:
    return Driver(
        {
            "name": "m",
            "input": {"items": list(range(n))},
            "config": {"max_parallel": concurrency},
            "steps": [{"id": "m", "type": "map", "items": "input.items", "max_concurrency": concurrency, **IMG}],
        }
    )


def partial(snap: Snapshot, *task_keys: str) -> Snapshot:
    """What the store reads for a transition: every step record, only the named tasks, items apart."""
    out = copy.deepcopy(snap)
    out.tasks = {k: v for k, v in out.tasks.items() if k in task_keys}
    out.loaded = set(task_keys)
    for rec in out.steps.values():
        if rec.items is not None:
            out.items = {f"{rec.id}:{i}": item for i, item in enumerate(rec.items)}
            rec.items = None
    return out


def test_a_claim_asks_for_its_task_record_and_its_item() -> None:
    d = map_driver(5, 2)
    d.start()
    step, index, token = d.queue[0]
    bare = partial(d.snap)
    bare.items = {}
    with pytest.raises(NeedReads) as need:
        engine.claim(bare, d.env_factory(), step, index, token)
    assert need.value.tasks == [f"m:{index}"]
    no_item = partial(d.snap, f"m:{index}")
    no_item.items = {}
    with pytest.raises(NeedReads) as need:
        engine.claim(no_item, d.env_factory(), step, index, token)
    assert need.value.items == [f"m:{index}"]
    plan = engine.claim(partial(d.snap, f"m:{index}"), d.env_factory(), step, index, token)
    assert plan.request is not None and plan.request.input["item"] == index


def test_a_map_completion_needs_no_sibling_until_the_last_one() -> None:
    d = map_driver(6, 3)
    d.start()
    completed = 0
    while d.queue:
        step, index, token = d.queue.pop(0)
        d.claim(step, index, token)
        snap = partial(d.snap, f"{step}:{index}")
        if completed < 5:
            plan = engine.complete(snap, d.env_factory(), step, index, token, ok(index))
            assert plan.dispatch or completed >= 3  # the freed slot goes to the next item, from the counters
        else:
            with pytest.raises(NeedReads) as need:
                engine.complete(snap, d.env_factory(), step, index, token, ok(index))
            assert sorted(need.value.tasks) == sorted(f"m:{i}" for i in range(6) if i != index)
        d.complete(step, index, token, ok(index))  # the full snapshot moves on
        completed += 1
    assert d.status("m") == StepStatus.SUCCEEDED and d.snap.steps["m"].output == list(range(6))


def test_cancel_asks_for_the_active_tasks_of_running_steps_only() -> None:
    d = map_driver(6, 2)
    d.start()
    with pytest.raises(NeedReads) as need:
        engine.cancel(partial(d.snap), d.env_factory())
    assert sorted(need.value.tasks) == ["m:0", "m:1"]
    plan = engine.cancel(partial(d.snap, "m:0", "m:1"), d.env_factory())
    assert sorted(plan.queued_remove) == sorted(f"wf-1|m|{i}|{d.queue[i][2]}" for i in range(2))


def test_a_map_stores_its_items_apart_from_its_step_record() -> None:
    d = map_driver(3, 3)
    plan = d.start()
    assert plan.new_items == {"m": [0, 1, 2]}
    cmds = commits.plan_commands(Keyspace("p"), plan)
    (steps_hset,) = [c for c in cmds if c[0] == "HSET" and c[1] == "p:wf:wf-1:steps"]
    assert '"items"' not in steps_hset[3]
    (items_hset,) = [c for c in cmds if c[0] == "HSET" and c[1] == "p:wf:wf-1:items"]
    assert items_hset[2:] == ("m:0", "0", "m:1", "1", "m:2", "2")
    assert ("LPUSH", "p:wake", "1", "1", "1") in cmds


def test_large_writes_are_split_and_the_script_arguments_are_counted() -> None:
    d = map_driver(1200, 3)
    plan = d.start()
    cmds = commits.plan_commands(Keyspace("p"), plan)
    item_writes = [c for c in cmds if c[0] == "HSET" and c[1] == "p:wf:wf-1:items"]
    assert [len(c) for c in item_writes] == [2 + 2 * commits.CHUNK, 2 + 2 * commits.CHUNK, 2 + 2 * 200]
    args = commits.script_args(7, [("p:wf:wf-1:state", "n", None), ("p:wf:wf-1:state", "m", "1")], cmds[:1])
    assert args[:10] == ["7", 2, "p:wf:wf-1:state", "n", "", "1", "p:wf:wf-1:state", "m", "1", "0"]
    assert args[10] == len(cmds[0]) and tuple(args[11:]) == cmds[0]


def test_the_definition_cache_parses_once_per_workflow_and_digest() -> None:
    cache = DefinitionCache(size=2)
    raw = WorkflowDefinition.model_validate({"name": "x", "steps": [{"id": "a", **IMG}]}).model_dump_json(by_alias=True)
    key = digest(raw)
    assert cache.get("wf-1", key) is None
    first = cache.put("wf-1", key, raw)
    assert cache.get("wf-1", key) is first and first.shape.order == ["a"]
    assert cache.get("wf-1", "other") is None  # another digest: never the stale parse
    cache.put("wf-2", key, raw)
    cache.put("wf-3", key, raw)
    assert cache.get("wf-1", key) is None and cache.get("wf-3", key) is not None  # bounded, LRU


def test_a_completion_may_claim_the_successor_it_made_ready_for_its_own_worker() -> None:
    d = Driver({"name": "c", "steps": [{"id": "a", **IMG}, {"id": "b", "depends_on": ["a"], **IMG}]})
    d.start()
    step, index, token = d.queue.pop(0)
    d.claim(step, index, token)
    plan = engine.complete(d.snap, d.env_factory(), step, index, token, ok(1), claim_next=True)
    assert plan.claimed is not None and plan.claimed.step_id == "b"
    assert plan.request is not None and plan.request.input["deps"] == {"a": 1}
    member = f"wf-1|b|0|{plan.claimed.token}"
    # No job and no queued entry: only the lease, which a takeover needs if this worker dies.
    assert not plan.dispatch and not plan.queued_add and member in plan.lease_add
    assert d.snap.tasks["b:0"].status.value == "running"
    assert engine.claim(d.snap, d.env_factory(), "b", 0, plan.claimed.token).note == "stale"
    d.complete("b", 0, plan.claimed.token, ok(2))
    assert d.snap.status.value == "completed"


def test_a_map_completion_claims_the_next_item_and_asks_for_its_item_when_stored_apart() -> None:
    d = map_driver(4, 2)
    d.start()
    step, index, token = d.queue.pop(0)
    d.claim(step, index, token)
    without_items = partial(d.snap, "m:0")
    without_items.items = {}
    with pytest.raises(NeedReads) as need:
        engine.complete(without_items, d.env_factory(), step, index, token, ok(0), claim_next=True)
    assert need.value.items == ["m:2"]
    snap = partial(d.snap, "m:0")
    plan = engine.complete(snap, d.env_factory(), step, index, token, ok(0), claim_next=True)
    assert plan.claimed is not None and plan.claimed.index == 2 and plan.request is not None
    assert plan.request.input["item"] == 2
