"""Cron parsing and next-fire times, across timezones and DST changes (pure, no clock)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from flowcore import cron
from flowcore.errors import InvalidInput

NY = cron.zone("America/New_York")
PARIS = cron.zone("Europe/Paris")


def fires(expr: str, start: datetime, tz: cron.ZoneInfo, n: int) -> list[str]:
    spec, out, t = cron.parse(expr), [], start
    for _ in range(n):
        t = cron.next_fire(spec, t, tz)
        out.append(t.strftime("%Y-%m-%d %H:%MZ"))
    return out


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_five_fields_in_utc() -> None:
    assert fires("0 * * * *", utc(2026, 1, 1, 10, 30), cron.zone("UTC"), 2) == ["2026-01-01 11:00Z", "2026-01-01 12:00Z"]
    assert fires("*/20 9-10 * * *", utc(2026, 1, 1, 10, 30), cron.zone("UTC"), 3) == [
        "2026-01-01 10:40Z", "2026-01-02 09:00Z", "2026-01-02 09:20Z"]


def test_next_fire_is_strictly_after() -> None:
    spec = cron.parse("0 12 * * *")
    assert cron.next_fire(spec, utc(2026, 5, 1, 12, 0), cron.zone("UTC")) == utc(2026, 5, 2, 12, 0)


def test_names_lists_and_weekday_seven_is_sunday() -> None:
    # 2026-11-21 is a Saturday.
    assert fires("0 9 * * mon-fri", utc(2026, 11, 21), cron.zone("UTC"), 2) == ["2026-11-23 09:00Z", "2026-11-24 09:00Z"]
    assert fires("0 0 * * 7", utc(2026, 11, 21), cron.zone("UTC"), 1) == ["2026-11-22 00:00Z"]
    assert fires("0 0 1 jan,jul *", utc(2026, 2, 1), cron.zone("UTC"), 2) == ["2026-07-01 00:00Z", "2027-01-01 00:00Z"]


def test_day_of_month_or_day_of_week_when_both_restricted() -> None:
    # The 13th, or any Friday: 2026-11-13 is a Friday, then Fri 20, Fri 27.
    assert fires("0 0 13 * fri", utc(2026, 11, 12), cron.zone("UTC"), 3) == [
        "2026-11-13 00:00Z", "2026-11-20 00:00Z", "2026-11-27 00:00Z"]


@pytest.mark.parametrize(
    ("descriptor", "expected"),
    [("@hourly", "2026-03-01 01:00Z"), ("@daily", "2026-03-02 00:00Z"), ("@midnight", "2026-03-02 00:00Z"),
     ("@weekly", "2026-03-08 00:00Z"), ("@monthly", "2026-04-01 00:00Z"), ("@yearly", "2027-01-01 00:00Z"),
     ("@annually", "2027-01-01 00:00Z")],
)
def test_descriptors(descriptor: str, expected: str) -> None:
    # 2026-03-01 is a Sunday.
    assert fires(descriptor, utc(2026, 3, 1, 0, 0), cron.zone("UTC"), 1) == [expected]


def test_every_counts_from_the_anchor_in_absolute_time() -> None:
    spec = cron.parse("@every 90s")
    anchor = utc(2026, 1, 1, 0, 0, 0)
    assert cron.next_fire(spec, utc(2026, 1, 1, 0, 2, 0), NY, anchor=anchor) == utc(2026, 1, 1, 0, 3, 0)
    assert cron.next_fire(spec, utc(2025, 12, 31), NY, anchor=anchor) == anchor


def test_timezone_shifts_the_wall_clock_time() -> None:
    assert fires("0 9 * * *", utc(2026, 1, 10), NY, 1) == ["2026-01-10 14:00Z"]  # EST
    assert fires("0 9 * * *", utc(2026, 7, 10), NY, 1) == ["2026-07-10 13:00Z"]  # EDT
    assert fires("0 9 * * *", utc(2026, 7, 10), cron.zone("Asia/Kolkata"), 1) == ["2026-07-10 03:30Z"]


def test_spring_forward_fixed_hour_in_the_gap_fires_once_after_it() -> None:
    # 2026-03-08 02:00 EST -> 03:00 EDT in New York: 02:30 does not exist that day.
    assert fires("30 2 * * *", utc(2026, 3, 7, 12), NY, 3) == [
        "2026-03-08 07:00Z",  # 03:00 EDT, the first instant after the gap
        "2026-03-09 06:30Z",  # 02:30 EDT
        "2026-03-10 06:30Z",
    ]


def test_spring_forward_wildcard_hour_skips_the_missing_hour() -> None:
    assert fires("*/30 * * * *", utc(2026, 3, 8, 5, 0), NY, 5) == [
        "2026-03-08 05:30Z", "2026-03-08 06:00Z", "2026-03-08 06:30Z",  # 00:30, 01:00, 01:30 EST
        "2026-03-08 07:00Z", "2026-03-08 07:30Z",  # 03:00, 03:30 EDT
    ]


def test_fall_back_fixed_hour_fires_once_at_first_occurrence() -> None:
    # 2026-11-01 02:00 EDT -> 01:00 EST: 01:30 happens twice.
    assert fires("30 1 * * *", utc(2026, 10, 31, 12), NY, 2) == ["2026-11-01 05:30Z", "2026-11-02 06:30Z"]


def test_fall_back_wildcard_hour_fires_in_both_occurrences() -> None:
    assert fires("0,30 * * * *", utc(2026, 11, 1, 4, 40), NY, 5) == [
        "2026-11-01 05:00Z", "2026-11-01 05:30Z",  # 01:00, 01:30 EDT
        "2026-11-01 06:00Z", "2026-11-01 06:30Z",  # 01:00, 01:30 EST
        "2026-11-01 07:00Z",  # 02:00 EST
    ]


def test_europe_dst_dates() -> None:
    # Paris: 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET.
    assert fires("0 8 * * *", utc(2026, 3, 28, 12), PARIS, 2) == ["2026-03-29 06:00Z", "2026-03-30 06:00Z"]
    assert fires("0 8 * * *", utc(2026, 10, 24, 12), PARIS, 2) == ["2026-10-25 07:00Z", "2026-10-26 07:00Z"]


def test_fires_between_lists_each_fire_in_the_window() -> None:
    spec = cron.parse("0 * * * *")
    got = cron.fires_between(spec, utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 3, 0), cron.zone("UTC"))
    assert [t.hour for t in got] == [1, 2, 3]


@pytest.mark.parametrize(
    ("expr", "needle"),
    [("", "non-empty"), ("* * * *", "expected 5 fields"), ("0 * * * * *", "expected 5 fields"),
     ("60 * * * *", "minute 60 is outside 0-59"), ("* 24 * * *", "hour 24"), ("* * 0 * *", "day of month 0"),
     ("* * * 13 *", "month 13"), ("* * * * 8", "day of week 8"), ("1-70 * * * *", "minute 70 is outside 0-59"),
     ("*/0 * * * *", "the minute field '*/0'"), ("5-1 * * * *", "the minute field '5-1'"),
     ("@every", "@every needs"), ("@every 0s", "at least 1s"), ("@fortnightly", "unknown descriptor"),
     ("a * * * *", "the minute field 'a'"), ("1,,2 * * * *", "the minute field '1,,2'")],
)
def test_bad_expressions_name_the_problem(expr: str, needle: str) -> None:
    with pytest.raises(InvalidInput) as info:
        cron.parse(expr)
    assert needle in info.value.message and info.value.field == "cron_expression"


def test_a_schedule_that_never_fires_is_an_error() -> None:
    with pytest.raises(InvalidInput, match="never fires"):
        cron.next_fire(cron.parse("0 0 30 2 *"), utc(2026, 1, 1), cron.zone("UTC"))


def test_leap_day_schedule_finds_the_next_leap_year() -> None:
    assert fires("0 0 29 2 *", utc(2026, 1, 1), cron.zone("UTC"), 1) == ["2028-02-29 00:00Z"]


@pytest.mark.parametrize("name", ["Mars/Olympus", "../etc/passwd", "/etc/localtime", "not a zone"])
def test_unknown_timezones_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput) as info:
        cron.zone(name)
    assert info.value.field == "timezone"


def test_autumn_daily_job_in_the_repeated_hour_fires_once() -> None:
    # Paris 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens twice; croniter 7.0 fires at both.
    assert fires("30 2 * * *", utc(2026, 10, 24, 12), PARIS, 2) == ["2026-10-25 00:30Z", "2026-10-26 01:30Z"]


def test_from_the_second_occurrence_of_a_repeated_hour_the_next_fire_is_tomorrow() -> None:
    # 06:10Z is 01:10 EST, the second 01:10 of 2026-11-01 in New York; 01:30 EDT (05:30Z) is past.
    spec = cron.parse("30 1 * * *")
    assert cron.next_fire(spec, utc(2026, 11, 1, 6, 10), NY) == utc(2026, 11, 2, 6, 30)
    every_minute_of_the_hour = cron.parse("* 1 * * *")  # minute wildcard: real time, both occurrences
    assert cron.next_fire(every_minute_of_the_hour, utc(2026, 11, 1, 6, 10), NY) == utc(2026, 11, 1, 6, 11)


def test_every_fires_once_per_interval_across_dst_changes() -> None:
    spec = cron.parse("@every 1d")
    anchor = utc(2026, 10, 24, 0, 30)  # 02:30 CEST
    got = cron.fires_between(spec, anchor, utc(2026, 10, 27), PARIS, anchor=anchor)
    assert got == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 0, 30)]  # 24 h apart, once on the DST day


def test_cronsim_extensions_last_day_and_nth_weekday() -> None:
    assert fires("0 0 L * *", utc(2026, 2, 1), cron.zone("UTC"), 2) == ["2026-02-28 00:00Z", "2026-03-31 00:00Z"]
    assert fires("0 9 * * mon#2", utc(2026, 11, 1), cron.zone("UTC"), 1) == ["2026-11-09 09:00Z"]
    assert fires("0 0 * * 5L", utc(2026, 11, 1), cron.zone("UTC"), 1) == ["2026-11-27 00:00Z"]
