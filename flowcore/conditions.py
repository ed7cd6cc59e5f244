"""Evaluating branch and decision conditions against the workflow view.

A condition never raises while it is evaluated: whatever the types it meets, each operator answers
true or false. The rules, in the order they apply:

Missing fields
    A field whose path does not resolve (see :mod:`flowcore.paths`) makes ``exists`` false and
    ``!=`` and ``not_in`` true; every other operator is false. A field that is present with value
    ``null`` is *not* missing: ``exists`` is true and ``== null`` matches it.

Numbers
    ``int`` and ``float`` are numbers; booleans are not (``true == 1`` is false, ``true > 0`` is
    false). A *numeric string* (``"10"``, ``"-2.5"``, ``"1e3"``, surrounding whitespace allowed; not
    ``"nan"``, ``"inf"`` or ``"1_000"``) is read as a number when the other side is a number, so
    ``"10" > 9`` and ``"1" == 1.0`` are true, while ``"abc" > 9`` is false. Two strings always
    compare as strings, even when both look numeric: ``"10" > "9"`` is false and ``"1" == "1.0"``
    is false.

Equality (``==``, ``!=``, ``in``, ``not_in``, list ``contains``)
    Numbers (and numeric strings against numbers) by value, lists element-wise and dicts key-wise
    with these same rules, everything else by type and value. ``in``/``not_in`` test whether the
    field equals one element of the condition's list.

Ordering (``>``, ``>=``, ``<``, ``<=``)
    Number against number (or numeric string), or string against string (lexicographically, by
    code point). Any other pair is false, in both directions.

``contains``
    Field is a string: the value must be a string and a substring. Field is a list: some element
    equals the value. Field is a dict: the value is one of its keys. Anything else: false.

``matches``
    A search for the value (a pattern, checked when the definition was submitted) in the field, when
    the field is a string; false for any other field type. Patterns run on RE2, in time linear in the
    field's length (:mod:`flowcore.patterns`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from flowcore import patterns
from flowcore.models import Condition, ConditionAll, ConditionAny, ConditionLeaf, ConditionNot
from flowcore.paths import PathMissing, resolve

_NUMERIC = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGRAL = re.compile(r"[+-]?\d+")

_MISSING: Any = object()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse_number(text: str) -> int | float | None:
    """A numeric string as an exact int (when integral) or a float; ``None`` when not numeric."""
    text = text.strip()
    if not _NUMERIC.fullmatch(text):
        return None
    try:
        # Ints stay ints so that large integers compare exactly with Python's int/float rules.
        return int(text) if _INTEGRAL.fullmatch(text) else float(text)
    except ValueError:  # more digits than int() accepts
        return None


def parse_number(text: str) -> int | float | None:
    """A numeric string as a number, as equality sees it (``" 10 "`` is 10); None when not numeric."""
    return _parse_number(text)


def _numeric_pair(left: Any, right: Any) -> tuple[int | float, int | float] | None:
    """Both sides as numbers when at least one is a number and the other a number or numeric string."""
    if _is_number(left) and _is_number(right):
        return left, right
    if _is_number(left) and isinstance(right, str):
        parsed = _parse_number(right)
        return None if parsed is None else (left, parsed)
    if isinstance(left, str) and _is_number(right):
        parsed = _parse_number(left)
        return None if parsed is None else (parsed, right)
    return None


def values_equal(left: Any, right: Any) -> bool:
    """Equality as conditions see it (see the module docstring); never raises."""
    pair = _numeric_pair(left, right)
    if pair is not None:
        return pair[0] == pair[1]
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(values_equal(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(values_equal(left[k], right[k]) for k in left)
    if _is_number(left) or _is_number(right):
        # A number against a non-numeric value; bools land here and must not equal 0/1.
        return False
    if type(left) is not type(right):
        return False
    return bool(left == right)


def _order(left: Any, right: Any, compare: Callable[[Any, Any], bool]) -> bool:
    pair = _numeric_pair(left, right)
    if pair is not None:
        a, b = pair
        if (isinstance(a, float) and math.isnan(a)) or (isinstance(b, float) and math.isnan(b)):
            return False
        return compare(a, b)
    if isinstance(left, str) and isinstance(right, str):
        return compare(left, right)
    return False


def _contains(container: Any, value: Any) -> bool:
    if isinstance(container, str):
        return isinstance(value, str) and value in container
    if isinstance(container, list):
        return any(values_equal(item, value) for item in container)
    if isinstance(container, dict):
        return isinstance(value, str) and value in container
    return False


def _matches(field_value: Any, pattern: Any) -> bool:
    if not isinstance(field_value, str) or not isinstance(pattern, str):
        return False
    return patterns.search(pattern, field_value)


def _in(field_value: Any, options: Any) -> bool:
    if not isinstance(options, list):
        return False
    return any(values_equal(field_value, option) for option in options)


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": values_equal,
    "!=": lambda a, b: not values_equal(a, b),
    ">": lambda a, b: _order(a, b, lambda x, y: x > y),
    ">=": lambda a, b: _order(a, b, lambda x, y: x >= y),
    "<": lambda a, b: _order(a, b, lambda x, y: x < y),
    "<=": lambda a, b: _order(a, b, lambda x, y: x <= y),
    "in": _in,
    "not_in": lambda a, b: isinstance(b, list) and not _in(a, b),
    "contains": _contains,
    "matches": _matches,
    "exists": lambda a, b: True,
}

# What each operator answers when the field's path does not resolve.
_WHEN_MISSING = {"!=": True, "not_in": True}


def compare(op: str, field_value: Any, value: Any) -> bool:
    """Apply operator ``op`` to a present field value and the condition's value; never raises.

    Raises :class:`KeyError` only for an operator name that does not exist.
    """
    return _OPERATORS[op](field_value, value)


def evaluate_leaf(leaf: ConditionLeaf, view: Any) -> bool:
    """Evaluate one ``field op value`` comparison against ``view``."""
    try:
        field_value = resolve(view, leaf.field)
    except PathMissing:
        return _WHEN_MISSING.get(leaf.op, False)
    return compare(leaf.op, field_value, leaf.value)


def evaluate(condition: Condition, view: Any) -> bool:
    """Whether ``condition`` holds for ``view``; ``and``/``or`` short-circuit left to right."""
    if isinstance(condition, ConditionLeaf):
        return evaluate_leaf(condition, view)
    if isinstance(condition, ConditionAll):
        return all(evaluate(part, view) for part in condition.all_)
    if isinstance(condition, ConditionAny):
        return any(evaluate(part, view) for part in condition.any_)
    if isinstance(condition, ConditionNot):
        return not evaluate(condition.not_, view)
    raise TypeError(f"not a condition: {type(condition).__name__}")


def leaves(condition: Condition) -> list[ConditionLeaf]:
    """The ``field op value`` comparisons of a condition, in document order (iteratively: no recursion)."""
    out: list[ConditionLeaf] = []
    stack: list[Condition] = [condition]
    while stack:
        node = stack.pop()
        if isinstance(node, ConditionLeaf):
            out.append(node)
        elif isinstance(node, ConditionAll):
            stack.extend(reversed(node.all_))
        elif isinstance(node, ConditionAny):
            stack.extend(reversed(node.any_))
        else:
            stack.append(node.not_)
    return out


def check_patterns(condition: Condition) -> None:
    """Raise :class:`~flowcore.patterns.PatternError` for a ``matches`` pattern RE2 cannot run."""
    for leaf in leaves(condition):
        if leaf.op == "matches" and isinstance(leaf.value, str):
            patterns.check(leaf.value)


def referenced_paths(condition: Condition) -> list[str]:
    """The field paths a condition reads, in document order, each once."""
    paths: list[str] = []

    def walk(node: Condition) -> None:
        if isinstance(node, ConditionLeaf):
            if node.field not in paths:
                paths.append(node.field)
        elif isinstance(node, ConditionAll):
            for part in node.all_:
                walk(part)
        elif isinstance(node, ConditionAny):
            for part in node.any_:
                walk(part)
        else:
            walk(node.not_)

    walk(condition)
    return paths
