from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from flowcore.conditions import compare, evaluate, referenced_paths, values_equal
from flowcore.models import Condition

CONDITION: TypeAdapter[Condition] = TypeAdapter(Condition)

VIEW: dict[str, Any] = {
    "input": {
        "n": 10,
        "f": 2.5,
        "s": "hello world",
        "num_s": "10",
        "pad_s": " 42\n",
        "flag": True,
        "off": False,
        "null": None,
        "list": [1, "two", 3.0, [4]],
        "obj": {"k": 1, "nested": {"x": "y"}},
        "empty": "",
    },
    "state": {"count": 3},
    "steps": {"check": {"output": {"ok": True, "score": 0.75, "tags": ["a", "b"]}, "status": "succeeded"}},
}


def leaf(field: str, op: str, value: Any = None) -> Condition:
    return CONDITION.validate_python({"field": field, "op": op, "value": value})


def check(field: str, op: str, value: Any, expected: bool) -> None:
    assert evaluate(leaf(field, op, value), VIEW) is expected


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("input.n", 10, True),
        ("input.n", 10.0, True),
        ("input.n", "10", True),
        ("input.n", "10.0", True),
        ("input.n", " 10 ", True),
        ("input.n", 11, False),
        ("input.n", "ten", False),
        ("input.num_s", 10, True),
        ("input.num_s", "10", True),
        ("input.num_s", "10.0", False),  # two strings compare as strings
        ("input.pad_s", 42, True),
        ("input.f", 2.5, True),
        ("input.f", "2.5", True),
        ("input.s", "hello world", True),
        ("input.s", "Hello world", False),
        ("input.flag", True, True),
        ("input.flag", 1, False),  # bools are not numbers
        ("input.off", 0, False),
        ("input.flag", "true", False),
        ("input.null", None, True),
        ("input.null", 0, False),
        ("input.null", "", False),
        ("input.empty", None, False),
        ("input.list", [1, "two", 3, [4]], True),
        ("input.list", [1, "two", 3], False),
        ("input.obj", {"k": 1, "nested": {"x": "y"}}, True),
        ("input.obj", {"k": 1}, False),
        ("steps.check.output.ok", True, True),
        ("steps.check.status", "succeeded", True),
        ("state.count", 3, True),
        ("input.missing", None, False),
        ("input.missing", 10, False),
        ("steps.nope.output", None, False),
    ],
)
def test_equal_and_not_equal(field: str, value: Any, expected: bool) -> None:
    check(field, "==", value, expected)
    check(field, "!=", value, not expected)


@pytest.mark.parametrize(
    ("field", "op", "value", "expected"),
    [
        ("input.n", ">", 9, True),
        ("input.n", ">", 10, False),
        ("input.n", ">=", 10, True),
        ("input.n", "<", 10.5, True),
        ("input.n", "<=", 9.99, False),
        ("input.f", "<", 3, True),
        ("input.n", ">", "9", True),  # numeric string on the value side
        ("input.num_s", ">", 9, True),  # "10" > 9
        ("input.num_s", "<", 9, False),
        ("input.num_s", ">", "9", False),  # both strings: lexicographic
        ("input.num_s", "<", "9", True),
        ("input.pad_s", ">=", 42, True),
        ("input.s", ">", 9, False),  # "hello world" > 9: not numeric, never raises
        ("input.s", "<", 9, False),
        ("input.s", ">", "hello", True),
        ("input.s", "<", "help", True),
        ("input.s", ">=", "hello world", True),
        ("input.flag", ">", 0, False),  # bools are not numbers
        ("input.flag", "<", 2, False),
        ("input.off", ">=", False, False),
        ("input.null", ">", 0, False),
        ("input.null", "<", 0, False),
        ("input.list", ">", [0], False),
        ("input.obj", "<", 1, False),
        ("input.n", ">", None, False),
        ("input.n", ">", "nan", False),
        ("input.n", "<", "inf", False),
        ("input.n", "<", "1e3", True),
        ("input.missing", ">", 0, False),
        ("input.missing", "<=", 0, False),
        ("steps.check.output.score", ">=", 0.75, True),
        ("steps.check.output.score", ">", "0.5", True),
    ],
)
def test_ordering(field: str, op: str, value: Any, expected: bool) -> None:
    check(field, op, value, expected)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("input.n", [1, 10], True),
        ("input.n", ["10"], True),
        ("input.n", [10.0], True),
        ("input.n", [1, 2], False),
        ("input.n", [], False),
        ("input.num_s", [10], True),
        ("input.num_s", ["10.0"], False),
        ("input.s", ["hello world", "x"], True),
        ("input.s", ["hello"], False),
        ("input.flag", [1], False),
        ("input.flag", [True], True),
        ("input.null", [None], True),
        ("input.list", [[1, "two", 3.0, [4]]], True),
        ("steps.check.output.tags", [["a", "b"], "c"], True),
    ],
)
def test_in_and_not_in(field: str, value: list[Any], expected: bool) -> None:
    check(field, "in", value, expected)
    check(field, "not_in", value, not expected)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("input.s", "world", True),
        ("input.s", "", True),
        ("input.s", "World", False),
        ("input.num_s", "1", True),
        ("input.num_s", 1, False),  # substring needs a string
        ("input.list", 1, True),
        ("input.list", "1", True),  # numeric equality inside lists
        ("input.list", 3, True),
        ("input.list", "two", True),
        ("input.list", [4], True),
        ("input.list", 4, False),
        ("input.list", True, False),
        ("input.obj", "k", True),
        ("input.obj", "x", False),
        ("input.obj", 1, False),
        ("input.n", 1, False),
        ("input.flag", True, False),
        ("input.null", None, False),
        ("input.missing", "x", False),
        ("steps.check.output.tags", "a", True),
    ],
)
def test_contains(field: str, value: Any, expected: bool) -> None:
    check(field, "contains", value, expected)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("input.s", "^hello", True),
        ("input.s", "wor", True),  # search, not fullmatch
        ("input.s", "^world", False),
        ("input.s", r"\d", False),
        ("input.num_s", r"^\d+$", True),
        ("input.n", r"^\d+$", False),  # non-strings never match
        ("input.list", "two", False),
        ("input.null", ".*", False),
        ("input.flag", "True", False),
        ("input.missing", ".*", False),
        ("input.empty", "^$", True),
    ],
)
def test_matches(field: str, value: str, expected: bool) -> None:
    check(field, "matches", value, expected)


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("input.n", True),
        ("input.null", True),  # present with null
        ("input.empty", True),
        ("input.list.3.0", True),
        ("input.list.4", False),
        ("input.missing", False),
        ("input.s.x", False),
        ("steps.check.output.ok", True),
        ("steps.other", False),
        ("item", False),
    ],
)
def test_exists(field: str, expected: bool) -> None:
    check(field, "exists", None, expected)


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("==", None, False),
        ("!=", None, True),
        (">", 0, False),
        (">=", 0, False),
        ("<", 0, False),
        ("<=", 0, False),
        ("in", [None], False),
        ("not_in", [None], True),
        ("contains", "", False),
        ("matches", ".*", False),
        ("exists", None, False),
    ],
)
def test_every_operator_on_missing_field(op: str, value: Any, expected: bool) -> None:
    check("steps.never.output.x", op, value, expected)


A_TRUE = {"field": "input.n", "op": "==", "value": 10}
A_FALSE = {"field": "input.n", "op": "==", "value": 11}
MISSING_EQ = {"field": "input.missing", "op": "==", "value": 1}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"and": [A_TRUE]}, True),
        ({"and": [A_TRUE, A_TRUE]}, True),
        ({"and": [A_TRUE, A_FALSE]}, False),
        ({"or": [A_FALSE, A_TRUE]}, True),
        ({"or": [A_FALSE, A_FALSE]}, False),
        ({"not": A_TRUE}, False),
        ({"not": A_FALSE}, True),
        ({"not": MISSING_EQ}, True),
        ({"not": {"not": A_TRUE}}, True),
        ({"and": [A_TRUE, {"or": [A_FALSE, {"not": A_FALSE}]}]}, True),
        ({"or": [{"and": [A_TRUE, A_FALSE]}, {"and": [A_FALSE, A_TRUE]}]}, False),
        (
            {
                "and": [
                    {"field": "steps.check.output.ok", "op": "==", "value": True},
                    {"field": "steps.check.output.score", "op": ">", "value": 0.5},
                    {"not": {"field": "steps.check.output.tags", "op": "contains", "value": "z"}},
                ]
            },
            True,
        ),
    ],
)
def test_nesting(raw: dict[str, Any], expected: bool) -> None:
    assert evaluate(CONDITION.validate_python(raw), VIEW) is expected


def test_and_short_circuits_before_missing_paths() -> None:
    raw = {"and": [A_FALSE, {"field": "steps.x.output", "op": ">", "value": 1}]}
    assert evaluate(CONDITION.validate_python(raw), {"input": {"n": 10}}) is False


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (A_TRUE, ["input.n"]),
        ({"and": [A_TRUE, A_FALSE, MISSING_EQ]}, ["input.n", "input.missing"]),
        (
            {
                "or": [
                    {"not": {"field": "steps.b.output", "op": "exists"}},
                    {"field": "state.k", "op": "exists"},
                ]
            },
            ["steps.b.output", "state.k"],
        ),
    ],
)
def test_referenced_paths(raw: dict[str, Any], expected: list[str]) -> None:
    assert referenced_paths(CONDITION.validate_python(raw)) == expected


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        (1, 1.0, True),
        (1, "1", True),
        ("1", 1, True),
        ("1", "1.0", False),
        (True, 1, False),
        (1, True, False),
        (False, 0, False),
        (True, True, True),
        (None, None, True),
        (None, 0, False),
        ("1_000", 1000, False),
        ("nan", float("nan"), False),
        (float("nan"), float("nan"), False),
        ("1e2", 100, True),
        ("-2.50", -2.5, True),
        ("+3", 3, True),
        (".5", 0.5, True),
        (10**30, str(10**30), True),
        (10**30 + 1, str(10**30), False),
        ([1, [2]], ["1", ["2"]], True),
        ({"a": 1}, {"a": 1.0}, True),
        ({"a": 1}, {"b": 1}, False),
        ([True], [1], False),
        ("a", ["a"], False),
    ],
)
def test_values_equal(left: Any, right: Any, expected: bool) -> None:
    assert values_equal(left, right) is expected
    assert values_equal(right, left) is expected


@pytest.mark.parametrize(
    "op", ["==", "!=", ">", ">=", "<", "<=", "in", "not_in", "contains", "matches", "exists"]
)
@pytest.mark.parametrize("left", [None, True, 0, 1.5, "x", "7", [1], {"a": 1}])
@pytest.mark.parametrize("right", [None, False, 3, "y", "7", [1, "x"], {"a": 1}, "(unclosed"])
def test_compare_never_raises(op: str, left: Any, right: Any) -> None:
    assert compare(op, left, right) in (True, False)
