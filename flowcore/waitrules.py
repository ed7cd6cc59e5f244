"""The pure rules of durable waits (ADR 012): due times, filters, timeout and approval outcomes.

No I/O and no clock: every function gets ``now`` from its caller. :mod:`flowcore.waitsteps` applies
these rules inside engine transitions; the gateway's approval route asks :func:`approval_scope_ok`.
"""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from flowcore import eventfilter, paths
from flowcore.errors import InvalidInput

MAX_COMMENT_CHARS = 2000
MAX_DECIDER_CHARS = 200
# Events kept per event type for waits that begin after their event was published (the gap between a
# workflow's creation and its wait step): the last EVENT_LOG_MAX of each type, at most EVENT_LOG_AGE_S old.
EVENT_LOG_MAX = 1000
EVENT_LOG_AGE_S = 7 * 86400.0
# An event larger than this (its JSON) wakes only the runs already waiting: it is not logged, so the log
# of a type stays under EVENT_LOG_MAX * EVENT_LOG_ENTRY_MAX_BYTES (64 MiB).
EVENT_LOG_ENTRY_MAX_BYTES = 64 * 1024



def watched_types(steps: Any) -> set[str]:
    """The event types the ``wait_for_event`` steps of a definition wait for. Only those types are
    logged (for as long as a workflow may still wait, ``EVENT_LOG_AGE_S`` past its creation or its
    wait's registration): publishing other types stores nothing, so their number cannot fill Redis."""
    return {step.event_type for step in steps if getattr(step, "type", None) == "wait_for_event"}

Decision = Literal["approve", "reject"]


class WaitRuleError(ValueError):
    """A wait step's definition or a decision on it is not acceptable."""


def parse_until(text: str) -> float:
    """Epoch seconds of an ISO 8601 time; one without an offset is UTC."""
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise WaitRuleError(f"until {text!r} is not an ISO 8601 time (e.g. 2030-01-01T09:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def sleep_due_at(now: float, duration_s: float | None, until: str | None) -> float:
    """When a sleep that begins at ``now`` ends (an ``until`` in the past ends at once)."""
    if until is not None:
        return max(parse_until(until), now)
    return now + (duration_s or 0.0)


def timeout_due_at(now: float, timeout_s: float | None) -> float | None:
    return None if timeout_s is None else now + timeout_s


def is_due(now: float, due_at: float | None) -> bool:
    """A timer that fires a little early (clocks of two machines) still counts: 50 ms of slack."""
    return due_at is not None and now + 0.05 >= due_at


def _placeholder(value: Any) -> Any:
    """A filter with its templates replaced by a neutral value, for validation before they resolve."""
    if paths.is_template(value):
        paths.template_path(value)
        return 0
    if isinstance(value, dict):
        return {k: _placeholder(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_placeholder(v) for v in value]
    return value


def check_filter(flt: dict[str, Any]) -> None:
    """A wait's filter is an event filter whose values may be ``{"$path": ...}`` templates."""
    try:
        eventfilter.validate(_placeholder(flt), "filter")
    except eventfilter.FilterError as exc:
        raise WaitRuleError(str(exc)) from None
    except InvalidInput as exc:
        raise WaitRuleError(f"filter: {exc.message}") from None


def resolve_filter(flt: dict[str, Any], view: Any) -> dict[str, Any]:
    """The filter the wait matches with: its templates resolved against the workflow view now
    (:class:`flowcore.paths.PathMissing` when a path without default is absent)."""
    resolved: dict[str, Any] = paths.resolve_templates(copy.deepcopy(flt), view)
    return resolved


def event_matches(flt: dict[str, Any], payload: Any) -> bool:
    return eventfilter.matches(flt, payload)


def first_match(flt: dict[str, Any], since: float, events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The oldest logged event (``{"id", "payload", "ts"}``) published at or after ``since`` that matches."""
    for event in events:
        if float(event.get("ts", 0)) >= since and eventfilter.matches(flt, event.get("payload")):
            return event
    return None


# ---- outcomes ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """How a wait ends: succeed with ``output``, or fail with ``error`` (``output`` still recorded)."""

    ok: bool
    output: Any = None
    error: str | None = None


def event_output(event: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": event.get("id"), "payload": event.get("payload"), "received_at": event.get("ts")}


def event_timeout(on_timeout: str, default_output: Any, timeout_s: float | None) -> Outcome:
    if on_timeout == "succeed":
        return Outcome(ok=True, output={"timed_out": True, "payload": default_output})
    return Outcome(ok=False, output={"timed_out": True}, error=f"no matching event within {timeout_s or 0:g}s")


def approval_outcome(
    decision: Decision, on_reject: str, *, by: str, at: float, comment: str | None, timed_out: bool = False
) -> Outcome:
    output = {
        "approved": decision == "approve",
        "decision": decision,
        "by": by,
        "at": at,
        "comment": comment,
        "timed_out": timed_out,
    }
    if decision == "reject" and on_reject == "fail":
        why = f": {comment}" if comment else ""
        return Outcome(ok=False, output=output, error=f"rejected by {by}{why}")
    return Outcome(ok=True, output=output)


def approval_timeout(on_timeout: str, on_reject: str, at: float, timeout_s: float | None) -> Outcome:
    if on_timeout == "fail":
        return Outcome(ok=False, output={"timed_out": True}, error=f"no decision within {timeout_s or 0:g}s")
    decision: Decision = "approve" if on_timeout == "approve" else "reject"
    return approval_outcome(decision, on_reject, by="timeout", at=at, comment=None, timed_out=True)


def check_comment(comment: str | None) -> str | None:
    if comment is None:
        return None
    if len(comment) > MAX_COMMENT_CHARS:
        raise WaitRuleError(f"comment is {len(comment)} characters; at most {MAX_COMMENT_CHARS}")
    return comment


def approval_scope_ok(scopes: frozenset[str]) -> bool:
    """Who may decide an approval: a token holding ``approve`` (``write`` and ``admin`` imply it);
    ``read`` and ``trigger`` (webhook) tokens may not."""
    return "approve" in scopes


def child_output(status: str, outputs: dict[str, Any], child_id: str, output_step: str | None) -> Any:
    """A workflow step's output: the named step's output, or every step's output with the child's id."""
    if output_step is not None:
        return outputs.get(output_step)
    return {"workflow_id": child_id, "status": status, "outputs": outputs}


def child_id_for(parent_id: str, step_id: str, token: str) -> str:
    """The child's id, derived from the parent's wait so that starting it twice creates it once."""
    import hashlib

    digest = hashlib.sha256(f"{parent_id}|{step_id}|{token}".encode()).hexdigest()[:10]
    stamp = parent_id.split("-")[1] if parent_id.count("-") >= 2 else "0"
    return f"wf-{stamp}-{digest}"


_VIEW_TIMES = ("began_at", "due_at", "timeout_at", "ended_at")
_VIEW_FIELDS = ("kind", "event_type", "filter", "message", "template", "child_id", "attempt", "children")


def wait_view(wait: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the API shows of a wait: its kind, what it waits for and until when (ISO times); not its token."""
    if wait is None:
        return None
    view: dict[str, Any] = {k: wait[k] for k in _VIEW_FIELDS if wait.get(k) is not None}
    for k in _VIEW_TIMES:
        if wait.get(k) is not None:
            view[k] = dt.datetime.fromtimestamp(float(wait[k]), tz=dt.UTC).isoformat().replace("+00:00", "Z")
    return view
