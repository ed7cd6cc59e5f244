"""User regular expressions run on RE2 (flowcore.patterns): linear time, refused at submission if RE2 cannot run them."""

from __future__ import annotations

import pytest

from flowcore import eventfilter, patterns
from flowcore.conditions import compare

CATASTROPHIC = r"(a+)+$"  # exponential for a backtracking engine on 'a' * n + 'b'


def test_a_catastrophic_pattern_answers_at_once() -> None:
    assert patterns.search(CATASTROPHIC, "a" * 27 + "b") is False
    assert patterns.search(CATASTROPHIC, "a" * 200_000 + "b") is False
    assert compare("matches", "a" * 27 + "b", CATASTROPHIC) is False
    assert eventfilter.matches({"name": {"matches": CATASTROPHIC}}, {"name": "a" * 27 + "b"}) is False


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [("^ab", "abc", True), ("b", "abc", True), ("^b", "abc", False), (r"\d{3}-\d{4}", "call 555-1234", True),
     ("(?i)HELLO", "hello", True), (r"^[a-z]+\.csv$", "data.csv", True), ("é", "café", True)],
)
def test_search_semantics(pattern: str, text: str, expected: bool) -> None:
    assert patterns.search(pattern, text) is expected


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [(r"(a)\1", "invalid escape"), (r"a(?=b)", "perl operator"), (r"(?<!a)b", "perl operator"), ("(", "missing )"),
     ("x" * (patterns.MAX_PATTERN_LENGTH + 1), "longer than")],
)
def test_patterns_re2_cannot_run_are_refused(pattern: str, problem: str) -> None:
    with pytest.raises(patterns.PatternError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        patterns.check(pattern)
    assert patterns.search(pattern, "aa") is False  # never raises at run time
    with pytest.raises(eventfilter.FilterError, match=r"event_filter\.name"):
        eventfilter.validate({"name": {"matches": pattern}})


def test_a_pattern_needing_too_much_memory_is_refused() -> None:
    with pytest.raises(patterns.PatternError):
        patterns.check("((((((a{100}){100}){100}){100}){100}){100})")
