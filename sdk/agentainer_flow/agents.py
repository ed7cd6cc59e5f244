"""Agents: long-running containers (``/v1/agents``), deployed on their own or for a workflow step."""

from __future__ import annotations

from typing import Any, Literal, overload

from agentainer_flow._base import BaseClient, LineStream, seg
from agentainer_flow.errors import ValidationError
from agentainer_flow.models import Agent


class AgentsAPI(BaseClient):
    async def deploy_agent(
        self,
        name: str,
        image: str,
        env_vars: dict[str, str] | None = None,
        cpu_limit: int | None = None,
        memory_limit: int | None = None,
        workflow_id: str | None = None,
        step_id: str | None = None,
        command: list[str] | None = None,
        on_error: Literal["restart", "keep", "remove"] | None = None,
        max_restarts: int | None = None,
        restart_backoff: float | str | None = None,
    ) -> Agent:
        """Create an agent (``POST /v1/agents``). ``cpu_limit`` is in nano-CPUs (2_000_000_000 = 2 cores),
        ``memory_limit`` in bytes. The agent is created stopped: :meth:`start_agent` runs it.

        ``on_error`` says what happens when it exits with an error: ``keep`` it stopped (default),
        ``remove`` it, or ``restart`` it after ``restart_backoff`` (seconds or ``"2s"``, doubling, at most
        1 minute), at most ``max_restarts`` times (default 3); ``agent.restarts`` counts them."""
        for value, label in ((cpu_limit, "cpu_limit"), (memory_limit, "memory_limit")):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValidationError(f"{label} must be a positive integer, got {value!r}", field=label)
        # The service speaks cores and MiB; the SDK keeps Docker's units (nano-CPUs, bytes) for callers.
        body: dict[str, Any] = {"name": name, "image": image, "env": dict(env_vars or {})}
        optional = {
            "cpu": cpu_limit / 1e9 if cpu_limit else None,
            "memory_mb": max(memory_limit // 1_048_576, 6) if memory_limit else None,
            "workflow_id": workflow_id,
            "step_id": step_id,
            "command": command,
            "on_error": on_error,
            "max_restarts": max_restarts,
            "restart_backoff": restart_backoff,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return Agent.read(await self._request("POST", "/v1/agents", json=body))

    async def list_agents(self, workflow_id: str | None = None) -> list[Agent]:
        params = {"workflow_id": workflow_id} if workflow_id else None
        data = await self._request("GET", "/v1/agents", params=params)
        items = (data.get("items") or data.get("agents") or []) if isinstance(data, dict) else data or []
        return [Agent.read(a) for a in items]

    async def get_agent(self, agent_id: str) -> Agent:
        return Agent.read(await self._request("GET", f"/v1/agents/{seg(agent_id)}"))

    async def start_agent(self, agent_id: str) -> Agent:
        return await self._agent_action(agent_id, "start")

    async def stop_agent(self, agent_id: str) -> Agent:
        return await self._agent_action(agent_id, "stop")

    async def remove_agent(self, agent_id: str) -> None:
        """Stop and delete an agent (``DELETE /v1/agents/{id}``)."""
        await self._request("DELETE", f"/v1/agents/{seg(agent_id)}")

    async def _agent_action(self, agent_id: str, action: str) -> Agent:
        data = await self._request("POST", f"/v1/agents/{seg(agent_id)}/{action}")
        if isinstance(data, dict) and "id" in data:
            return Agent.read(data)
        return await self.get_agent(agent_id)

    @overload
    async def get_agent_logs(self, agent_id: str, follow: Literal[False] = False, tail: int | None = None) -> str: ...
    @overload
    async def get_agent_logs(self, agent_id: str, follow: Literal[True], tail: int | None = None) -> LineStream: ...
    async def get_agent_logs(self, agent_id: str, follow: bool = False, tail: int | None = None) -> str | LineStream:
        """The agent's logs as one string; with ``follow=True`` an async iterator of lines (each keeping
        its ``"\\n"``) that goes on as the agent prints, until it stops or the stream is closed."""
        params: dict[str, Any] = {}
        if tail is not None:
            params["tail"] = tail
        path = f"/v1/agents/{seg(agent_id)}/logs"
        if follow:
            return await self._stream_lines(path, {**params, "follow": "true"})
        response = await self._send("GET", path, params=params or None)
        return response.text
