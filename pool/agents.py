"""Long-running agents: containers users deploy, start, stop, read the logs of and delete.

Records live in the Redis hash ``keys.agents`` (agent id -> :class:`AgentRecord` JSON); the
container carries the usual labels plus ``io.agentainer.flow.kind=agent`` and
``io.agentainer.flow.agent=<id>``. Status is read from the engine on every ``get``/``list``.
A record keeps the names of the agent's env variables, never their values (:data:`ENV_MASK`).

Agents outlive a restart of their pool service (unless it shut down without
``keep_containers_on_shutdown``, which removes them): on start, :meth:`AgentService.adopt` matches
the agent containers this service labelled with their records, rebuilds the record of a container
whose record was lost, and marks ``lost`` the agents whose containers vanished meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis

from flowcore.durations import DurationS
from flowcore.errors import Conflict, FlowError, NotFound
from flowcore.keyspace import Keyspace
from flowcore.settings import PoolSettings
from pool.agent_bridge import AgentBridge
from pool.agent_restart import OnError
from pool.redisio import aw as _aw
from pool.runtime import (
    LABEL_AGENT,
    LABEL_FLOW,
    LABEL_KIND,
    LABEL_SERVICE,
    LABEL_STEP,
    LABEL_WORKFLOW,
    Bind,
    ContainerRuntime,
    ContainerSpec,
    ContainerState,
)

log = logging.getLogger(__name__)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class AgentSpec(BaseModel):
    """``POST /v1/agents``: deploy (create and start) a long-running container."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(pattern=NAME_PATTERN)
    image: str = Field(min_length=1, max_length=512)
    command: list[str] | str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    cpu: float | None = Field(None, gt=0, le=64)
    memory_mb: int | None = Field(None, ge=6)
    network: str = Field("none", min_length=1)
    workflow_id: str | None = None
    step_id: str | None = None
    # When it exits with an error (pool.agent_restart, ADR 014): restart with backoff, keep, remove.
    on_error: OnError = "keep"
    max_restarts: int = Field(3, ge=0, le=100, description="Restarts (on_error: restart) before it stays stopped.")
    restart_backoff_s: DurationS = Field(1.0, alias="restart_backoff", gt=0, le=3600)
    restart_backoff_max_s: DurationS = Field(60.0, alias="restart_backoff_max", gt=0, le=86400)


class AgentRecord(AgentSpec):
    id: str
    container_id: str | None = None
    status: str = "created"
    service_id: str = ""
    created_at: str = ""
    updated_at: str = ""
    reason: str | None = Field(None, description="Why the agent is lost, or how it was adopted.")
    restarts: int = Field(0, description="Restarts after an error exit (on_error: restart).")
    desired: Literal["running", "stopped"] = "running"  # stopped through the API: no restart policy applies
    next_restart_at_s: float | None = None
    last_exit_code: int | None = None


# An agent's env values may be secrets: they go to its container and nowhere else. Records (in Redis
# and in every answer) keep the names only, each value replaced by ENV_MASK.
ENV_MASK = "********"


def masked_env(env: dict[str, str]) -> dict[str, str]:
    return dict.fromkeys(env, ENV_MASK)


def _parse(raw: str | bytes) -> AgentRecord:
    record = AgentRecord.model_validate_json(raw)
    record.env = masked_env(record.env)  # records written before values were masked
    return record


GONE = ("removed", "lost")  # statuses of agents that have no container any more
CONTAINER_PREFIX = "flow-agent-"


@dataclass
class Adoption:
    """What :meth:`AgentService.adopt` found after a restart."""

    adopted: list[str]  # agents whose container and record were both there
    rebuilt: list[str]  # containers whose record was missing: a record was made from the container
    lost: list[str]  # records whose container vanished


def _status(state: ContainerState) -> str:
    return "running" if state.running else ("stopped" if state.status == "exited" else state.status)


def _name_of(state: ContainerState, agent_id: str) -> str:
    """The agent's name from its container's (``flow-agent-<id suffix>-<name>``)."""
    prefix = f"{CONTAINER_PREFIX}{agent_id[6:]}-"
    name = state.name[len(prefix) :] if state.name.startswith(prefix) else ""
    return name or agent_id


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class AgentService:
    def __init__(
        self, runtime: ContainerRuntime, redis: Redis, keys: Keyspace, settings: PoolSettings
    ) -> None:
        self._runtime = runtime
        self._redis = redis
        self._keys = keys
        self._settings = settings
        # Set by PoolServices: agents deployed for a workflow reach its state (pool.agent_bridge).
        self.bridge: AgentBridge | None = None

    async def _save(self, record: AgentRecord) -> AgentRecord:
        record.updated_at = _now()
        record.env = masked_env(record.env)
        await _aw(self._redis.hset(self._keys.agents, record.id, record.model_dump_json()))
        return record

    async def _load(self, agent_id: str) -> AgentRecord:
        raw = await _aw(self._redis.hget(self._keys.agents, agent_id))
        if raw is None:
            raise NotFound(f"agent {agent_id!r} not found", field="agent_id")
        return _parse(raw)

    async def _refresh(self, record: AgentRecord) -> AgentRecord:
        if record.container_id is None or record.status in GONE:
            return record
        try:
            state = await self._runtime.inspect(record.container_id)
        except NotFound:
            status = "lost"
        except FlowError:
            return record
        else:
            status = _status(state)
            if not state.running and record.next_restart_at_s is not None and record.desired == "running":
                status = "restarting"  # its restart policy starts it again after the backoff
        if status == record.status:
            return record
        if status != "lost":
            # What the engine says now, not stored: the restart watcher owns the stored record (its
            # restart count and reason), and writing a copy read earlier here would undo its updates.
            return record.model_copy(update={"status": status})
        with contextlib.suppress(NotFound):
            record = await self._load(record.id)
        record.status = status
        record.reason = "its container is gone (removed outside Agentainer Flow)"
        await self._save(record)
        return record

    @property
    def runtime(self) -> ContainerRuntime:
        return self._runtime

    async def own_records(self) -> list[AgentRecord]:
        """The records of this service's agents (as stored, not refreshed)."""
        return [r for r in await self._all() if r.service_id == self._settings.service_id]

    async def update(self, record: AgentRecord) -> AgentRecord:
        return await self._save(record)

    async def deploy(self, spec: AgentSpec) -> AgentRecord:
        for other in await self._all():
            if other.name == spec.name and other.status not in GONE:
                raise Conflict(f"an agent named {spec.name!r} exists ({other.id})", field="name")
        await self._runtime.ensure_image(spec.image)
        record = AgentRecord(
            id=f"agent-{secrets.token_hex(6)}",
            service_id=self._settings.service_id,
            created_at=_now(),
            env=masked_env(spec.env),
            **spec.model_dump(exclude={"env"}),
        )
        labels = {
            **self._settings.extra_labels,
            LABEL_FLOW: "1",
            LABEL_SERVICE: self._settings.service_id,
            LABEL_KIND: "agent",
            LABEL_AGENT: record.id,
        }
        if spec.workflow_id:
            labels[LABEL_WORKFLOW] = spec.workflow_id
        if spec.step_id:
            labels[LABEL_STEP] = spec.step_id
        env = {**spec.env, "FLOW_AGENT_ID": record.id}
        if spec.workflow_id:
            env["FLOW_WORKFLOW_ID"] = spec.workflow_id
        if spec.step_id:
            env["FLOW_STEP_ID"] = spec.step_id
        binds: list[Bind] = []
        if spec.workflow_id and self.bridge is not None:  # its workflow's state over a socket
            grant = await self.bridge.attach(record.id, spec.workflow_id)
            env.update(grant.env)
            labels.update(grant.labels)
            binds = grant.binds
        command = ["/bin/sh", "-c", spec.command] if isinstance(spec.command, str) else spec.command
        container_spec = ContainerSpec(
            binds=binds,
            image=spec.image,
            command=command,
            env=env,
            labels=labels,
            network=spec.network,
            cpu=spec.cpu,
            memory_mb=spec.memory_mb,
            name=f"{CONTAINER_PREFIX}{record.id[6:]}-{spec.name}"[:120],
        )
        try:
            record.container_id = await self._runtime.start(container_spec)
        except BaseException:
            if self.bridge is not None:
                await self.bridge.close(record.id)
            raise
        record.status = "running"
        return await self._save(record)

    async def get(self, agent_id: str) -> AgentRecord:
        return await self._refresh(await self._load(agent_id))

    async def _all(self) -> list[AgentRecord]:
        raw: dict[Any, Any] = await _aw(self._redis.hgetall(self._keys.agents))
        return [_parse(v) for v in raw.values()]

    async def list(self, workflow_id: str | None = None) -> list[AgentRecord]:
        records = [r for r in await self._all() if workflow_id is None or r.workflow_id == workflow_id]
        return [await self._refresh(r) for r in sorted(records, key=lambda r: r.created_at)]

    async def start(self, agent_id: str) -> AgentRecord:
        record = await self._load(agent_id)
        if record.container_id is None:
            raise Conflict(f"agent {agent_id!r} has no container", field="agent_id")
        await self._runtime.start_existing(record.container_id)
        record.desired, record.next_restart_at_s = "running", None
        await self._save(record)
        return await self._refresh(record)

    async def stop(self, agent_id: str) -> AgentRecord:
        record = await self._load(agent_id)
        record.desired, record.next_restart_at_s = "stopped", None  # before it exits: no restart
        await self._save(record)
        if record.container_id is not None:
            await self._runtime.stop(record.container_id)
        return await self._refresh(record)

    async def delete(self, agent_id: str) -> None:
        record = await self._load(agent_id)
        if self.bridge is not None:
            await self.bridge.close(agent_id)
        if record.container_id is not None:
            await self._runtime.remove(record.container_id)
        await _aw(self._redis.hdel(self._keys.agents, agent_id))

    async def logs(self, agent_id: str, tail: int | None = None) -> str:
        record = await self._load(agent_id)
        if record.container_id is None:
            return ""
        return await self._runtime.logs(record.container_id, tail=tail)

    async def follow(self, agent_id: str) -> AsyncIterator[str]:
        record = await self._load(agent_id)
        if record.container_id is None:
            return
        async for chunk in self._runtime.follow_logs(record.container_id):
            yield chunk

    async def _own_containers(self) -> Sequence[ContainerState]:
        labels = {LABEL_FLOW: "1", LABEL_SERVICE: self._settings.service_id, LABEL_KIND: "agent"}
        return await self._runtime.list(labels)

    async def adopt(self) -> Adoption:
        """After a restart: take back the agent containers this service labelled, with their records."""
        service_id = self._settings.service_id
        containers = {
            state.labels[LABEL_AGENT]: state for state in await self._own_containers() if state.labels.get(LABEL_AGENT)
        }
        records = {r.id: r for r in await self._all() if r.service_id == service_id}
        found = Adoption(adopted=[], rebuilt=[], lost=[])
        for agent_id, state in containers.items():
            record = records.get(agent_id)
            if record is None:
                record = self._rebuilt(agent_id, state)
                found.rebuilt.append(agent_id)
            else:
                found.adopted.append(agent_id)
            record.container_id = state.container_id
            record.status = _status(state)
            await self._save(record)
            if self.bridge is not None:
                await self.bridge.reattach(agent_id, state.labels)
        for record in records.values():
            if record.id in containers or record.status in GONE:
                continue
            record.status = "lost"
            record.reason = "its container was gone when the pool service restarted"
            await self._save(record)
            found.lost.append(record.id)
        if containers or found.lost:
            log.info(
                "agents: adopted %d, rebuilt %d records, %d lost",
                len(found.adopted), len(found.rebuilt), len(found.lost),
            )
        return found

    def _rebuilt(self, agent_id: str, state: ContainerState) -> AgentRecord:
        """A record for an agent container whose record is gone (its env is not read back)."""
        return AgentRecord(
            id=agent_id,
            name=_name_of(state, agent_id),
            image=state.image or "unknown",
            workflow_id=state.labels.get(LABEL_WORKFLOW),
            step_id=state.labels.get(LABEL_STEP),
            service_id=self._settings.service_id,
            created_at=state.started_at or _now(),
            reason="record rebuilt from its container after a pool service restart",
        )

    async def remove_all_own(self) -> None:
        """Shutdown without ``keep_containers_on_shutdown``: remove this service's agent containers."""
        for record in await self._all():
            if record.service_id == self._settings.service_id and record.container_id is not None:
                await self._runtime.remove(record.container_id)
                record.status = "removed"
                await self._save(record)
        for state in await self._own_containers():  # labelled, but without a record
            await self._runtime.remove(state.container_id)
