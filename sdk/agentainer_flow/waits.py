"""Durable waits in decorated workflows: :class:`sleep`, :class:`wait_for_event`, :class:`approval` and
:class:`subworkflow` (the ``workflow`` step type). Like :class:`~agentainer_flow.branch`, each is a class
attribute whose name is its step id; the engine parks it in Redis, no container and no worker held::

    @workflow("order", image=IMAGE)
    class Order:
        @step
        def quote(self, ctx): return {"total": 40}

        paid = wait_for_event("payment", filter={"order": ref("input.order")}, timeout="1h",
                              depends_on=["quote"])
        ok = approval("ship it?", timeout="1d", on_timeout="reject", depends_on=["paid"])
        cool_off = sleep("30s", depends_on=["ok"])

        @step(depends_on=["cool_off"])
        def ship(self, ctx): return ctx.deps["paid"]["payload"]

``ref("input.order")`` is ``{"$path": "input.order"}``: resolved when the wait begins. A step whose output a
filter or a child's input reads (``steps.<id>...``) runs first. Approve or reject with
:meth:`WorkflowClient.approve` / :meth:`WorkflowClient.reject`; wake a wait with ``publish_event``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from agentainer_flow.branching import StepRef, _Control
from agentainer_flow.errors import ValidationError


def ref(path: str, default: Any = ...) -> dict[str, Any]:
    """``{"$path": path}`` (with a ``default`` when given): a value resolved from the workflow view."""
    return {"$path": path} if default is ... else {"$path": path, "default": default}


def _template_paths(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if "$path" in value and isinstance(value["$path"], str) and set(value) <= {"$path", "default"}:
            yield value["$path"]
            return
        for item in value.values():
            yield from _template_paths(item)
    elif isinstance(value, list):
        for item in value:
            yield from _template_paths(item)


def _duration(value: float | str | None, name: str) -> float | str | None:
    if value is not None and not isinstance(value, int | float | str):
        raise ValidationError(f"{name} must be seconds or a duration like '5m'", field=name)
    return value


class _Wait(_Control):
    """Base of the wait steps: ``timeout`` bounds the wait."""

    def __init__(self, *, timeout: float | str | None, depends_on: Iterable[StepRef], name: str | None) -> None:
        super().__init__(depends_on, name)
        self.timeout = _duration(timeout, "timeout")

    def targets(self) -> list[StepRef]:
        return []

    def conditions(self) -> list[dict[str, Any]]:
        return []

    def read_paths(self) -> list[str]:
        """Paths its templates read (``steps.<id>...`` ones make that step run first)."""
        return []

    def fields(self) -> dict[str, Any]:
        return {} if self.timeout is None else {"timeout": self.timeout}


class sleep(_Wait):
    """Wait ``duration`` (seconds or "30s", "5m") or ``until`` an ISO 8601 time (UTC without an offset)."""

    kind = "sleep"

    def __init__(self, duration: float | str | None = None, *, until: str | None = None,
                 depends_on: Iterable[StepRef] = (), name: str | None = None) -> None:
        super().__init__(timeout=None, depends_on=depends_on, name=name)
        if (duration is None) == (until is None):
            raise ValidationError("sleep needs exactly one of duration or until", field="duration")
        self.duration = _duration(duration, "duration")
        self.until = until

    def fields(self) -> dict[str, Any]:
        return {"duration": self.duration} if self.duration is not None else {"until": self.until}


class wait_for_event(_Wait):
    """Wait for an event of ``event_type`` matching ``filter`` (the event-filter language; values may be
    :func:`ref` paths); its output is ``{"event_id", "payload", "received_at"}``. On ``timeout``:
    ``on_timeout="fail"`` (default) or ``"succeed"`` with ``{"timed_out": True, "payload": default_output}``."""

    kind = "wait_for_event"

    def __init__(self, event_type: str, *, filter: dict[str, Any] | None = None,
                 timeout: float | str | None = None, on_timeout: str = "fail", default_output: Any = None,
                 depends_on: Iterable[StepRef] = (), name: str | None = None) -> None:
        super().__init__(timeout=timeout, depends_on=depends_on, name=name)
        if on_timeout not in ("fail", "succeed"):
            raise ValidationError("on_timeout is 'fail' or 'succeed'", field="on_timeout")
        self.event_type = event_type
        self.filter = dict(filter or {})
        self.on_timeout = on_timeout
        self.default_output = default_output

    def read_paths(self) -> list[str]:
        return list(_template_paths(self.filter))

    def fields(self) -> dict[str, Any]:
        body = {**super().fields(), "event_type": self.event_type, "filter": self.filter, "on_timeout": self.on_timeout}
        if self.default_output is not None:
            body["default_output"] = self.default_output
        return body


class approval(_Wait):
    """Wait for a person: approve or reject (with a comment) through the API, SDK, CLI or dashboard.
    ``on_reject="fail"`` (default) fails the step on a rejection, ``"continue"`` succeeds with
    ``approved: False``; ``on_timeout`` is ``"fail"``, ``"approve"`` or ``"reject"``."""

    kind = "approval"

    def __init__(self, message: str | None = None, *, timeout: float | str | None = None, on_timeout: str = "fail",
                 on_reject: str = "fail", depends_on: Iterable[StepRef] = (), name: str | None = None) -> None:
        super().__init__(timeout=timeout, depends_on=depends_on, name=name)
        if on_timeout not in ("fail", "approve", "reject"):
            raise ValidationError("on_timeout is 'fail', 'approve' or 'reject'", field="on_timeout")
        if on_reject not in ("fail", "continue"):
            raise ValidationError("on_reject is 'fail' or 'continue'", field="on_reject")
        self.message = message
        self.on_timeout = on_timeout
        self.on_reject = on_reject

    def fields(self) -> dict[str, Any]:
        body = {**super().fields(), "on_timeout": self.on_timeout, "on_reject": self.on_reject}
        if self.message is not None:
            body["message"] = self.message
        return body


class subworkflow(_Wait):
    """Run the template workflow ``workflow_id`` as a child with ``input`` (merged over the template's;
    values may be :func:`ref` paths) and wait for it. Output: ``output_step``'s output, else
    ``{"workflow_id", "status", "outputs": {step: output}}``. A failed child fails the step (``retry``
    attempts start a new child); cancelling the parent cancels the child."""

    kind = "workflow"

    def __init__(self, workflow_id: str, *, input: Any = None, output_step: str | None = None,
                 retry: int | dict[str, Any] | None = None, timeout: float | str | None = None,
                 depends_on: Iterable[StepRef] = (), name: str | None = None) -> None:
        super().__init__(timeout=timeout, depends_on=depends_on, name=name)
        self.workflow_id = workflow_id
        self.input = input
        self.output_step = output_step
        self.retry = {"max_attempts": retry} if isinstance(retry, int) else retry

    def read_paths(self) -> list[str]:
        return list(_template_paths(self.input))

    def fields(self) -> dict[str, Any]:
        body: dict[str, Any] = {**super().fields(), "workflow": self.workflow_id}
        for key, value in (("input", self.input), ("output_step", self.output_step), ("retry", self.retry)):
            if value is not None:
                body[key] = value
        return body
