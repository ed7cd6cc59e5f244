"""Filing waiters by the value their filter pins (flowcore.waitindex): the index must find exactly the
waiters that the engine's equality would match, never fewer."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

from flowcore.conditions import values_equal
from flowcore.waitindex import all_needed, canonical, digest, index_entry, lookup_canonical, lookup_entries

SAMPLES: list[Any] = [
    0, 1, -1, 7, 7.0, 7.5, 10, 2**53, 2**53 + 1, float(2**53), 1e300, math.inf, -math.inf, math.nan,
    True, False, None, "", "a", "A", "o-17", "7", " 7 ", "7.0", "1e1", "10", "true", "null", [7], {"a": 1},
]


def test_an_indexed_value_is_found_exactly_when_equality_holds() -> None:
    checked = 0
    for expected, actual in itertools.product(SAMPLES, SAMPLES):
        filed = canonical(expected)
        if filed is None:
            continue  # not indexed: every publish of the type reads such a waiter, nothing to miss
        found = lookup_canonical(actual) == filed
        assert found == values_equal(actual, expected), (expected, actual)
        checked += 1
    assert checked > 500


@pytest.mark.parametrize("value", ["7", " 7 ", "1e1", math.nan, [1], {"a": 1}, "x" * 2000])
def test_values_equality_does_not_partition_are_not_indexed(value: Any) -> None:
    assert canonical(value) is None


def test_the_entry_a_filter_is_filed_under() -> None:
    assert index_entry({"order": "o-1", "amount": {">": 3}}) == ("order", "s:o-1")
    assert index_entry({"b": 2, "a": {"==": True}}) == ("a", "b:1")  # the first pinned path, sorted
    assert index_entry({"amount": {">": 3}}) is None
    assert index_entry({"$or": [{"a": 1}, {"a": 2}]}) is None
    assert index_entry({"a": "7"}) is None  # a numeric string: equality is not transitive for it
    assert index_entry({"a": {"nested": 1}}) is None
    assert index_entry({}) is None


def test_an_events_values_at_the_filed_paths() -> None:
    payload = {"order": "o-1", "n": "7", "deep": {"x": [None, False]}}
    assert lookup_entries(["order", "n", "deep.x.1", "deep.x.0", "missing"], payload) == [
        ("order", "s:o-1"), ("n", "n:7"), ("deep.x.1", "b:0"), ("deep.x.0", "z:")]


def test_digests_separate_types_paths_and_values() -> None:
    assert len({digest("t", "a", "s:b"), digest("t", "a", "s:c"), digest("t", "b", "s:b"), digest("u", "a", "s:b")}) == 4


def test_waiters_the_index_does_not_account_for_make_publishing_read_all() -> None:
    assert not all_needed(5, 2, {"order": 3})
    assert all_needed(6, 2, {"order": 3})
    assert all_needed(1, 0, {"order": -1})  # drifted counts never hide a waiter
