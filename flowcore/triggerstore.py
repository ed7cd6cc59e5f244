"""Triggers in Redis: create, read, list, enable, disable, delete, and the indexes schedulers and
event intake read (see :mod:`flowcore.keyspace`, section Triggers)."""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from flowcore import dag
from flowcore.errors import NotFound, ServiceUnavailable
from flowcore.keyspace import Keyspace
from flowcore.store import WorkflowStore
from flowcore.triggers import Trigger, TriggerSpec, TriggerType, first_run, new_trigger_id

SKIPPED_PREFIX = "skipped:"


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_trigger(trigger_id: str, raw: dict[Any, Any]) -> Trigger:
    fields = {_s(k): _s(v) for k, v in raw.items()}
    return Trigger(
        id=trigger_id,
        workflow_id=fields["workflow_id"],
        spec=TriggerSpec.model_validate_json(fields["spec"]),
        created_at=float(fields["created_at"]),
        enabled=fields.get("enabled", "1") == "1",
        next_run=float(fields["next_run"]) if fields.get("next_run") else None,
        last_run=float(fields["last_run"]) if fields.get("last_run") else None,
        run_count=int(fields.get("run_count", "0")),
        last_workflow_id=fields.get("last_workflow_id") or None,
        skipped={k[len(SKIPPED_PREFIX) :]: int(v) for k, v in fields.items() if k.startswith(SKIPPED_PREFIX)},
    )


class TriggerStore:
    def __init__(self, redis: Redis, keys: Keyspace) -> None:
        self.redis = redis
        self.keys = keys
        self.workflows = WorkflowStore(redis, keys)

    async def create(self, workflow_id: str, spec: TriggerSpec, *, now: float | None = None) -> Trigger:
        """Store a validated trigger on an existing template workflow."""
        template = await self.workflows.load_summary(workflow_id)  # NotFound names the workflow
        dag.check_runnable(template.definition)  # its fires would each make a run that does nothing
        now = time.time() if now is None else now
        trigger = Trigger(
            id=new_trigger_id(), workflow_id=workflow_id, spec=spec.checked(), created_at=now, enabled=spec.enabled
        )
        if trigger.type == TriggerType.SCHEDULE:
            trigger.next_run = first_run(trigger, now)
        k = self.keys
        record = {
            "workflow_id": workflow_id,
            "spec": trigger.spec.model_dump_json(),
            "created_at": repr(now),
            "enabled": "1" if trigger.enabled else "0",
            "next_run": repr(trigger.next_run) if trigger.next_run is not None else "",
            "run_count": "0",
        }
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(k.trigger(trigger.id), mapping=record)
                pipe.zadd(k.all_triggers, {trigger.id: int(now * 1000)})
                pipe.sadd(k.workflow_triggers(workflow_id), trigger.id)
                if trigger.type == TriggerType.EVENT:
                    pipe.sadd(k.event_triggers(trigger.spec.config.event_type or ""), trigger.id)
                if trigger.type == TriggerType.SCHEDULE and trigger.enabled and trigger.next_run is not None:
                    pipe.zadd(k.triggers_due, {trigger.id: int(trigger.next_run * 1000)})
                await pipe.execute()
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
        return trigger

    async def get(self, trigger_id: str) -> Trigger:
        try:
            raw = await self.redis.hgetall(self.keys.trigger(trigger_id))
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
        if not raw:
            raise NotFound(f"trigger {trigger_id!r} not found", field="trigger_id")
        return parse_trigger(trigger_id, raw)

    async def get_many(self, trigger_ids: list[str]) -> list[Trigger]:
        """The triggers that still exist, in the order given."""
        if not trigger_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for tid in trigger_ids:
                pipe.hgetall(self.keys.trigger(tid))
            raws = await pipe.execute()
        return [parse_trigger(tid, raw) for tid, raw in zip(trigger_ids, raws, strict=True) if raw]

    async def for_workflow(self, workflow_id: str) -> list[Trigger]:
        await self.workflows.load_summary(workflow_id)
        ids = sorted(_s(t) for t in await self.redis.smembers(self.keys.workflow_triggers(workflow_id)))
        triggers = await self.get_many(ids)
        return sorted(triggers, key=lambda t: t.created_at)

    async def list_all(self, offset: int, limit: int) -> tuple[list[Trigger], int]:
        total = await self.redis.zcard(self.keys.all_triggers)
        ids = [_s(t) for t in await self.redis.zrevrange(self.keys.all_triggers, offset, offset + limit - 1)]
        return await self.get_many(ids), int(total)

    async def for_event(self, event_type: str) -> list[Trigger]:
        ids = sorted(_s(t) for t in await self.redis.smembers(self.keys.event_triggers(event_type)))
        return await self.get_many(ids)

    async def set_enabled(self, trigger_id: str, enabled: bool, *, now: float | None = None) -> Trigger:
        """Enable or disable; a re-enabled schedule resumes from its next future time."""
        trigger = await self.get(trigger_id)
        now = time.time() if now is None else now
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(k.trigger(trigger_id), "enabled", "1" if enabled else "0")
            if trigger.type == TriggerType.SCHEDULE:
                if enabled:
                    if not trigger.enabled or trigger.next_run is None or trigger.next_run < now:
                        trigger.next_run = first_run(trigger, now)
                    pipe.hset(k.trigger(trigger_id), "next_run", repr(trigger.next_run))
                    pipe.zadd(k.triggers_due, {trigger_id: int(trigger.next_run * 1000)})
                else:
                    pipe.zrem(k.triggers_due, trigger_id)
            await pipe.execute()
        trigger.enabled = enabled
        return trigger

    async def delete(self, trigger_id: str) -> None:
        trigger = await self.get(trigger_id)
        await self._delete(trigger)

    async def _delete(self, trigger: Trigger) -> None:
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(k.trigger(trigger.id), k.trigger_runs(trigger.id))
            pipe.zrem(k.all_triggers, trigger.id)
            pipe.zrem(k.triggers_due, trigger.id)
            pipe.srem(k.workflow_triggers(trigger.workflow_id), trigger.id)
            if trigger.spec.config.event_type:
                pipe.srem(k.event_triggers(trigger.spec.config.event_type), trigger.id)
            await pipe.execute()

    async def delete_for_workflow(self, workflow_id: str) -> int:
        """Delete every trigger whose template is ``workflow_id`` (when the template is deleted)."""
        ids = [_s(t) for t in await self.redis.smembers(self.keys.workflow_triggers(workflow_id))]
        for trigger in await self.get_many(ids):
            await self._delete(trigger)
        await self.redis.delete(self.keys.workflow_triggers(workflow_id))
        return len(ids)

    async def due(self, now: float, limit: int = 100) -> list[tuple[str, float]]:
        """Schedule triggers due at or before ``now``: (id, due time), earliest first."""
        rows = await self.redis.zrangebyscore(
            self.keys.triggers_due, "-inf", int(now * 1000), start=0, num=limit, withscores=True
        )
        return [(_s(tid), float(score) / 1000) for tid, score in rows]

    async def next_due(self) -> float | None:
        rows = await self.redis.zrange(self.keys.triggers_due, 0, 0, withscores=True)
        return float(rows[0][1]) / 1000 if rows else None
