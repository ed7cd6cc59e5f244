"""Metrics and live progress: per workflow, history and aggregates (``/v1/workflows/{id}/metrics``,
``/v1/metrics/...``) and the server-sent event streams (``/v1/workflows/{id}/events``, ``/v1/events``)."""

from __future__ import annotations

from typing import Any

import httpx

from agentainer_flow._base import BaseClient, seg
from agentainer_flow.errors import ClientError, ValidationError
from agentainer_flow.events import EventStream, open_event_stream
from agentainer_flow.execution import metrics_from_workflow
from agentainer_flow.models import Workflow

# The server sends a heartbeat every 15 s: a minute of silence means the connection is dead.
STREAM_READ_TIMEOUT_S = 60.0

# Answers meaning "no such route": fall back to computing the metrics from the workflow record.
_NO_ROUTE = (404, 405, 501)


def _duration(value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"duration must be a string such as '1h' or '24h', got {value!r}", field="duration")
    return value.strip()


class MetricsAPI(BaseClient):
    async def get_workflow_metrics(self, workflow_id: str) -> dict[str, Any]:
        """``{'status', 'duration', 'step_metrics': {step: {'status', 'duration', 'attempts',
        'agent_pooled', 'container_id', ...}}, 'resource_usage', 'errors'}``.

        From the server's metrics route when it answers; when the gateway has no such route, computed
        here from the workflow record (``metrics['source'] == 'client'``).
        """
        try:
            data = await self._request("GET", f"/v1/workflows/{seg(workflow_id)}/metrics")
        except ClientError as exc:
            # No metrics route (or a missing workflow: the GET below raises the right 404 then).
            if exc.status_code not in _NO_ROUTE:
                raise
            data = None
        if isinstance(data, dict) and "step_metrics" in data:
            return data
        wf = Workflow.read(await self._request("GET", f"/v1/workflows/{seg(workflow_id)}"))
        return metrics_from_workflow(wf)

    async def get_workflow_history(self, duration: str = "24h", *, limit: int | None = None) -> list[dict[str, Any]]:
        """Workflows of the last ``duration``, newest first: ``workflow_id``, ``status``, ``start_time``,
        ``duration``."""
        params: dict[str, Any] = {"duration": _duration(duration)}
        if limit is not None:
            params["limit"] = limit
        data = await self._request("GET", "/v1/metrics/history", params=params)
        items = data.get("items", []) if isinstance(data, dict) else data or []
        return list(items)

    async def get_aggregate_metrics(self, duration: str = "1h") -> dict[str, Any]:
        """``total_workflows``, ``success_rate`` (percent), ``avg_duration``, ``pool_efficiency`` (percent)
        and counts by status over the last ``duration``."""
        data = await self._request("GET", "/v1/metrics/aggregate", params={"duration": _duration(duration)})
        return dict(data or {})

    async def stream_events(self, workflow_id: str | None = None, *, since: str | None = None) -> EventStream:
        """Live events of one workflow (``snapshot``, ``workflow``, ``step``, ``task``, ``log``, then ``end``
        when it finishes) or, without ``workflow_id``, of every workflow (never ends by itself).

        ``since`` resumes after an event id (``stream.last_event_id``). Raises ``ClientError`` (404 for an
        unknown workflow or a gateway without the route; code ``not_event_stream`` when the answer is
        not an event stream) and ``TransportError``. Use it with ``async with``.
        """
        path = f"/v1/workflows/{seg(workflow_id)}/events" if workflow_id is not None else "/v1/events"
        params = {"since": since} if since else None
        response = await self._send(
            "GET", path, params=params, stream=True,
            headers={"accept": "text/event-stream"},
            timeout=httpx.Timeout(self.timeout, read=None if self.timeout is None else max(STREAM_READ_TIMEOUT_S, self.timeout)),
        )
        return await open_event_stream(response, "GET", path)
