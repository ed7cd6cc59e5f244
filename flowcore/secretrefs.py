"""Secrets in step definitions and in what comes back from steps (pure).

A step's ``env`` refers to a stored secret (:mod:`flowcore.secretstore`) with ``${{ secrets.NAME }}``,
as a whole value or inside one (``postgres://app:${{ secrets.db_password }}@db/app``). The definition,
and so every API answer, the dashboard and the spans, only ever hold the reference. The worker
substitutes the values just before it sends the task to the pool (:func:`substitute`); they exist in
clear only in that request and in the container's environment.

Whatever a step prints or returns may still contain a value: a :class:`Redactor` built from the
task's values replaces each occurrence with :data:`MASK` in log lines (the pool, before they reach
Redis), in the output, the log tail and the error (the pool, and the worker again before the commit),
and in state the step writes. It catches a value as written, not a transformed one (base64, split
across two lines); values shorter than :data:`MIN_SECRET_CHARS` are refused when stored, since
masking them would mask ordinary text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from flowcore.errors import InvalidInput
from flowcore.ids import ID_PATTERN
from flowcore.pool_api import TaskResult

MASK = "********"
MIN_SECRET_CHARS = 4
MAX_SECRET_BYTES = 64 * 1024
MAX_REFERENCES = 50  # per step
_NAME = ID_PATTERN.removeprefix("^").removesuffix("$")
REFERENCE = re.compile(r"\$\{\{\s*secrets\.(" + _NAME + r")\s*\}\}")
_LOOSE = re.compile(r"\$\{\{\s*secrets\b")  # anything that tries to be a reference


class HasEnv(Protocol):
    @property
    def env(self) -> dict[str, str]: ...


def references(env: Mapping[str, str]) -> set[str]:
    """The names of the secrets ``env`` refers to."""
    return {m.group(1) for value in env.values() for m in REFERENCE.finditer(value)}


def check_env(env: Mapping[str, str], prefix: str) -> None:
    """Refuse (422, field ``<prefix>env.KEY``) a reference that is malformed, or too many of them."""
    names: set[str] = set()
    for key, value in env.items():
        loose = len(_LOOSE.findall(value))
        found = REFERENCE.findall(value)
        if loose != len(found):
            raise InvalidInput(
                f"{prefix}env.{key}: a secret reference is written ${{{{ secrets.NAME }}}}, NAME being 1-128 of"
                " A-Z a-z 0-9 _ - (starting with a letter or digit)",
                field=f"{prefix}env.{key}",
            )
        names.update(found)
    if len(names) > MAX_REFERENCES:
        raise InvalidInput(f"{prefix}env: at most {MAX_REFERENCES} secrets per step", field=f"{prefix}env")


def check_steps(steps: Sequence[HasEnv]) -> None:
    for index, step in enumerate(steps):
        check_env(step.env, f"steps[{index}].")


def step_references(steps: Sequence[HasEnv]) -> set[str]:
    """The names of the secrets any of ``steps`` refers to."""
    return {name for step in steps for name in references(step.env)}


def substitute(env: Mapping[str, str], values: Mapping[str, str]) -> dict[str, str]:
    """``env`` with every reference replaced by its value; KeyError naming a secret ``values`` lacks."""

    def one(match: re.Match[str]) -> str:
        return values[match.group(1)]

    return {key: REFERENCE.sub(one, value) if "${{" in value else value for key, value in env.items()}


class Redactor:
    """Replaces every occurrence of the given values with :data:`MASK`; does nothing without values."""

    def __init__(self, values: Iterable[str]) -> None:
        kept = sorted({v for v in values if len(v) >= MIN_SECRET_CHARS}, key=len, reverse=True)
        self.values = tuple(kept)
        self._pattern = re.compile("|".join(re.escape(v) for v in kept)) if kept else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def value(self, value: Any) -> Any:
        """A JSON value with every string (and object key) redacted; other values as they are.

        Iterative: a step's output may nest as deep as the JSON parser allows, deeper than Python's
        recursion limit."""
        if self._pattern is None:
            return value
        if not isinstance(value, list | dict):
            return self.text(value) if isinstance(value, str) else value
        root: list[Any] = [None]
        # (source container, target container, slot in the target's parent) pending work
        work: list[tuple[Any, list[Any] | dict[Any, Any]]] = []

        def copy(item: Any) -> Any:
            if isinstance(item, str):
                return self.text(item)
            if isinstance(item, list):
                target: list[Any] = []
                work.append((item, target))
                return target
            if isinstance(item, dict):
                mapping: dict[Any, Any] = {}
                work.append((item, mapping))
                return mapping
            return item

        root[0] = copy(value)
        while work:
            source, target = work.pop()
            if isinstance(target, list):
                target.extend(copy(item) for item in source)
            else:
                for key, item in source.items():
                    target[self.text(key) if isinstance(key, str) else key] = copy(item)
        return root[0]


def redact_result(result: TaskResult, redactor: Redactor) -> TaskResult:
    """``result`` with the secrets masked in its output, log tail, last lines, error and state updates."""
    if not redactor:
        return result
    changes: dict[str, Any] = {
        "output": redactor.value(result.output),
        "log_tail": redactor.text(result.log_tail),
        "logs": [line.model_copy(update={"line": redactor.text(line.line)}) for line in result.logs],
        "state_updates": [op.model_copy(update={"value": redactor.value(op.value)}) for op in result.state_updates],
    }
    if result.error is not None:
        changes["error"] = result.error.model_copy(update={"message": redactor.text(result.error.message)})
    return result.model_copy(update=changes)
