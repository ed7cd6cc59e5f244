"""Triggers of a template workflow: cron schedules, events, webhooks and manual runs."""

from __future__ import annotations

from typing import Any

from agentainer_flow._base import BaseClient, seg
from agentainer_flow.errors import ValidationError
from agentainer_flow.models import Trigger, TriggerConfig, TriggerType


class TriggersAPI(BaseClient):
    async def create_trigger(
        self,
        workflow_id: str,
        type: TriggerType | str,
        config: TriggerConfig | dict[str, Any] | None = None,
        *,
        cron_expression: str | None = None,
        timezone: str | None = None,
        input_data: Any = None,
        enabled: bool = True,
    ) -> Trigger:
        """Create a trigger on ``workflow_id`` (``POST /v1/workflows/{id}/triggers``); firing it starts a new
        workflow from that one's definition. A bad cron string or timezone comes back as a 422 ClientError."""
        try:
            kind = TriggerType(type)
        except ValueError:
            allowed = ", ".join(sorted({t.value for t in TriggerType}))
            raise ValidationError(f"unknown trigger type {type!r}; use one of {allowed}", field="type") from None
        if isinstance(config, TriggerConfig):
            cfg = config.model_dump(exclude_none=True, exclude_defaults=False)
        else:
            cfg = dict(config or {})
        body: dict[str, Any] = {"type": kind.value, "config": cfg, "enabled": enabled}
        if cron_expression is not None:
            body["cron_expression"] = cron_expression
        if timezone is not None:
            body["timezone"] = timezone
        if input_data is not None:
            body["input_data"] = input_data
        data = await self._request("POST", f"/v1/workflows/{seg(workflow_id)}/triggers", json=body)
        return Trigger.read(data)

    async def schedule_workflow(
        self,
        workflow_id: str,
        cron_expression: str,
        timezone: str = "UTC",
        input_data: Any = None,
        config: TriggerConfig | dict[str, Any] | None = None,
    ) -> Trigger:
        """Run ``workflow_id``'s definition on a cron schedule (5 fields or ``@hourly``...) in ``timezone``."""
        if not isinstance(cron_expression, str) or not cron_expression.strip():
            raise ValidationError("cron_expression must be a cron string such as '0 * * * *'", field="cron_expression")
        return await self.create_trigger(
            workflow_id, TriggerType.SCHEDULE, config, cron_expression=cron_expression, timezone=timezone,
            input_data=input_data,
        )

    async def list_triggers(self, workflow_id: str) -> list[Trigger]:
        data = await self._request("GET", f"/v1/workflows/{seg(workflow_id)}/triggers")
        items = data.get("items", []) if isinstance(data, dict) else data or []
        return [Trigger.read(t) for t in items]

    async def get_trigger(self, trigger_id: str) -> Trigger:
        return Trigger.read(await self._request("GET", f"/v1/triggers/{seg(trigger_id)}"))

    async def enable_trigger(self, trigger_id: str) -> Trigger | None:
        return await self._trigger_action(trigger_id, "enable")

    async def disable_trigger(self, trigger_id: str) -> Trigger | None:
        return await self._trigger_action(trigger_id, "disable")

    async def delete_trigger(self, trigger_id: str) -> None:
        await self._request("DELETE", f"/v1/triggers/{seg(trigger_id)}")

    async def _trigger_action(self, trigger_id: str, action: str) -> Trigger | None:
        data = await self._request("POST", f"/v1/triggers/{seg(trigger_id)}/{action}")
        return Trigger.read(data) if isinstance(data, dict) and "id" in data else None

    async def trigger_workflow(self, workflow_id: str, input_data: Any = None) -> str:
        """Fire ``workflow_id`` by hand: a new workflow from its definition; returns the new id."""
        body = {"input_data": input_data} if input_data is not None else {}
        data = await self._request("POST", f"/v1/workflows/{seg(workflow_id)}/trigger", json=body)
        if not isinstance(data, dict) or not isinstance(data.get("workflow_id"), str):
            raise ValidationError(f"unexpected answer from the trigger route: {data!r}")
        return str(data["workflow_id"])

    async def publish_event(self, event_type: str, payload: Any = None, *, event_id: str | None = None) -> dict[str, Any]:
        """Publish an event (``POST /v1/events``): every enabled event trigger of ``event_type`` whose
        filter matches ``payload`` fires, and every run waiting for it (a ``wait_for_event`` step whose
        filter matches) resumes. With ``event_id``, publishing again starts nothing new.

        Returns ``{'event_id', 'matched', 'started', 'duplicate', 'fires': [{'trigger_id',
        'workflow_id', 'status', 'reason'}], 'woke'}`` (``woke``: how many waiting runs it resumes).
        """
        if not isinstance(event_type, str) or not event_type.strip():
            raise ValidationError("event_type must be a non-empty string", field="type")
        body: dict[str, Any] = {"type": event_type, "payload": payload}
        if event_id is not None:
            body["id"] = event_id
        data = await self._request("POST", "/v1/events", json=body)
        return dict(data or {})

    async def fire_trigger(self, trigger_id: str, input_data: Any = None) -> str:
        """Fire one trigger by hand, whatever its type; returns the new workflow's id."""
        body = {"input_data": input_data} if input_data is not None else {}
        data = await self._request("POST", f"/v1/triggers/{seg(trigger_id)}/fire", json=body)
        if not isinstance(data, dict) or not isinstance(data.get("workflow_id"), str):
            raise ValidationError(f"unexpected answer from the fire route: {data!r}")
        return str(data["workflow_id"])
