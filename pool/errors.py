"""Errors of the pool service, all under :class:`flowcore.errors.FlowError`."""

from __future__ import annotations

from flowcore.errors import PoolExhausted, RuntimeFailure


class ChannelClosed(RuntimeFailure):
    """The agent connection ended (the container died or the agent exited)."""

    code = "channel_closed"


class AgentStartFailed(RuntimeFailure):
    """A pooled container did not bring its agent up (no python3, crash, or too slow)."""

    code = "agent_start_failed"


class PoolWaitTimeout(PoolExhausted):
    """Every container of a pool stayed busy for the whole bounded wait."""


__all__ = ["AgentStartFailed", "ChannelClosed", "PoolExhausted", "PoolWaitTimeout", "RuntimeFailure"]
