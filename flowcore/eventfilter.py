"""Event filters: which event payloads fire an event trigger.

A filter is a JSON object; an event fires the trigger when every entry of it holds (an empty
filter matches every payload of the trigger's event type). An entry is one of:

``"path": value``
    The payload value at ``path`` equals ``value``, with the equality rules of the engine's
    conditions (:mod:`flowcore.conditions`: ``1 == 1.0``, ``"10" == 10``, ``true != 1``).
    ``path`` is a key, or keys joined with dots (``"object.bucket"``); a number selects a list
    element (``"records.0.name"``).
``"path": {nested filter}``
    A nested object is matched as a filter on the value at ``path``: ``{"object": {"bucket": "in"}}``
    is the same as ``{"object.bucket": "in"}``.
``"path": {"op": value, ...}``
    An object whose keys are all operators compares with them (all must hold): ``==``, ``!=``,
    ``>``, ``>=``, ``<``, ``<=``, ``in``, ``not_in``, ``contains``, ``matches``, ``exists``.
    A missing path makes ``!=`` and ``not_in`` true, ``exists: false`` true, everything else false.
``"$and": [filters]``, ``"$or": [filters]``, ``"$not": filter``
    Combinations.

Filters are checked when a trigger is created (:func:`validate`), so matching never raises.

What looks like an operator must be one, so that a typo is refused instead of becoming a field
name that no payload has (a trigger that silently never fires):

- a key, or a dotted part of a path, made only of ``= ! < > ~`` is an operator; one that is not
  ``==``, ``!=``, ``>``, ``>=``, ``<`` or ``<=`` (``=<``, ``=``, ``<>``, ``=>``) is an error;
- an object under a path is either all operators (a comparison) or none (a nested filter): mixing
  them (``{">": 1, "curency": "EUR"}``) is an error. A payload field named like a word operator
  (``in``, ``exists``) is reached with a dotted path: ``"rule.in": 3``.
"""

from __future__ import annotations

from typing import Any

from flowcore import patterns
from flowcore.conditions import compare, values_equal

OPERATORS = frozenset({"==", "!=", ">", ">=", "<", "<=", "in", "not_in", "contains", "matches", "exists"})
_COMBINATORS = frozenset({"$and", "$or", "$not"})
_WHEN_MISSING = {"!=": True, "not_in": True}
_MISSING: Any = object()
MAX_DEPTH = 16


_SYMBOLS = frozenset("=!<>~")
_SYMBOLIC = ("==", "!=", ">", ">=", "<", "<=")
# Common misspellings, for the error message only.
_DID_YOU_MEAN = {
    "=<": "<=",
    "=>": ">=",
    "=": "==",
    "===": "==",
    "<>": "!=",
    "!==": "!=",
    "=!": "!=",
    "~": "matches",
    "=~": "matches",
}


class FilterError(ValueError):
    """A filter that cannot be used; the message names where."""


def _is_operator_object(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(k in OPERATORS for k in value)


def _looks_like_operator(key: str) -> bool:
    return bool(key) and all(c in _SYMBOLS for c in key)


def _not_an_operator(where: str, key: str) -> FilterError:
    hint = _DID_YOU_MEAN.get(key)
    fix = f"did you mean {hint!r}? " if hint else ""
    return FilterError(
        f"{where}: {key!r} is not an operator; {fix}operators are {', '.join(_SYMBOLIC)}, in, not_in,"
        " contains, matches, exists"
    )


def _check_operator_keys(expected: dict[str, Any], where: str, path: str) -> None:
    """An object under a path with an operator-looking key must be a pure comparison."""
    ops = [k for k in expected if k in OPERATORS]
    for key in expected:
        if key not in OPERATORS and _looks_like_operator(key):
            raise _not_an_operator(f"{where}.{key}", key)
    if ops and len(ops) < len(expected):
        others = [k for k in expected if k not in OPERATORS]
        words = [k for k in ops if not _looks_like_operator(k)]
        fix = (
            f"; a payload field named {words[0]!r} is written as a dotted path, '{path}.{words[0]}'"
            if words
            else ""
        )
        raise FilterError(
            f"{where}: mixes operators ({', '.join(ops)}) with field names ({', '.join(others)}); an object is"
            f" either all operators (a comparison) or a nested filter: put each in its own $and entry{fix}"
        )


def validate(flt: Any, where: str = "event_filter", depth: int = 0) -> None:
    """Raise :class:`FilterError` naming the first problem of ``flt``."""
    if depth > MAX_DEPTH:
        raise FilterError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if not isinstance(flt, dict):
        raise FilterError(f"{where}: a filter must be a JSON object, got {type(flt).__name__}")
    for key, expected in flt.items():
        here = f"{where}.{key}"
        if key.startswith("$"):
            if key not in _COMBINATORS:
                raise FilterError(f"{here}: unknown combinator; use $and, $or or $not")
            if key == "$not":
                validate(expected, here, depth + 1)
            else:
                if not isinstance(expected, list) or not expected:
                    raise FilterError(f"{here}: needs a non-empty list of filters")
                for i, part in enumerate(expected):
                    validate(part, f"{here}[{i}]", depth + 1)
            continue
        if not key or any(not part for part in key.split(".")):
            raise FilterError(f"{here}: a path must be keys joined with single dots")
        for part in key.split("."):
            if part in OPERATORS and _looks_like_operator(part):
                raise FilterError(
                    f"{here}: {part!r} is an operator, not a path; put it under one: {{'path': {{{part!r}: 1}}}}"
                )
            if _looks_like_operator(part):
                raise _not_an_operator(here, part)
        if isinstance(expected, dict):
            _check_operator_keys(expected, here, key)
        if _is_operator_object(expected):
            for op, value in expected.items():
                if op in ("in", "not_in") and not isinstance(value, list):
                    raise FilterError(f"{here}: '{op}' needs a list")
                if op == "matches":
                    if not isinstance(value, str):
                        raise FilterError(f"{here}: 'matches' needs a regular expression string")
                    try:
                        patterns.check(value)
                    except patterns.PatternError as exc:
                        raise FilterError(f"{here}: {exc}") from None
                if op == "exists" and not isinstance(value, bool):
                    raise FilterError(f"{here}: 'exists' needs true or false")
        elif isinstance(expected, dict) and expected:
            validate(expected, here, depth + 1)


MISSING: Any = _MISSING  # what :func:`lookup` gives for a path the value does not have


def lookup(value: Any, path: str) -> Any:
    """The value at a dotted ``path`` (a number selects a list element), or :data:`MISSING`."""
    return _lookup(value, path)


def _lookup(value: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(value, dict):
            if part not in value:
                return _MISSING
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _check_ops(ops: dict[str, Any], actual: Any) -> bool:
    for op, value in ops.items():
        if op == "exists":
            if (actual is not _MISSING) != value:
                return False
        elif actual is _MISSING:
            if not _WHEN_MISSING.get(op, False):
                return False
        elif not compare(op, actual, value):
            return False
    return True


def matches(flt: dict[str, Any], payload: Any) -> bool:
    """Whether ``payload`` passes a validated filter; never raises."""
    for key, expected in flt.items():
        if key == "$and":
            if not all(matches(part, payload) for part in expected):
                return False
        elif key == "$or":
            if not any(matches(part, payload) for part in expected):
                return False
        elif key == "$not":
            if matches(expected, payload):
                return False
        else:
            actual = _lookup(payload, key)
            if _is_operator_object(expected):
                if not _check_ops(expected, actual):
                    return False
            elif isinstance(expected, dict) and expected:
                if actual is _MISSING or not matches(expected, actual):
                    return False
            elif actual is _MISSING or not values_equal(actual, expected):
                return False
    return True
