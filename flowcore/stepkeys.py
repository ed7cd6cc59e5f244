"""Step-level concurrency keys: what a step declares, and the pure decisions about its tasks (ADR 019).

A container step (sequential, reduce, and each task of a parallel or map step) may declare
``concurrency: {key: <expression>, limit: N}``: at most ``N`` tasks whose key evaluates to the same
value run at once, across every workflow. The key expression is either a path into the task's view
(the workflow-level key's language, :func:`flowcore.models.check_path`: ``input.customer``,
``steps.lookup.output.account``, ``item.customer`` inside a map) or a template of literal text with
``{path}`` placeholders (``payments:{input.customer}``). The value of a placeholder is its string as
is, anything else as compact JSON; a missing path gives the empty string, as at the workflow level.

A task over the limit *waits* (its worker lets go of it; it holds no container), FIFO per key; keys
are independent of each other. Everything here is pure: :mod:`flowcore.stepkey_store` reads a key's
holders and waiters from Redis under ``WATCH`` and commits what these functions decide.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_LIMIT = 10_000
MAX_KEY_CHARS = 200  # longer evaluated keys are replaced by their digest
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def parse_key(expression: str) -> list[tuple[str, bool]]:
    """The parts of a key expression: ``(text, is_path)``; :class:`ValueError` naming what is wrong.

    Without braces the whole expression is one path; with them, ``{path}`` placeholders in literal text.
    """
    from flowcore.models import check_path  # models imports this module

    if "{" not in expression and "}" not in expression:
        return [(check_path(expression), True)]
    parts: list[tuple[str, bool]] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(expression):
        literal = expression[pos:match.start()]
        if "{" in literal or "}" in literal:
            raise ValueError(f"invalid key {expression!r}: unbalanced braces")
        if literal:
            parts.append((literal, False))
        path = match.group(1).strip()
        if not path:
            raise ValueError(f"invalid key {expression!r}: an empty placeholder {{}}")
        parts.append((check_path(path), True))
        pos = match.end()
    tail = expression[pos:]
    if "{" in tail or "}" in tail:
        raise ValueError(f"invalid key {expression!r}: unbalanced braces")
    if tail:
        parts.append((tail, False))
    return parts


class StepConcurrency(BaseModel):
    """``concurrency`` of a container step: a key per task and how many tasks of one key run at once."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(
        min_length=1, max_length=MAX_KEY_CHARS,
        description="A path ('input.customer') or a template ('payments:{input.customer}'); item is the map item.",
    )
    limit: int = Field(1, ge=1, le=MAX_LIMIT, description="Tasks of one key value running at once, in all workflows.")

    @field_validator("key")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_key(value)
        return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))


def evaluate_key(expression: str, view: dict[str, Any]) -> str:
    """The key value of one task: ``expression`` (already validated) rendered against its view."""
    from flowcore import paths

    out: list[str] = []
    for text, is_path in parse_key(expression):
        if not is_path:
            out.append(text)
            continue
        try:
            out.append(_text(paths.resolve(view, text)))
        except paths.PathMissing:
            out.append("")
    value = "".join(out)
    if len(value) > MAX_KEY_CHARS:
        return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:32]
    return value


def holder_of(wf_id: str, step_id: str, index: int) -> str:
    """Who holds a slot: one task (any attempt of it), ``{wf}|{step}|{index}``."""
    return f"{wf_id}|{step_id}|{index}"


def parse_holder(holder: str) -> tuple[str, str, int]:
    wf_id, step_id, index = holder.split("|")
    return wf_id, step_id, int(index)


class SlotNeeded(Exception):
    """A claim of a task whose step has a concurrency key, by a worker that does not hold the key yet."""

    def __init__(self, key: str, limit: int, holder: str) -> None:
        super().__init__(f"task {holder} needs a slot of concurrency key {key!r}")
        self.key = key
        self.limit = limit
        self.holder = holder


# ---- decisions ---------------------------------------------------------------------------------
class Verdict(str, enum.Enum):
    ADMIT = "admit"  # take a slot (or keep the one reserved for it) and run
    WAIT = "wait"  # join (or stay in) the key's queue


@dataclass(frozen=True)
class KeyState:
    """What a key holds now: its holders (tasks with a slot), how many tasks wait, and where the
    asking task stands among them (``rank``: 0 is the head; None: not waiting)."""

    holders: frozenset[str]
    queued: int = 0
    rank: int | None = None


@dataclass(frozen=True)
class Acquire:
    verdict: Verdict
    reason: str = ""


def waiting_reason(key: str, in_use: int, limit: int, ahead: int) -> str:
    behind = f", {ahead} task(s) ahead" if ahead else ""
    return f"waiting for concurrency key {key} ({in_use}/{limit} in use{behind})"


def decide_acquire(key: str, limit: int, holder: str, state: KeyState) -> Acquire:
    """May ``holder`` run now? Yes when it holds a slot already (reserved for it by a pump, or the
    same task again after a takeover), or when there is room and no task waits ahead of it (FIFO per
    key); else it waits."""
    if holder in state.holders:
        return Acquire(Verdict.ADMIT)
    ahead = state.rank if state.rank is not None else state.queued
    if len(state.holders) < limit and ahead == 0:
        return Acquire(Verdict.ADMIT)
    return Acquire(Verdict.WAIT, waiting_reason(key, len(state.holders), limit, ahead))


def room(limit: int, holders: int) -> int:
    """How many waiting tasks a pump may reserve a slot for now."""
    return max(limit - holders, 0)


def hold_is_stale(held_token: str, task_status: str | None, task_token: str | None) -> bool:
    """Whether a slot's hold outlived its task (the sweep releases it): the task is gone or finished,
    or another attempt (a retry, a takeover) replaced the one that took the slot. A slot reserved by a
    pump (token ``""``) belongs to the task while it is queued or running."""
    if task_status not in ("queued", "running"):
        return True
    if held_token == "":
        return False
    return task_token != held_token
