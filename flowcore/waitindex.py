"""Which waiting runs an event can wake, without reading every waiter of its type (ADR 012). Pure.

A ``wait_for_event`` step's filter is resolved when its wait begins (``{"order_id": "o-17"}`` once
``"{{ input.order }}"`` is filled in), so most filters pin one payload field to one value. Such a
waiter is filed under that field and value (:func:`index_entry`); publishing looks up, for each field
some waiter of the type is filed under, the event's own value of it (:func:`lookup_entries`), and
reads only those waiters plus the ones no index covers (their filters are only ``$or``, comparisons,
regular expressions...). The full filter is still matched on every candidate: the index only narrows.

Equality is the engine's (:func:`flowcore.conditions.values_equal`): ``1 == 1.0 == "1"``, ``true`` only
equals ``true``, strings equal strings. A value is filed by a canonical form (:func:`canonical`) that
two values share exactly when they are equal, except where equality is not transitive: a numeric
string (``"10"``) equals the number 10 and 10 equals ``"10.0"``, but ``"10" != "10.0"``. A filter that
pins a field to a numeric string is therefore not indexed (it is read on every publish of its type),
and an event's numeric string is looked up among the numbers only.

Redis (:mod:`flowcore.waitcommits`, :mod:`flowcore.waitstore`): ``{p}:waitpaths:{type}`` (hash: path ->
waiters filed under it), ``{p}:waitix:{digest}`` (set of waiter members per type, path and value),
``{p}:waitscan:{type}`` (set: waiters no index covers). ``{p}:waiting:{type}`` keeps every waiter's
filter, as before; when it holds more waiters than the index and scan sets account for (waiters
registered by a version without the index), publishing reads them all, as before.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from flowcore.conditions import parse_number
from flowcore.eventfilter import MISSING, lookup

_COMBINATORS = frozenset({"$and", "$or", "$not"})
MAX_INDEXED_STRING = 1024  # longer pinned strings are not indexed (read on every publish instead)


def canonical(value: Any) -> str | None:
    """The form an equality-filed value is stored and looked up under; None when not indexable."""
    if value is None:
        return "z:"
    if isinstance(value, bool):
        return "b:1" if value else "b:0"
    if isinstance(value, int):
        return "n:" + str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None  # nan equals nothing
        if math.isfinite(value) and value.is_integer():
            return "n:" + str(int(value))
        return "n:" + repr(value)
    if isinstance(value, str) and len(value) <= MAX_INDEXED_STRING:
        if parse_number(value) is not None:
            return None  # "10" == 10 == "10.0" but "10" != "10.0": not a partition, not indexed
        return "s:" + value
    return None


def _pinned(expected: Any) -> Any:
    """The value an entry pins its path to (``"p": v`` or ``"p": {"==": v}``), or MISSING."""
    if isinstance(expected, dict):
        if set(expected) == {"=="}:
            return expected["=="]
        return MISSING
    if isinstance(expected, list):
        return MISSING
    return expected


def index_entry(flt: dict[str, Any]) -> tuple[str, str] | None:
    """``(path, canonical value)`` a waiter with resolved filter ``flt`` is filed under, or None when
    no top-level entry pins a field to an indexable value (then every publish of its type reads it)."""
    for path in sorted(k for k in flt if k not in _COMBINATORS):
        pinned = _pinned(flt[path])
        if pinned is MISSING:
            continue
        canon = canonical(pinned)
        if canon is not None:
            return path, canon
    return None


def lookup_canonical(actual: Any) -> str | None:
    """The canonical value an event's ``actual`` field is looked up under (None: it can equal no
    indexed value). A numeric string is looked up among the numbers (indexed strings are never numeric)."""
    if isinstance(actual, str):
        number = parse_number(actual)
        if number is not None:
            return canonical(number)
    return canonical(actual)


def lookup_entries(paths: list[str], payload: Any) -> list[tuple[str, str]]:
    """``(path, canonical value)`` of the event's payload for each filed path it has a value at."""
    out: list[tuple[str, str]] = []
    for path in paths:
        actual = lookup(payload, path)
        if actual is MISSING:
            continue
        canon = lookup_canonical(actual)
        if canon is not None:
            out.append((path, canon))
    return out


def digest(event_type: str, path: str, canon: str) -> str:
    """A bounded key part naming one (type, path, value) bucket."""
    raw = "\x00".join((event_type, path, canon)).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def all_needed(total: int, scanned: int, filed: dict[str, int]) -> bool:
    """Whether the waiters hash holds waiters the index and scan sets do not account for (registered
    before the index existed, or counts that drifted): then publishing reads every waiter."""
    return total > scanned + sum(max(n, 0) for n in filed.values())
