from __future__ import annotations

from typing import Any

import pytest

from flowcore.dag import (
    ancestors,
    check_runnable,
    control_targets,
    descendants,
    effective_deps,
    graph_edges,
    topological_order,
    validate,
)
from flowcore.errors import InvalidInput
from flowcore.models import WorkflowDefinition


def seq(step_id: str, *deps: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "image": "alpine", "command": "true", "depends_on": list(deps), **extra}


def branch(step_id: str, then: list[str], else_: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    extra.setdefault("condition", {"field": "input.go", "op": "==", "value": True})
    return {"id": step_id, "type": "branch", "then": then, "else": else_ or [], **extra}


def decision(
    step_id: str, cases: list[list[str]], default: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "decision",
        "cases": [
            {"condition": {"field": "input.k", "op": "==", "value": i}, "targets": t}
            for i, t in enumerate(cases)
        ],
        "default": default or [],
        **extra,
    }


def mapper(step_id: str, items: str, *deps: str, **extra: Any) -> dict[str, Any]:
    return {"type": "map", "items": items, **seq(step_id, *deps, **extra)}


def wf(*steps: dict[str, Any]) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate({"name": "t", "steps": list(steps)})


DIAMOND = wf(seq("a"), seq("b", "a"), seq("c", "a"), seq("d", "b", "c"))
BRANCH_JOIN = wf(
    seq("prep"),
    branch("check", ["fast"], ["slow"], depends_on=["prep"]),
    seq("fast"),
    seq("slow"),
    seq("join", "fast", "slow"),
)
DECISION = wf(
    seq("classify"),
    decision(
        "route",
        [["small"], ["medium", "notify"], ["notify"]],
        ["large"],
        depends_on=["classify"],
    ),
    seq("small"),
    seq("medium"),
    seq("large"),
    seq("notify"),
)
MAP_REDUCE = wf(
    seq("list"),
    mapper(
        "work", "steps.list.output.files", input={"file": {"$path": "item"}, "cfg": {"$path": "input.cfg"}}
    ),
    {"type": "reduce", **seq("sum", "work")},
)


@pytest.mark.parametrize(
    ("defn", "order"),
    [
        (wf(), []),
        (wf(seq("only")), ["only"]),
        (DIAMOND, ["a", "b", "c", "d"]),
        (wf(seq("d", "b", "c"), seq("c", "a"), seq("b", "a"), seq("a")), ["a", "c", "b", "d"]),
        (wf(seq("x"), seq("y"), seq("z", "x")), ["x", "y", "z"]),
        (BRANCH_JOIN, ["prep", "check", "fast", "slow", "join"]),
        (DECISION, ["classify", "route", "small", "medium", "large", "notify"]),
        (MAP_REDUCE, ["list", "work", "sum"]),
        # An implicit dependency (reading a later-defined step) reorders.
        (wf(seq("use", input={"$path": "steps.make.output"}), seq("make")), ["make", "use"]),
    ],
)
def test_valid_definitions(defn: WorkflowDefinition, order: list[str]) -> None:
    validate(defn)
    assert topological_order(defn) == order


def test_effective_deps_include_implicit_edges() -> None:
    defn = wf(
        seq("a"),
        seq("b", input={"x": [{"$path": "steps.a.output.x", "default": 0}]}),
        mapper("m", "steps.b.output"),
        branch("br", ["t1"], ["t2"], condition={"field": "steps.m.output.0", "op": "exists"}),
        seq("t1"),
        seq("t2", "a"),
        decision("d", [["t1"]], ["e"], depends_on=["a"]),
        seq("e"),
        {
            "type": "parallel",
            "inputs": [{"$path": "steps.b.output"}, 2],
            **seq("p", input={"$path": "steps.e.output"}),
        },
    )
    validate(defn)
    assert effective_deps(defn) == {
        "a": frozenset(),
        "b": frozenset({"a"}),
        "m": frozenset({"b"}),
        "br": frozenset({"m"}),
        "t1": frozenset({"br", "d"}),
        "t2": frozenset({"a", "br"}),
        "d": frozenset({"a"}),
        "e": frozenset({"d"}),
        "p": frozenset({"e"}),
    }
    assert control_targets(defn) == {
        "t1": frozenset({"br", "d"}),
        "t2": frozenset({"br"}),
        "e": frozenset({"d"}),
    }


def test_graph_edges_are_the_engines_dependencies_with_their_kind() -> None:
    # Issue 14: the dashboard drew depends_on and branch targets only; the server now sends every edge
    # the engine waits on, each named by the field that makes it.
    defn = wf(
        seq("a"),
        seq("b", input={"x": {"$path": "steps.a.output.x"}}),
        mapper("m", "steps.b.output", "b"),  # depends_on and items name the same pair: dep wins
        branch("br", ["t1"], ["t2"], condition={"field": "steps.m.output.0", "op": "exists"}),
        seq("t1"),
        seq("t2", "br"),  # depends_on the branch that also chooses it: control wins
        decision("d", [["t1"], ["e"]], ["e"], depends_on=["a"]),
        seq("e"),
    )
    validate(defn)
    edges = graph_edges(defn)
    assert {(e["from"], e["to"]): (e["kind"], e["label"]) for e in edges} == {
        ("a", "b"): ("data", "input"),
        ("b", "m"): ("dep", ""),
        ("m", "br"): ("data", "condition"),
        ("br", "t1"): ("control", "then"),
        ("d", "t1"): ("control", "case 1"),
        ("br", "t2"): ("control", "else"),
        ("a", "d"): ("dep", ""),
        ("d", "e"): ("control", "case 2"),
    }
    assert len(edges) == 8  # one per pair
    pairs = {(e["from"], e["to"]) for e in edges}
    assert pairs == {(dep, step) for step, deps in effective_deps(defn).items() for dep in deps}
    assert [e["to"] for e in edges] == sorted((e["to"] for e in edges), key=[s.id for s in defn.steps].index)


def test_decision_condition_paths_are_dependencies() -> None:
    defn = wf(
        seq("score"),
        {
            "id": "pick",
            "type": "decision",
            "cases": [
                {"condition": {"field": "steps.score.output", "op": ">", "value": 5}, "targets": ["hi"]}
            ],
        },
        seq("hi"),
    )
    validate(defn)
    assert effective_deps(defn)["pick"] == frozenset({"score"})


def test_control_targets_of_decision() -> None:
    assert control_targets(DECISION) == {
        "small": frozenset({"route"}),
        "medium": frozenset({"route"}),
        "notify": frozenset({"route"}),
        "large": frozenset({"route"}),
    }
    assert control_targets(DIAMOND) == {}


@pytest.mark.parametrize(
    ("defn", "field", "message"),
    [
        (wf(seq("a"), seq("b"), seq("a")), "steps[2].id", "duplicate step id 'a' (also steps[0])"),
        (
            wf(seq("a"), seq("b", "a", "ghost")),
            "steps[1].depends_on",
            "step 'b' depends on unknown step 'ghost'",
        ),
        (wf(seq("a"), seq("b", "b")), "steps[1].depends_on", "step 'b' depends on itself"),
        (
            wf(seq("a", input={"x": {"$path": "steps.ghost.output"}})),
            "steps[0].input",
            "step 'a' input reads unknown step 'ghost' through 'steps.ghost.output'",
        ),
        (
            wf(seq("a", input=[{"$path": "steps.a.output"}])),
            "steps[0].input",
            "step 'a' input reads its own result through 'steps.a.output'",
        ),
        (
            wf(seq("a", input={"$path": "steps"})),
            "steps[0].input",
            "step 'a' input reads 'steps': name a step",
        ),
        (wf(seq("a", input={"$path": "nope.x"})), "steps[0].input", "step 'a' input: invalid path 'nope.x'"),
        (wf(seq("a", input={"$path": 42})), "steps[0].input", "step 'a' input: '$path' must be a string"),
        (
            wf(seq("a", input={"$path": "item.x"})),
            "steps[0].input",
            "step 'a' input reads 'item.x', but 'item' only exists in the input of a map or parallel step",
        ),
        (
            wf(seq("a"), mapper("m", "steps.gone.output")),
            "steps[1].items",
            "step 'm' items reads unknown step 'gone' through 'steps.gone.output'",
        ),
        (wf(mapper("m", "steps.m.output")), "steps[0].items", "step 'm' items reads its own result"),
        (wf(mapper("m", "item.list")), "steps[0].items", "step 'm' items reads 'item.list'"),
        (
            wf(seq("a"), {"type": "parallel", "replicas": 2, **seq("p", input={"$path": "steps.zz.output"})}),
            "steps[1].input",
            "step 'p' input reads unknown step 'zz'",
        ),
        (
            wf(branch("b", ["t"], condition={"field": "steps.nobody.output", "op": "exists"}), seq("t")),
            "steps[0].condition",
            "step 'b' condition reads unknown step 'nobody'",
        ),
        (
            wf(branch("b", ["t"], condition={"field": "steps.b.status", "op": "exists"}), seq("t")),
            "steps[0].condition",
            "step 'b' condition reads its own result",
        ),
        (
            wf(
                seq("x"),
                {
                    "id": "d",
                    "type": "decision",
                    "cases": [
                        {"condition": {"field": "steps.x.output", "op": "exists"}, "targets": ["x2"]},
                        {"condition": {"field": "steps.y.output", "op": "exists"}, "targets": ["x2"]},
                    ],
                },
                seq("x2"),
            ),
            "steps[1].cases[1].condition",
            "step 'd' condition reads unknown step 'y'",
        ),
        (
            wf(branch("b", ["t"], condition={"field": "item.ok", "op": "exists"}), seq("t")),
            "steps[0].condition",
            "'item' only exists in the input of a map or parallel step",
        ),
        (wf(branch("b", ["t", "u"]), seq("t")), "steps[0].then", "branch 'b' targets unknown step 'u'"),
        (
            wf(branch("b", ["t"], ["nope"]), seq("t")),
            "steps[0].else",
            "branch 'b' targets unknown step 'nope'",
        ),
        (wf(seq("t"), branch("b", ["b"])), "steps[1].then", "branch 'b' targets itself"),
        (wf(seq("t"), branch("b", ["t"], ["b"])), "steps[1].else", "branch 'b' targets itself"),
        (
            wf(branch("b", ["t", "u"], ["u"]), seq("t"), seq("u")),
            "steps[0].else",
            "step 'u' is in both 'then' and 'else' of branch 'b'",
        ),
        (
            wf(decision("d", [["a"], ["ghost"]]), seq("a")),
            "steps[0].cases[1].targets",
            "decision 'd' targets unknown step 'ghost'",
        ),
        (
            wf(decision("d", [["a"]], ["none"]), seq("a")),
            "steps[0].default",
            "decision 'd' targets unknown step 'none'",
        ),
        (wf(decision("d", [["d"]]), seq("a")), "steps[0].cases[0].targets", "decision 'd' targets itself"),
        (wf(seq("a"), decision("d", [["a"]], ["d"])), "steps[1].default", "decision 'd' targets itself"),
        (
            wf(seq("a"), seq("b", "a"), branch("br", ["a"], depends_on=["b"])),
            "steps[2].then",
            "branch 'br' targets 'a', which 'br' itself waits for "
            "(br -> b -> a; each step depends on the next)",
        ),
        (
            wf(seq("a"), decision("d", [["x"]], ["a"], depends_on=["a"]), seq("x")),
            "steps[1].default",
            "decision 'd' targets 'a', which 'd' itself waits for (d -> a;",
        ),
        (
            wf(seq("src"), branch("br", ["src"], condition={"field": "steps.src.output", "op": "exists"})),
            "steps[1].then",
            "branch 'br' targets 'src', which 'br' itself waits for (br -> src;",
        ),
        (wf(seq("a", "b"), seq("b", "a")), "steps[0].depends_on", "dependency cycle: a -> b -> a"),
        (
            wf(seq("x"), seq("b", "c"), seq("c", "a"), seq("a", "b")),
            "steps[1].depends_on",
            "dependency cycle: b -> c -> a -> b (each step depends on the next)",
        ),
        (
            wf(seq("a", input={"$path": "steps.b.output"}), seq("b", "a")),
            "steps[0].input",
            "dependency cycle: a -> b -> a",
        ),
        (
            wf(mapper("m", "steps.r.output"), {"type": "reduce", **seq("r", "m")}),
            "steps[0].items",
            "dependency cycle: m -> r -> m",
        ),
        (
            # Target t waits for br (implicit), br reads c, c waits for t.
            wf(
                branch("br", ["t"], condition={"field": "steps.c.output", "op": "exists"}),
                seq("t"),
                seq("c", "t"),
            ),
            "steps[0].then",
            "branch 'br' targets 't', which 'br' itself waits for (br -> c -> t;",
        ),
        (
            # Two branches targeting each other's ancestors through the implicit edges.
            wf(branch("b1", ["x"]), seq("x"), branch("b2", ["b1"], depends_on=["x"])),
            "steps[0].then",
            "branch 'b1' targets 'x', which 'b1' itself waits for (b1 -> b2 -> x;",
        ),
    ],
)
def test_rejections(defn: WorkflowDefinition, field: str, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate(defn)
    assert info.value.field == field
    assert message in info.value.message


def test_topological_order_rejects_cycle() -> None:
    with pytest.raises(InvalidInput, match="dependency cycle: a -> b -> a") as info:
        topological_order(wf(seq("a", "b"), seq("b", "a"), seq("c")))
    assert info.value.field == "steps[0].depends_on"


def test_same_target_in_several_cases_and_branches_is_fine() -> None:
    defn = wf(
        decision("d", [["t"], ["t", "u"]], ["t"]),
        branch("b", ["t"], ["u"]),
        seq("t"),
        seq("u"),
    )
    validate(defn)
    assert topological_order(defn) == ["d", "b", "t", "u"]


def test_duplicate_depends_on_is_harmless() -> None:
    defn = wf(seq("a"), seq("b", "a", "a"))
    validate(defn)
    assert effective_deps(defn)["b"] == frozenset({"a"})


def test_non_step_paths_add_no_dependencies() -> None:
    defn = wf(seq("a", input={"x": {"$path": "input.steps"}, "y": {"$path": "state.k"}}), seq("b"))
    validate(defn)
    assert effective_deps(defn) == {"a": frozenset(), "b": frozenset()}


DEPS: dict[str, frozenset[str]] = {
    "a": frozenset(),
    "b": frozenset({"a"}),
    "c": frozenset({"a"}),
    "d": frozenset({"b", "c"}),
    "e": frozenset({"d"}),
    "lone": frozenset(),
}


@pytest.mark.parametrize(
    ("step_id", "down", "up"),
    [
        ("a", {"b", "c", "d", "e"}, set()),
        ("b", {"d", "e"}, {"a"}),
        ("d", {"e"}, {"a", "b", "c"}),
        ("e", set(), {"a", "b", "c", "d"}),
        ("lone", set(), set()),
        ("unknown", set(), set()),
    ],
)
def test_descendants_and_ancestors(step_id: str, down: set[str], up: set[str]) -> None:
    assert descendants(DEPS, step_id) == down
    assert ancestors(DEPS, step_id) == up


def test_descendants_over_effective_deps_follow_branch_targets() -> None:
    deps = effective_deps(BRANCH_JOIN)
    assert descendants(deps, "check") == {"fast", "slow", "join"}
    assert descendants(deps, "fast") == {"join"}
    assert ancestors(deps, "join") == {"prep", "check", "fast", "slow"}


def test_large_chain_is_not_recursive() -> None:
    n = 5000
    defn = wf(seq("s0"), *(seq(f"s{i}", f"s{i - 1}") for i in range(1, n)))
    validate(defn)
    order = topological_order(defn)
    assert order[0] == "s0" and order[-1] == f"s{n - 1}"
    assert len(descendants(effective_deps(defn), "s0")) == n - 1


def test_parallel_item_is_allowed_and_static_inputs_are_not_templates() -> None:
    defn = wf(
        seq("a"),
        {
            "type": "parallel",
            "inputs": [{"$path": "steps.zz.output"}],
            **seq("p", input={"x": {"$path": "item"}}),
        },
    )
    validate(defn)
    assert effective_deps(defn)["p"] == frozenset()


def test_a_definition_without_steps_is_valid_but_cannot_run() -> None:
    validate(wf())  # created to hold state, as create_workflow(name=...) does
    with pytest.raises(InvalidInput) as info:
        check_runnable(wf())
    assert info.value.field == "steps" and "at least one step to run" in info.value.message
    check_runnable(wf(seq("a")))
