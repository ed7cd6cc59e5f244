"""parse_duration_s: the duration forms users write in workflow definitions, as seconds."""

from __future__ import annotations

import math

import pytest

from flowcore.durations import parse_duration_s


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (30, 30.0),
        (1.5, 1.5),
        ("10", 10.0),
        ("2.5", 2.5),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("7d", 604800.0),
        ("1w", 604800.0),
        ("1.5h", 5400.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1d2h3m4s5ms", 93784.005),
        ("0s", 0.0),
        (" 2 M ", 120.0),
        ("10S", 10.0),
    ],
)
def test_valid_durations(value: object, seconds: float) -> None:
    assert parse_duration_s(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        None,
        [],
        {"s": 1},
        "",
        "   ",
        "abc",
        "5x",
        "s",
        "h1",
        "1hh",
        "1h-30m",
        "-5s",
        "-1",
        -1,
        -0.5,
        "1 h 30",
        "nan",
        math.nan,
    ],
)
def test_invalid_durations_raise_value_error(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration_s(value)


def test_error_names_the_accepted_units() -> None:
    with pytest.raises(ValueError, match=r"ms, s, m, h, d, w"):
        parse_duration_s("5 fortnights")
