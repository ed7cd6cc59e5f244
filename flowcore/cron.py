"""Cron schedules: parsing, and the next fire time in an IANA timezone across DST changes.

Accepted expressions
    Five fields ``minute hour day-of-month month day-of-week`` with ``*``, numbers, ranges ``a-b``,
    steps ``*/n`` ``a-b/n`` ``a/n``, lists ``a,b``, month names ``jan``-``dec`` and weekday names
    ``sun``-``sat`` (``0`` and ``7`` are Sunday). When both day fields are restricted a day matches
    if either does (classic cron). Descriptors: ``@yearly`` (``@annually``), ``@monthly``,
    ``@weekly``, ``@daily`` (``@midnight``), ``@hourly``, and ``@every <duration>`` (``@every 5m``,
    at least one second; intervals run in absolute time from the trigger's creation, so a timezone
    does not change them).

Daylight saving time (the rules of Vixie cron, in wall-clock time of the trigger's timezone)
    * A wall-clock time that does not exist (the hour skipped in spring) fires once, at the first
      instant after the gap, when the hour field names hours; a schedule whose hour field is a
      wildcard (``*``, ``*/2``) simply has no fire in the hour that does not exist.
    * A wall-clock time that happens twice (the hour repeated in autumn) fires once, at its first
      occurrence, when the hour field names hours; with a wildcard hour field it fires at both, so
      ``*/15 * * * *`` keeps firing every 15 minutes of real time.
    * Two candidate times that land on the same instant fire once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
_MONTHS = {m: i for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1)}
_WEEKDAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
# (name, lowest, highest, names)
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _WEEKDAYS),
)
_PART = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")
# A schedule that has no fire in this many years never fires (e.g. ``0 0 30 2 *``).
_HORIZON_DAYS = 366 * 8 + 2
# DST shifts are at most a few hours; candidates further than this past the best one cannot beat it.
_FOLD_SLACK = timedelta(hours=4)


@dataclass(frozen=True)
class CronSpec:
    expression: str
    minutes: tuple[int, ...] = ()
    hours: tuple[int, ...] = ()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()  # 0 = Sunday
    dom_star: bool = True
    dow_star: bool = True
    hour_star: bool = True
    every_s: float | None = None  # ``@every``: an interval in absolute time instead of fields

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.dom_star or self.dow_star:
            return dom and dow
        return dom or dow


def _bad(expression: str, why: str) -> InvalidInput:
    return InvalidInput(f"invalid cron expression {expression!r}: {why}", field="cron_expression")


def _value(token: str, lo: int, hi: int, names: dict[str, int], expression: str, name: str) -> int:
    if token.isdigit():
        number = int(token)
    elif token in names:
        number = names[token]
    else:
        raise _bad(expression, f"{token!r} is not a valid {name}")
    if not lo <= number <= hi:
        raise _bad(expression, f"{name} {number} is outside {lo}-{hi}")
    return number


def _field(text: str, index: int, expression: str) -> tuple[set[int], bool]:
    name, lo, hi, names = _FIELDS[index]
    values: set[int] = set()
    star = text.startswith("*")
    for part in text.split(","):
        match = _PART.match(part)
        if not match:
            raise _bad(expression, f"{part!r} is not a valid {name} field")
        base, step_text = match.group(1), match.group(2)
        step = int(step_text) if step_text else 1
        if step < 1:
            raise _bad(expression, f"the step of {part!r} must be at least 1")
        if base == "*":
            first, last = lo, hi
        elif "-" in base:
            a, b = base.split("-", 1)
            first, last = _value(a, lo, hi, names, expression, name), _value(b, lo, hi, names, expression, name)
            if first > last:
                raise _bad(expression, f"the range {base!r} of {name} runs backwards")
        else:
            first = _value(base, lo, hi, names, expression, name)
            last = hi if step_text else first
        values.update(range(first, last + 1, step))
    return values, star


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
    parts = text.split(" ")
    if len(parts) != 5:
        raise _bad(expression, f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}")
    minutes, _ = _field(parts[0], 0, expression)
    hours, hour_star = _field(parts[1], 1, expression)
    days, dom_star = _field(parts[2], 2, expression)
    months, _ = _field(parts[3], 3, expression)
    weekdays, dow_star = _field(parts[4], 4, expression)
    weekdays = {d % 7 for d in weekdays}
    return CronSpec(
        expression=expression.strip(),
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=frozenset(days),
        months=frozenset(months),
        weekdays=frozenset(weekdays),
        dom_star=dom_star,
        dow_star=dow_star,
        hour_star=hour_star,
    )


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


def _exists(naive: datetime, tz: ZoneInfo) -> bool:
    back = naive.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    return back == naive


def _instants(naive: datetime, tz: ZoneInfo, hour_star: bool) -> list[datetime]:
    """The UTC instants at which wall-clock time ``naive`` in ``tz`` fires (0, 1 or 2 of them)."""
    first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first == second:
        return [first]
    if not _exists(naive, tz):  # in the spring gap
        if hour_star:
            return []
        after = naive
        while not _exists(after, tz):  # the first wall-clock minute past the gap
            after += timedelta(minutes=1)
        return [after.replace(tzinfo=tz).astimezone(UTC)]
    # Repeated in autumn: fold 0 is the first occurrence.
    return sorted({first, second}) if hour_star else [min(first, second)]


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
    # Wall-clock times earlier than this cannot fire after ``after``, whatever the DST shift.
    floor = after.astimezone(tz).replace(tzinfo=None) - _FOLD_SLACK
    best: datetime | None = None
    for offset in range(_HORIZON_DAYS):
        day = floor.date() + timedelta(days=offset)
        if best is not None and datetime(day.year, day.month, day.day) - _FOLD_SLACK > best.astimezone(tz).replace(tzinfo=None):
            break
        if not spec.day_matches(day):
            continue
        for hour in spec.hours:
            if datetime(day.year, day.month, day.day, hour, 59) < floor:
                continue
            for minute in spec.minutes:
                naive = datetime(day.year, day.month, day.day, hour, minute)
                if naive < floor:
                    continue
                for instant in _instants(naive, tz, spec.hour_star):
                    if instant > after and (best is None or instant < best):
                        best = instant
                if best is not None and naive.replace(tzinfo=tz).astimezone(UTC) > best + _FOLD_SLACK:
                    return best
    if best is None:
        raise _bad(spec.expression, "it never fires")
    return best


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
