"""Branch and decision steps of decorated workflows, and the conditions they test.

A branch or decision is a class attribute; its step id is the attribute name. The engine evaluates it
(no container): the chosen targets run, the others are skipped (transitively, unless a skipped step's
dependents are reachable another way). Targets and ``depends_on`` name other steps, as strings or as
the step methods themselves::

    @workflow("triage")
    class Triage:
        @step(image=IMAGE)
        def measure(self, ctx): return {"size": 42}

        route = branch(when("steps.measure.output.size", ">", 10), then=["big"], else_=["small"])

        @step(image=IMAGE)
        def big(self, ctx): ...

        @step(image=IMAGE)
        def small(self, ctx): ...

Conditions are plain dicts in the definition's format: :func:`when` builds ``{"field", "op", "value"}``,
:func:`all_of` / :func:`any_of` / :func:`not_` combine them. Fields are dotted paths into the workflow
view: ``input.x``, ``steps.<id>.output...``, ``state.<key>``. A step read by a condition runs first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from agentainer_flow.errors import ValidationError

OPERATORS = ("==", "!=", ">", ">=", "<", "<=", "in", "not_in", "contains", "matches", "exists")
StepRef = str | Callable[..., Any]


def when(field: str, op: str = "==", value: Any = None) -> dict[str, Any]:
    """One comparison: ``when("steps.count.output.total", ">", 10)``; ``op`` is one of :data:`OPERATORS`."""
    if op not in OPERATORS:
        raise ValidationError(f"unknown operator {op!r}; use one of {', '.join(OPERATORS)}", field="op")
    if not isinstance(field, str) or not field:
        raise ValidationError("a condition field must be a dotted path such as 'steps.a.output'", field="field")
    return {"field": field, "op": op, "value": value}


def all_of(*conditions: dict[str, Any]) -> dict[str, Any]:
    """All conditions hold (``and``)."""
    return {"and": list(conditions)}


def any_of(*conditions: dict[str, Any]) -> dict[str, Any]:
    """At least one condition holds (``or``)."""
    return {"or": list(conditions)}


def not_(condition: dict[str, Any]) -> dict[str, Any]:
    """The condition does not hold."""
    return {"not": condition}


class _Control:
    """Base of :class:`branch` and :class:`decision`: a step evaluated by the engine."""

    kind = ""

    def __init__(self, depends_on: Iterable[StepRef] = (), name: str | None = None) -> None:
        self.depends_on = list(depends_on)
        self.name = name

    def __set_name__(self, owner: type, attr: str) -> None:
        if self.name is None:
            self.name = attr

    def targets(self) -> list[StepRef]:
        raise NotImplementedError

    def conditions(self) -> list[dict[str, Any]]:
        raise NotImplementedError


class branch(_Control):
    """``condition`` true: the ``then`` steps run and ``else_`` ones are skipped; false: the reverse."""

    kind = "branch"

    def __init__(
        self,
        condition: dict[str, Any],
        then: Sequence[StepRef] = (),
        else_: Sequence[StepRef] = (),
        depends_on: Iterable[StepRef] = (),
        name: str | None = None,
    ) -> None:
        super().__init__(depends_on, name)
        if not then and not else_:
            raise ValidationError("a branch needs 'then' or 'else_' targets", field="then")
        self.condition = condition
        self.then = list(then)
        self.else_ = list(else_)

    def targets(self) -> list[StepRef]:
        return [*self.then, *self.else_]

    def conditions(self) -> list[dict[str, Any]]:
        return [self.condition]


class decision(_Control):
    """The first case whose condition holds picks its targets; none: ``default``. The rest is skipped.

    ``cases`` is a list of ``(condition, [targets])`` pairs.
    """

    kind = "decision"

    def __init__(
        self,
        cases: Sequence[tuple[dict[str, Any], Sequence[StepRef]]],
        default: Sequence[StepRef] = (),
        depends_on: Iterable[StepRef] = (),
        name: str | None = None,
    ) -> None:
        super().__init__(depends_on, name)
        if not cases:
            raise ValidationError("a decision needs at least one case", field="cases")
        self.cases = [(cond, list(targets)) for cond, targets in cases]
        self.default = list(default)

    def targets(self) -> list[StepRef]:
        out: list[StepRef] = []
        for _, targets in self.cases:
            out.extend(targets)
        return [*out, *self.default]

    def conditions(self) -> list[dict[str, Any]]:
        return [cond for cond, _ in self.cases]


# ---- local evaluation (run_locally), the engine's semantics ------------------------------------
_MISSING = object()


def resolve(view: Any, path: str) -> Any:
    current = view
    for segment in path.split("."):
        if isinstance(current, dict) and segment in current:
            current = current[segment]
        elif isinstance(current, list) and segment.isdigit() and int(segment) < len(current):
            current = current[int(segment)]
        else:
            return _MISSING
    return current


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) or isinstance(b, int | float):
        if isinstance(a, bool) or isinstance(b, bool):
            return a is b
        na, nb = _number(a), _number(b)
        return na is not None and nb is not None and na == nb
    return bool(type(a) is type(b) and a == b)


def _order(a: Any, b: Any, cmp: Callable[[Any, Any], bool]) -> bool:
    na, nb = _number(a), _number(b)
    if na is not None and nb is not None and (isinstance(a, int | float) or isinstance(b, int | float)):
        return cmp(na, nb)
    return isinstance(a, str) and isinstance(b, str) and cmp(a, b)


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "==":
        return _equal(a, b)
    if op == "!=":
        return not _equal(a, b)
    if op in (">", ">=", "<", "<="):
        cmps: dict[str, Callable[[Any, Any], bool]] = {
            ">": lambda x, y: x > y, ">=": lambda x, y: x >= y, "<": lambda x, y: x < y, "<=": lambda x, y: x <= y
        }
        return _order(a, b, cmps[op])
    if op == "in":
        return isinstance(b, list) and any(_equal(a, o) for o in b)
    if op == "not_in":
        return isinstance(b, list) and not any(_equal(a, o) for o in b)
    if op == "contains":
        if isinstance(a, str):
            return isinstance(b, str) and b in a
        if isinstance(a, list):
            return any(_equal(x, b) for x in a)
        return isinstance(a, dict) and isinstance(b, str) and b in a
    if op == "matches":
        return isinstance(a, str) and isinstance(b, str) and re.search(b, a) is not None
    return op == "exists"


def evaluate(condition: dict[str, Any], view: Any) -> bool:
    """Whether a condition holds for ``view`` (the engine's rules: numbers compare as numbers)."""
    if "and" in condition:
        return all(evaluate(c, view) for c in condition["and"])
    if "or" in condition:
        return any(evaluate(c, view) for c in condition["or"])
    if "not" in condition:
        return not evaluate(condition["not"], view)
    op = condition.get("op", "==")
    found = resolve(view, condition["field"])
    if found is _MISSING:
        return op in ("!=", "not_in")
    return _compare(op, found, condition.get("value"))


def condition_paths(condition: dict[str, Any]) -> list[str]:
    """The field paths a condition reads."""
    if "and" in condition or "or" in condition:
        return [p for c in condition.get("and", condition.get("or", [])) for p in condition_paths(c)]
    if "not" in condition:
        return condition_paths(condition["not"])
    return [condition["field"]]
