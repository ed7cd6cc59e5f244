"""Errors of the pool service, all under :class:`flowcore.errors.FlowError`."""

from __future__ import annotations

from flowcore.errors import FlowError, PoolExhausted, RuntimeFailure


class ChannelClosed(RuntimeFailure):
    """The agent connection ended (the container died or the agent exited)."""

    code = "channel_closed"


class AgentStartFailed(RuntimeFailure):
    """A pooled container did not bring its agent up (no python3, crash, or too slow)."""

    code = "agent_start_failed"


class PoolWaitTimeout(PoolExhausted):
    """Every container of a pool stayed busy for the whole bounded wait."""


class CopyTooLarge(FlowError):
    """What a copy out of a kept container asked for is larger than ``kept_copy_max_bytes``."""

    status_code = 413
    code = "copy_too_large"


__all__ = ["AgentStartFailed", "ChannelClosed", "CopyTooLarge", "PoolExhausted", "PoolWaitTimeout", "RuntimeFailure"]
