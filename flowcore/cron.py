"""Cron schedules: parsing, and the next fire time in an IANA timezone across DST changes.

A thin wrapper over `cronsim <https://github.com/cuu508/cronsim>`_, which does the calendar
arithmetic and the DST rules of Debian (Vixie) cron. This module adds what cronsim does not have:
the descriptors, ``@every``, error messages that name the field, "never fires" as an error, and a
guarantee that each fire is strictly after the previous one.

Accepted expressions
    Five fields ``minute hour day-of-month month day-of-week`` with ``*``, numbers, ranges ``a-b``,
    steps ``*/n`` ``a-b/n`` ``a/n``, lists ``a,b``, month names ``jan``-``dec`` and weekday names
    ``sun``-``sat`` (``0`` and ``7`` are Sunday); cronsim's extensions ``L`` (last day of the
    month), ``LW`` (last weekday of the month), ``5L`` (last Friday) and ``mon#2`` (second Monday).
    When both day fields are restricted a day matches if either does (classic cron). Descriptors:
    ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily`` (``@midnight``), ``@hourly``,
    and ``@every <duration>`` (``@every 5m``, at least one second; intervals run in absolute time from
    the trigger's creation, so a timezone does not change them, and DST days have no extra fire).

Daylight saving time (Debian cron's rules, in wall-clock time of the trigger's timezone)
    * A job at a fixed time (both the minute and the hour field name values: ``30 2 * * *``) fires
      once a day: a time that does not exist (the hour skipped in spring) fires at the first instant
      after the gap; a time that happens twice (the hour repeated in autumn) fires at its first
      occurrence only.
    * Any other job (``*/15 * * * *``, ``0 * * * *``, ``* 2 * * *``) follows real time: no fire in
      the skipped hour, and fires in both occurrences of the repeated hour.
    * A fire is always strictly after the previous one, whatever the clock did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from flowcore.durations import parse_duration_s
from flowcore.errors import InvalidInput

DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# (name in messages, the name cronsim's errors use, lowest, highest, other values allowed)
_FIELDS = (
    ("minute", "minute", 0, 59, ""),
    ("hour", "hour", 0, 23, ""),
    ("day of month", "day-of-month", 1, 31, ", L or LW"),
    ("month", "month", 1, 12, " or jan-dec"),
    ("day of week", "day-of-week", 0, 7, " or sun-sat, 5L, mon#2"),
)
_NUMBER = re.compile(r"(?<![/#\d])\d+")  # a value, not a step (*/5) or an nth weekday (mon#2)
_FORMS = "numbers, names, ranges a-b, steps */n, lists a,b"
# Fires of a fixed-time job that can fall before ``after`` in a repeated hour: one a minute for
# at most the largest DST shift (two hours), with room to spare.
_REPEAT_GUARD = 24 * 60


@dataclass(frozen=True)
class CronSpec:
    """A parsed schedule: five cron fields (``fields``), or an ``@every`` interval (``every_s``)."""

    expression: str
    fields: str = ""
    every_s: float | None = None


def _bad(expression: str, why: str) -> InvalidInput:
    return InvalidInput(f"invalid cron expression {expression!r}: {why}", field="cron_expression")


def _check(expression: str, fields: str) -> None:
    """Let cronsim parse ``fields``; translate its terse errors into ones that name the field."""
    probe = datetime(2000, 1, 1, tzinfo=UTC)
    try:
        CronSim(fields, probe)
    except CronSimError as exc:
        parts = fields.split(" ")
        for index, (name, theirs, lo, hi, others) in enumerate(_FIELDS):
            if str(exc) != f"Bad {theirs}":
                continue
            for number in _NUMBER.findall(parts[index]):
                if not lo <= int(number) <= hi:
                    raise _bad(expression, f"{name} {int(number)} is outside {lo}-{hi}") from None
            if index == 2:  # a valid day that no chosen month has (``0 0 30 2 *``)
                try:
                    CronSim(" ".join([*parts[:3], "*", parts[4]]), probe)
                except CronSimError:
                    pass
                else:
                    raise _bad(expression, f"it never fires: no chosen month has day {parts[2]}") from None
            allowed = f"{lo}-{hi}{others}"
            raise _bad(expression, f"the {name} field {parts[index]!r} is not valid ({allowed}; {_FORMS})") from None
        raise _bad(expression, str(exc)) from None


def parse(expression: str) -> CronSpec:
    """Parse a cron expression or descriptor; :class:`InvalidInput` (field ``cron_expression``) if bad."""
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidInput("cron_expression must be a non-empty string such as '0 * * * *'", field="cron_expression")
    text = " ".join(expression.strip().lower().split())
    if text.startswith("@every"):
        try:
            every_s = parse_duration_s(text[len("@every") :].strip())
        except (ValueError, TypeError) as exc:
            raise _bad(expression, f"@every needs a duration such as '5m': {exc}") from None
        if every_s < 1:
            raise _bad(expression, "@every needs an interval of at least 1s")
        return CronSpec(expression=expression.strip(), every_s=every_s)
    if text.startswith("@"):
        if text not in DESCRIPTORS:
            raise _bad(expression, f"unknown descriptor; use one of {', '.join(DESCRIPTORS)} or @every <duration>")
        text = DESCRIPTORS[text]
    count = len(text.split(" "))
    if count != 5:  # cronsim also reads a seconds field; schedules here are per minute
        raise _bad(expression, f"expected 5 fields (minute hour day-of-month month day-of-week), got {count}")
    _check(expression, text)
    return CronSpec(expression=expression.strip(), fields=text)


def zone(name: str | None) -> ZoneInfo:
    """An IANA timezone; :class:`InvalidInput` (field ``timezone``) for an unknown name."""
    if name is None or name == "":
        return ZoneInfo("UTC")
    if not isinstance(name, str) or name.startswith(("/", ".")) or ".." in name:
        raise InvalidInput(f"unknown timezone {name!r}; use an IANA name such as 'Europe/Paris'", field="timezone")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"unknown timezone {name!r}; use an IANA name such as 'Europe/Paris' or 'UTC'", field="timezone"
        ) from None


def next_fire(spec: CronSpec, after: datetime, tz: ZoneInfo, *, anchor: datetime | None = None) -> datetime:
    """The first fire strictly after ``after`` (an aware datetime), as an aware UTC datetime.

    ``anchor`` is where ``@every`` intervals count from (the trigger's creation); ignored otherwise.
    Raises :class:`InvalidInput` when the schedule never fires (``0 0 30 2 *``).
    """
    after = after.astimezone(UTC)
    if spec.every_s is not None:
        start = (anchor or after).astimezone(UTC)
        if after < start:
            return start
        periods = int((after - start).total_seconds() // spec.every_s) + 1
        return start + timedelta(seconds=periods * spec.every_s)
    # cronsim counts a fixed-time job in naive wall-clock time, which forgets which occurrence of a
    # repeated hour ``after`` was in: from the second one it would answer the first, in the past.
    times = CronSim(spec.fields, after.astimezone(tz))
    for _ in range(_REPEAT_GUARD):
        try:
            fire = next(times).astimezone(UTC)
        except StopIteration:
            break
        if fire > after:
            return fire
    raise _bad(spec.expression, "it never fires")


def fires_between(spec: CronSpec, start: datetime, end: datetime, tz: ZoneInfo, *, limit: int = 1000,
                  anchor: datetime | None = None) -> list[datetime]:
    """Fire instants in ``(start, end]``, at most ``limit`` of them (for catch-up accounting)."""
    out: list[datetime] = []
    current = start
    while len(out) < limit:
        current = next_fire(spec, current, tz, anchor=anchor)
        if current > end:
            break
        out.append(current)
    return out
