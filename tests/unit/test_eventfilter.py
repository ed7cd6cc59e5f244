"""Event filters: equality on nested paths, the engine's operators, combinations, validation."""

from __future__ import annotations

from typing import Any

import pytest

from flowcore import eventfilter

PAYLOAD: dict[str, Any] = {
    "bucket": "input-data",
    "object": {"key": "reports/2026/q3.csv", "size": 2048, "tags": ["csv", "finance"]},
    "records": [{"name": "first"}, {"name": "second"}],
    "count": "10",
    "flag": True,
    "nothing": None,
}


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({}, True),
        ({"bucket": "input-data"}, True),
        ({"bucket": "other"}, False),
        ({"object.key": "reports/2026/q3.csv"}, True),
        ({"object": {"size": 2048}}, True),
        ({"object": {"size": 2048, "key": "x"}}, False),
        ({"records.1.name": "second"}, True),
        ({"records.5.name": "second"}, False),
        ({"count": 10}, True),  # numeric string against a number, as conditions compare
        ({"flag": 1}, False),  # booleans are not numbers
        ({"nothing": None}, True),
        ({"missing": None}, False),
        ({"object.size": {">": 1000, "<=": 2048}}, True),
        ({"object.size": {">": 4096}}, False),
        ({"object.key": {"matches": r"\.csv$"}}, True),
        ({"object.tags": {"contains": "finance"}}, True),
        ({"bucket": {"in": ["a", "input-data"]}}, True),
        ({"bucket": {"not_in": ["a", "input-data"]}}, False),
        ({"missing": {"!=": "x"}}, True),
        ({"missing": {"not_in": ["x"]}}, True),
        ({"missing": {">": 1}}, False),
        ({"missing": {"exists": False}}, True),
        ({"object.key": {"exists": True}}, True),
        ({"$or": [{"bucket": "x"}, {"object.size": 2048}]}, True),
        ({"$and": [{"bucket": "input-data"}, {"flag": False}]}, False),
        ({"$not": {"bucket": "x"}}, True),
        ({"bucket": "input-data", "object": {"tags": {"contains": "nope"}}}, False),
        ({"object.tags.in": 1}, False),  # a field named like a word operator: a dotted path
    ],
)
def test_matching(flt: dict[str, Any], expected: bool) -> None:
    eventfilter.validate(flt)
    assert eventfilter.matches(flt, PAYLOAD) is expected


@pytest.mark.parametrize("payload", [None, 3, "text", [1, 2], {"bucket": {"deep": 1}}])
def test_odd_payloads_never_raise(payload: Any) -> None:
    flt = {"bucket": "input-data", "object.size": {">": 1}, "bucket.deep": {"exists": True}}
    eventfilter.validate(flt)
    assert eventfilter.matches(flt, payload) is False


@pytest.mark.parametrize(
    ("flt", "needle"),
    [
        ([], "must be a JSON object"),
        ({"$xor": []}, "unknown combinator"),
        ({"$or": []}, "non-empty list"),
        ({"a..b": 1}, "single dots"),
        ({"a": {"in": "x"}}, "'in' needs a list"),
        ({"a": {"matches": "("}}, "invalid regular expression"),
        ({"a": {"exists": "yes"}}, "'exists' needs true or false"),
        ({"a": {"b": {"matches": 3}}}, "event_filter.a.b"),
        # what looks like an operator must be one (docs/triggers.md)
        ({"a": {"=<": 1}}, "event_filter.a.=<: '=<' is not an operator; did you mean '<='?"),
        ({"a": {"b": {"=": 1}}}, "event_filter.a.b.=: '=' is not an operator; did you mean '=='?"),
        ({"a.!": 1}, "event_filter.a.!: '!' is not an operator"),
        ({"<=": 1}, "event_filter.<=: '<=' is an operator, not a path"),
        ({"a": {">": 1, "b": 2}}, "event_filter.a: mixes operators"),
        ({"a": {"exists": True, "b": 2}}, "written as a dotted path, 'a.exists'"),
    ],
)
def test_invalid_filters_name_the_place(flt: Any, needle: str) -> None:
    with pytest.raises(eventfilter.FilterError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        eventfilter.validate(flt)


def test_nesting_is_bounded() -> None:
    flt: dict[str, Any] = {"a": 1}
    for _ in range(20):
        flt = {"$not": flt}
    with pytest.raises(eventfilter.FilterError, match="deeper"):
        eventfilter.validate(flt)
