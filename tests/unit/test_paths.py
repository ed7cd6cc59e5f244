from __future__ import annotations

import copy
from typing import Any

import pytest

from flowcore.errors import InvalidInput
from flowcore.paths import (
    PathMissing,
    exists,
    iter_template_paths,
    referenced_steps,
    resolve,
    resolve_templates,
    step_of_path,
)

VIEW: dict[str, Any] = {
    "input": {"docs": [{"name": "a.txt"}, {"name": "b.txt"}], "n": 3, "nothing": None, "-1": "dash"},
    "state": {"count": 2, "flags": {"on": True}},
    "steps": {
        "list": {"output": {"files": ["x", "y"]}, "status": "succeeded", "failures": []},
        "text": {"output": "hello", "status": "succeeded", "failures": []},
    },
    "item": {"id": 7},
    "workflow": {"id": "wf-1", "name": "demo"},
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("input", VIEW["input"]),
        ("input.n", 3),
        ("input.docs.0.name", "a.txt"),
        ("input.docs.1", {"name": "b.txt"}),
        ("input.nothing", None),
        ("input.-1", "dash"),
        ("state.flags.on", True),
        ("steps.list.output.files", ["x", "y"]),
        ("steps.list.output.files.1", "y"),
        ("steps.list.status", "succeeded"),
        ("item.id", 7),
        ("workflow.name", "demo"),
    ],
)
def test_resolve_finds_values(path: str, expected: Any) -> None:
    assert resolve(VIEW, path) == expected
    assert exists(VIEW, path)


@pytest.mark.parametrize(
    ("path", "at_segment", "message"),
    [
        ("input.missing", 1, "path 'input.missing' not found: 'missing' is missing in input"),
        (
            "steps.a.output.x",
            1,
            "path 'steps.a.output.x' not found: 'a' is missing in steps",
        ),
        (
            "steps.list.output.x",
            3,
            "path 'steps.list.output.x' not found: 'x' is missing in steps.list.output",
        ),
        ("input.docs.2", 2, "'2' is missing in input.docs"),
        ("input.docs.-1", 2, "'-1' is missing in input.docs"),
        ("input.docs.name", 2, "'name' is missing in input.docs"),
        ("input.n.x", 2, "'x' cannot be read from input.n, which is a number"),
        ("input.nothing.x", 2, "'x' cannot be read from input.nothing, which is null"),
        ("steps.text.output.0", 3, "'0' cannot be read from steps.text.output, which is a string"),
        ("state.flags.on.x", 3, "which is a boolean"),
    ],
)
def test_resolve_missing(path: str, at_segment: int, message: str) -> None:
    with pytest.raises(PathMissing) as info:
        resolve(VIEW, path)
    assert info.value.at_segment == at_segment
    assert info.value.segment == path.split(".")[at_segment]
    assert info.value.path == path
    assert message in info.value.message
    assert isinstance(info.value, InvalidInput)
    assert not exists(VIEW, path)


def test_missing_root_in_partial_view() -> None:
    with pytest.raises(PathMissing, match="the view has no 'item'"):
        resolve({"input": 1}, "item.x")
    assert not exists({"input": 1}, "item")


@pytest.mark.parametrize("path", ["", "nope.x", "input..x", "input.a b", ".input", "steps.$x"])
def test_bad_path_syntax_is_invalid_input_not_missing(path: str) -> None:
    with pytest.raises(InvalidInput) as info:
        resolve(VIEW, path)
    assert not isinstance(info.value, PathMissing)
    assert info.value.field == "path"


def test_resolve_returns_view_object() -> None:
    assert resolve(VIEW, "steps.list.output.files") is VIEW["steps"]["list"]["output"]["files"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (5, 5),
        ("steps.list", "steps.list"),
        ({"$path": "input.n"}, 3),
        ({"$path": "input.nothing"}, None),
        ({"files": {"$path": "steps.list.output.files"}, "k": 1}, {"files": ["x", "y"], "k": 1}),
        ([{"$path": "item.id"}, {"$path": "workflow.id"}, "lit"], [7, "wf-1", "lit"]),
        ({"deep": [[{"$path": "state.count"}]]}, {"deep": [[2]]}),
        ({"$path": "input.missing", "default": "d"}, "d"),
        ({"$path": "input.n", "default": "d"}, 3),
        ({"$path": "input.missing", "default": None}, None),
        ({"$path": "input.missing", "default": {"$path": "input.n"}}, {"$path": "input.n"}),
        # Another key makes it ordinary data.
        ({"$path": "input.n", "other": 1}, {"$path": "input.n", "other": 1}),
    ],
)
def test_resolve_templates(value: Any, expected: Any) -> None:
    before = copy.deepcopy(VIEW)
    assert resolve_templates(value, VIEW) == expected
    assert before == VIEW


def test_resolve_templates_copies() -> None:
    value: dict[str, Any] = {"a": [1, {"b": 2}], "files": {"$path": "steps.list.output.files"}}
    result = resolve_templates(value, VIEW)
    result["a"][1]["b"] = 3
    result["files"].append("z")
    assert value["a"][1]["b"] == 2
    assert VIEW["steps"]["list"]["output"]["files"] == ["x", "y"]


def test_resolve_templates_missing_without_default() -> None:
    with pytest.raises(PathMissing, match="'zzz' is missing in input"):
        resolve_templates({"a": [{"$path": "input.zzz"}]}, VIEW)


@pytest.mark.parametrize("template", [{"$path": 3}, {"$path": "bad root"}, {"$path": "nope.x"}])
def test_resolve_templates_rejects_bad_template(template: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        resolve_templates({"x": template}, VIEW)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, set()),
        ("steps.a.output", set()),
        ({"$path": "steps.a.output"}, {"a"}),
        ({"$path": "steps.a"}, {"a"}),
        ({"$path": "steps"}, set()),
        ({"$path": "input.steps.a"}, set()),
        ({"x": [{"$path": "steps.a.output"}, {"$path": "steps.b-2.output.0", "default": 1}]}, {"a", "b-2"}),
        ({"$path": "state.k", "default": {"$path": "steps.c.output"}}, set()),
        ({"$path": "steps.a.output", "extra": {"$path": "steps.b.output"}}, {"b"}),
    ],
)
def test_referenced_steps(value: Any, expected: set[str]) -> None:
    assert referenced_steps(value) == expected


def test_iter_template_paths_in_document_order() -> None:
    value = {"a": {"$path": "input.x"}, "b": [{"$path": "steps.s.output"}, {"c": {"$path": "item"}}]}
    assert list(iter_template_paths(value)) == ["input.x", "steps.s.output", "item"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [("steps.a.output", "a"), ("steps.a", "a"), ("steps", None), ("input.a", None), ("state.steps", None)],
)
def test_step_of_path(path: str, expected: str | None) -> None:
    assert step_of_path(path) == expected
