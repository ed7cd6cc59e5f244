"""A running workflow as the SDK follows it: :class:`WorkflowExecution` and the client-side metrics."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from agentainer_flow.errors import (
    ClientError,
    TransportError,
    WorkflowError,
    WorkflowTimeoutError,
    check_timeout,
)
from agentainer_flow.events import EventStream, ServerEvent
from agentainer_flow.models import StepStatus, Workflow, WorkflowStatus, error_text

if TYPE_CHECKING:
    from agentainer_flow.client import WorkflowClient

MonitorCallback = Callable[[Workflow, dict[str, Any]], Awaitable[None] | None]
FIRST_POLL_S = 0.05
MAX_POLL_S = 0.5
# Answers to the events route meaning "no live stream here": follow the workflow by polling instead.
_NO_STREAM = (404, 405, 501)
# Events that change the workflow record (log lines do not).
_CHANGES = frozenset({"workflow", "step", "task"})
_ENDED = object()


def metrics_from_workflow(wf: Workflow) -> dict[str, Any]:
    """Metrics computed from ``GET /v1/workflows/{id}`` (used until the server's metrics route answers).

    ``step_metrics`` holds the steps that have started (pending ones are left out), so its length
    grows as the workflow progresses; ``agent_pooled`` is true when every task of the step ran in a
    warm pooled container; ``errors`` lists ``"step: message"`` for each failed step.
    """
    step_metrics: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    for s in wf.steps:
        if s.status == StepStatus.PENDING:
            continue
        tasks = s.tasks
        last = tasks[-1] if tasks else None
        step_metrics[s.id] = {
            "status": s.status.value,
            "type": s.type.value,
            "duration": s.duration_s,
            "attempts": s.attempts,
            "tasks": len(tasks),
            "agent_pooled": bool(tasks) and all(t.pooled for t in tasks),
            "pooled_tasks": sum(1 for t in tasks if t.pooled),
            "container_id": last.container_id if last else None,
            "acquire_ms": sum(t.acquire_ms or 0.0 for t in tasks) if tasks else None,
            "exec_ms": sum(t.exec_ms or 0.0 for t in tasks) if tasks else None,
        }
        if s.status == StepStatus.FAILED:
            errors.append(f"{s.id}: {error_text(s.error) or 'failed'}")
    if wf.error and not errors:
        errors.append(error_text(wf.error))
    dispatches = sum(m["tasks"] for m in step_metrics.values())
    pooled = sum(m["pooled_tasks"] for m in step_metrics.values())
    return {
        "workflow_id": wf.id,
        "name": wf.name,
        "status": wf.status.value,
        "duration": wf.duration_s,
        "start_time": wf.started_at.isoformat() if wf.started_at else None,
        "end_time": wf.finished_at.isoformat() if wf.finished_at else None,
        "step_metrics": step_metrics,
        "resource_usage": {"containers": dispatches, "warm_dispatches": pooled},
        "errors": errors,
        "source": "client",
    }


class WorkflowExecution:
    """A workflow submitted by this client: ``id``, ``status`` (refreshed by every wait or poll)."""

    def __init__(self, client: WorkflowClient, workflow: Workflow) -> None:
        self.client = client
        self.workflow = workflow

    def __repr__(self) -> str:
        return f"<WorkflowExecution {self.id} {self.status.value}>"

    @property
    def id(self) -> str:
        return self.workflow.id

    @property
    def status(self) -> WorkflowStatus:
        return self.workflow.status

    async def refresh(self) -> Workflow:
        self.workflow = await self.client.get_workflow(self.id)
        return self.workflow

    async def wait_for_completion(self, timeout: float | None = None, *, poll_interval: float | None = None) -> Workflow:
        """Wait until the workflow finishes and return it.

        Raises :class:`WorkflowError` (with ``failed_steps``) when it failed or was cancelled, and
        :class:`WorkflowTimeoutError` when ``timeout`` seconds pass first (the workflow keeps running).
        Polls ``GET /v1/workflows/{id}`` from every 50 ms up to every 0.5 s (or ``poll_interval``).
        """
        timeout = check_timeout(timeout, "timeout")
        interval = check_timeout(poll_interval, "poll_interval") or FIRST_POLL_S
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wf = await self.refresh()
            if wf.status.finished:
                return self._outcome(wf)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WorkflowTimeoutError(
                        f"workflow {self.id} still {wf.status.value} after {timeout:g}s", workflow=wf
                    )
                await asyncio.sleep(min(interval, left))
            else:
                await asyncio.sleep(interval)
            if poll_interval is None:
                interval = min(interval * 1.5, MAX_POLL_S)

    def _outcome(self, wf: Workflow) -> Workflow:
        if wf.status == WorkflowStatus.COMPLETED:
            return wf
        failed = wf.failed_steps()
        detail = "; ".join(f"{k}: {v}" for k, v in failed.items()) or error_text(wf.error) or wf.status.value
        raise WorkflowError(f"workflow {wf.name!r} ({wf.id}) {wf.status.value}: {detail}", workflow=wf, failed_steps=failed)

    async def get_metrics(self) -> dict[str, Any]:
        """The workflow's metrics: the server's ``/metrics`` route when it exists, else computed here."""
        metrics = await self.client.get_workflow_metrics(self.id)
        status = metrics.get("status")
        if isinstance(status, str) and status in WorkflowStatus.__members__.values():
            self.workflow.status = WorkflowStatus(status)
        return metrics

    async def monitor(self, callback: MonitorCallback | None = None, interval: float = 2.0) -> Workflow:
        """Follow the workflow until it finishes and return the final workflow (no exception for a
        failed one), calling ``callback(workflow, metrics)`` (sync or async) along the way.

        Uses the live event stream (``GET /v1/workflows/{id}/events``): the callback runs once at the
        start, then after changes (status, step and task events), at most once every ``interval``
        seconds, and once more at the end. ``metrics`` is computed from the refreshed record (see
        :func:`metrics_from_workflow`). When the gateway has no stream (404/405/501, not an event
        stream, or no connection) or the stream breaks, it polls ``GET /v1/workflows/{id}`` every
        ``interval`` seconds instead.
        """
        interval = check_timeout(interval, "interval") or 0.0
        try:
            stream = await self.client.stream_events(self.id)
        except TransportError:
            return await self._monitor_polling(callback, interval)
        except ClientError as exc:
            if exc.status_code not in _NO_STREAM and exc.code != "not_event_stream":
                raise
            return await self._monitor_polling(callback, interval)
        async with stream:
            ended = await self._follow_stream(stream, callback, interval)
        if ended:
            return await self._notify(callback)
        return await self._monitor_polling(callback, interval)

    async def _notify(self, callback: MonitorCallback | None) -> Workflow:
        wf = await self.refresh()
        if callback is not None:
            result = callback(wf, metrics_from_workflow(wf))
            if inspect.isawaitable(result):
                await result
        return wf

    async def _follow_stream(self, stream: EventStream, callback: MonitorCallback | None, interval: float) -> bool:
        """Read events until the ``end`` event (True) or until the stream ends or breaks first (False)."""
        queue: asyncio.Queue[ServerEvent | object] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for event in stream:
                    await queue.put(event)
            except TransportError:
                pass
            await queue.put(_ENDED)

        reader = asyncio.create_task(pump())
        try:
            await self._notify(callback)
            last = time.monotonic()
            dirty = False
            while True:
                wait_s = None if not dirty else max(0.0, interval - (time.monotonic() - last))
                try:
                    items = [await asyncio.wait_for(queue.get(), wait_s)]
                except TimeoutError:
                    items = []
                while not queue.empty():  # a burst of events makes one refresh
                    items.append(queue.get_nowait())
                for item in items:
                    if item is _ENDED:
                        return False
                    if isinstance(item, ServerEvent):
                        if item.event == "end":
                            return True
                        dirty = dirty or item.event in _CHANGES
                if dirty and callback is not None and time.monotonic() - last >= interval:
                    await self._notify(callback)
                    last = time.monotonic()
                    dirty = False
                elif callback is None:
                    dirty = False
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _monitor_polling(self, callback: MonitorCallback | None, interval: float) -> Workflow:
        while True:
            wf = await self._notify(callback)
            if wf.status.finished:
                return wf
            await asyncio.sleep(interval)

    async def cancel(self) -> Workflow:
        """Cancel it (running tasks are killed); a workflow that already finished is returned as it is."""
        try:
            self.workflow = await self.client.cancel_workflow(self.id)
        except ClientError as exc:
            if exc.status_code != 409:
                raise
            await self.refresh()
        return self.workflow
