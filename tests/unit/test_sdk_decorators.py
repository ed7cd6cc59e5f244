"""Decorated classes -> workflow definitions: order from dependencies, every step option, clear errors."""

from __future__ import annotations

from typing import Any

import pytest

from agentainer_flow import (
    MapReduceConfig,
    ValidationError,
    all_of,
    any_of,
    branch,
    decision,
    definition_of,
    mapreduce,
    not_,
    step,
    when,
    workflow,
)

IMG = "agentainer-flow/python:3.11"


@workflow("ordered", description="d", max_parallel=3, timeout="10m", failure_strategy="continue", labels={"t": "1"})
class Ordered:
    # Defined in reverse alphabetical and reverse dependency order on purpose.
    @step(image=IMG, depends_on=["b_middle"])
    def a_last(self, ctx: Any) -> None: ...

    @step(image=IMG, depends_on=["z_first"])
    def b_middle(self, ctx: Any) -> None: ...

    @step(image=IMG)
    def z_first(self, ctx: Any) -> None: ...


def steps_of(defn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in defn["steps"]}


def test_order_comes_from_dependencies_never_from_names_or_definition_order() -> None:
    defn = definition_of(Ordered(), input_data={"x": 1})
    assert [s["id"] for s in defn["steps"]] == ["z_first", "b_middle", "a_last"]
    assert defn["config"] == {"max_parallel": 3, "timeout": "10m", "failure_strategy": "continue"}
    assert defn["name"] == "ordered" and defn["description"] == "d" and defn["labels"] == {"t": "1"}
    assert defn["input"] == {"x": 1}
    assert definition_of(Ordered)["steps"][1]["depends_on"] == ["z_first"]


@workflow("fanout", image=IMG)
class Fanout:
    @step()
    def listing(self, ctx: Any) -> list[int]:
        return [1, 2]

    @step(type="map", items="listing", depends_on=[listing], max_concurrency=2, tolerated_failures=1,
          retry={"max_attempts": 3, "backoff": "constant"}, timeout=5, resources={"cpu": 0.5, "memory_mb": 64},
          pool={"min_size": 1})
    def each(self, ctx: Any) -> int:
        return int(ctx.item)

    @step(type="parallel", replicas=3, pool=True, network="host")
    def spread(self, ctx: Any) -> int:
        return int(ctx.item)

    @step(type="parallel", inputs=["x", "y"], command=["python3", "-c", "print(1)"], env={"A": "1"}, output="text")
    def shell(self, ctx: Any) -> None: ...

    @step(type="reduce", depends_on=["each", "spread"], retry=2, continue_on_error=True,
          input={"n": {"$path": "input.n"}})
    def total(self, ctx: Any) -> int:
        return sum(ctx.items)


def test_map_parallel_reduce_and_step_options() -> None:
    s = steps_of(definition_of(Fanout()))
    assert s["each"]["type"] == "map" and s["each"]["items"] == "steps.listing.output"
    assert s["each"]["retry"] == {"max_attempts": 3, "backoff": "constant"} and s["each"]["timeout"] == 5
    assert s["each"]["resources"] == {"cpu": 0.5, "memory_mb": 64} and s["each"]["pool"] == {"min_size": 1}
    assert s["each"]["max_concurrency"] == 2 and s["each"]["tolerated_failures"] == 1
    assert s["spread"]["replicas"] == 3 and s["spread"]["pool"] == {} and s["spread"]["network"] == "host"
    assert s["shell"]["command"] == ["python3", "-c", "print(1)"] and "function" not in s["shell"]
    assert s["shell"]["inputs"] == ["x", "y"] and s["shell"]["output"] == "text" and s["shell"]["env"] == {"A": "1"}
    assert s["total"]["type"] == "reduce" and s["total"]["retry"] == {"max_attempts": 2}
    assert s["total"]["continue_on_error"] is True and s["total"]["input"] == {"n": {"$path": "input.n"}}
    assert all(x["image"] == IMG for x in s.values())
    fn = s["each"]["function"]
    assert fn["qualname"] == "__flow_step_each__" and fn["module"].startswith("flowstep_")
    modules = definition_of(Fanout())["modules"]
    assert list(modules) == [fn["module"]] == [fn["source_ref"]]  # one module for the whole class, shipped once
    assert s["listing"]["function"]["source_ref"] == fn["source_ref"] and "source" not in fn
    source = modules[fn["source_ref"]]
    assert "def __flow_step_total__(" in source and "def __flow_step_" + "shell__(" not in source


@workflow("choices", image=IMG)
class Choices:
    @step()
    def measure(self, ctx: Any) -> int:
        return 5

    route = branch(when("steps.measure.output", ">", 3), then=["big"], else_=["small"])
    pick = decision(
        [(all_of(when("input.kind", "==", "a"), not_(when("input.x", "exists"))), ["small"]),
         (any_of(when("input.kind", "in", ["b", "c"])), ["other"])],
        default=["big"], depends_on=["measure"],
    )

    @step()
    def big(self, ctx: Any) -> str:
        return "big"

    @step()
    def small(self, ctx: Any) -> str:
        return "small"

    @step()
    def other(self, ctx: Any) -> str:
        return "other"


def test_branch_and_decision_steps() -> None:
    defn = definition_of(Choices)
    ids = [s["id"] for s in defn["steps"]]
    s = steps_of(defn)
    assert s["route"] == {"id": "route", "type": "branch", "depends_on": [], "then": ["big"], "else": ["small"],
                          "condition": {"field": "steps.measure.output", "op": ">", "value": 3}}
    assert s["pick"]["cases"][1] == {"condition": {"or": [{"field": "input.kind", "op": "in", "value": ["b", "c"]}]},
                                     "targets": ["other"]}
    assert s["pick"]["default"] == ["big"] and s["pick"]["cases"][0]["condition"]["and"][1]["not"]["op"] == "exists"
    # The branch reads measure's output, and its targets wait for it.
    assert ids.index("measure") < ids.index("route") < ids.index("big")
    assert ids.index("pick") < ids.index("other")


def test_mapreduce_decorator_and_config() -> None:
    @mapreduce("mr", image=IMG, max_parallel=4, pool_size=2, timeout=60)
    class Count:
        def split(self, ctx: Any) -> list[str]:
            return ["a b", "c"]

        def map(self, ctx: Any) -> int:
            return len(ctx.item.split())

        def reduce(self, ctx: Any) -> int:
            return sum(ctx.items)

    assert len(definition_of(Count)["modules"]) == 1  # a class in a function ships (test_sdk_shipping_scopes.py)
    cfg = MapReduceConfig(name="data-analysis", mapper_image="m", reducer_image="r", max_parallel=20, pool_size=15,
                          timeout="30m", items=[1, 2], input_data={"k": "v"}, network="host", retry=2)
    defn = cfg.to_definition()
    s = steps_of(defn)
    assert [x["id"] for x in defn["steps"]] == ["list", "map", "reduce"]
    assert s["map"]["items"] == "steps.list.output" and s["map"]["max_concurrency"] == 20
    assert s["map"]["pool"] == {"max_size": 15, "min_size": 0} and s["reduce"]["image"] == "r"
    assert s["list"]["image"] == "m" and all(x["network"] == "host" for x in s.values())
    assert defn["config"] == {"max_parallel": 20, "timeout": "30m"} and defn["input"] == {"k": "v", "items": [1, 2]}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: step(image=IMG, timeout=-1), "timeout must be positive"),
        (lambda: step(image=IMG, type="fork"), "type must be"),
        (lambda: step(image=IMG, type="map"), "needs items="),
        (lambda: step(image=IMG, colour="red"), "unknown @step option"),
        (lambda: workflow("w", max_parallel=0), "max_parallel"),
        (lambda: workflow("w", timeout=-5), "timeout must be positive"),
        (lambda: workflow(""), "needs a name"),
        (lambda: when("input.x", "~="), "unknown operator"),
        (lambda: branch(when("input.x"), then=[], else_=[]), "'then' or 'else_'"),
        (lambda: MapReduceConfig(name="x", mapper_image="m", timeout=-1), "timeout must be positive"),
    ],
)
def test_bad_options_raise_at_once(make: Any, message: str) -> None:
    with pytest.raises((ValidationError, ValueError), match=message):
        make()


def test_unknown_dependency_cycle_missing_image_and_non_workflow() -> None:
    @workflow("w")
    class Unknown:
        @step(image=IMG, depends_on=["ghost"])
        def a(self, ctx: Any) -> None: ...

    with pytest.raises(ValidationError, match="unknown step 'ghost'") as info:
        definition_of(Unknown)
    assert info.value.field == "a.depends_on"

    @workflow("w")
    class Cycle:
        @step(image=IMG, depends_on=["b"], command="true")
        def a(self, ctx: Any) -> None: ...

        @step(image=IMG, depends_on=["a"], command="true")
        def b(self, ctx: Any) -> None: ...

    with pytest.raises(ValidationError, match="a, b depend on each other in a cycle"):
        definition_of(Cycle)

    @workflow("w")
    class NoImage:
        @step(command="true")
        def a(self, ctx: Any) -> None: ...

    with pytest.raises(ValidationError, match="needs an image"):
        definition_of(NoImage)
    with pytest.raises(ValidationError, match="not a workflow"):
        definition_of(object())
    with pytest.raises(ValidationError, match="no @step methods"):
        definition_of(workflow("empty")(type("Empty", (), {})))
