"""What happens to a deployed agent that exits with an error (ADR 014): restart, keep, or remove.

An agent's spec says ``on_error``:

- ``keep`` (default, as before): it stays stopped, with its logs, for inspection;
- ``remove``: its container is removed (the record stays, ``status: removed``, with the reason);
- ``restart``: it is started again after a backoff (``restart_backoff_s`` doubling per restart, at
  most ``restart_backoff_max_s``), at most ``max_restarts`` times; then it stays stopped
  (``reason`` says so). ``restarts`` in the record counts them.

Only an exit the user did not ask for counts: exit code 0 is a normal end, and an agent stopped
through the API (``desired: stopped``) is left alone. :func:`decide` is the pure decision (a clock is
passed in); :class:`AgentWatcher` looks at this service's agents every ``agent_watch_s`` and acts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from flowcore.aiotasks import cancel_and_wait
from flowcore.errors import FlowError, NotFound

if TYPE_CHECKING:
    from pool.agents import AgentRecord, AgentService

log = logging.getLogger(__name__)
OnError = Literal["restart", "keep", "remove"]


@dataclass(frozen=True)
class Verdict:
    action: Literal["none", "wait", "restart", "keep", "remove", "give_up"]
    at_s: float | None = None  # for "wait": when the restart is due
    reason: str = ""


def backoff_delay_s(restarts: int, initial_s: float, maximum_s: float) -> float:
    """The wait before restart number ``restarts + 1``: doubling from ``initial_s``, capped."""
    return float(min(maximum_s, initial_s * (2 ** min(restarts, 32))))


def decide(
    *,
    on_error: OnError,
    max_restarts: int,
    backoff_s: float,
    backoff_max_s: float,
    desired: str,
    running: bool,
    exit_code: int | None,
    restarts: int,
    next_restart_at_s: float | None,
    now_s: float,
) -> Verdict:
    """What to do about one agent now (pure)."""
    if desired != "running" or running or exit_code is None or exit_code == 0:
        return Verdict("none")
    if on_error == "keep":
        return Verdict("keep", reason=f"exited with code {exit_code}; kept stopped for inspection (on_error: keep)")
    if on_error == "remove":
        return Verdict("remove", reason=f"exited with code {exit_code}; removed (on_error: remove)")
    if restarts >= max_restarts:
        return Verdict(
            "give_up",
            reason=f"exited with code {exit_code} after {restarts} restarts (max_restarts {max_restarts}); "
            "kept stopped",
        )
    if next_restart_at_s is None:
        return Verdict("wait", at_s=now_s + backoff_delay_s(restarts, backoff_s, backoff_max_s))
    if now_s >= next_restart_at_s:
        return Verdict("restart", reason=f"exited with code {exit_code}; restart {restarts + 1} of {max_restarts}")
    return Verdict("none")


class AgentWatcher:
    """Applies :func:`decide` to this service's agents every ``interval_s``."""

    def __init__(self, agents: AgentService, interval_s: float) -> None:
        self.agents = agents
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except Exception:  # the loop must survive anything (Redis or the engine away)
                log.exception("agents: restart policy check failed")

    async def check(self, now_s: float | None = None) -> None:
        for record in await self.agents.own_records():
            await self.check_one(record, time.time() if now_s is None else now_s)

    async def check_one(self, record: AgentRecord, now_s: float) -> None:
        if record.container_id is None or record.status in ("removed", "lost"):
            return
        try:
            state = await self.agents.runtime.inspect(record.container_id)
        except NotFound:
            return  # get/list mark it lost
        verdict = decide(
            on_error=record.on_error,
            max_restarts=record.max_restarts,
            backoff_s=record.restart_backoff_s,
            backoff_max_s=record.restart_backoff_max_s,
            desired=record.desired,
            running=state.running,
            exit_code=state.exit_code,
            restarts=record.restarts,
            next_restart_at_s=record.next_restart_at_s,
            now_s=now_s,
        )
        if verdict.action == "none":
            return
        record.last_exit_code = state.exit_code
        if verdict.action == "wait":
            record.next_restart_at_s = verdict.at_s
            record.status = "restarting"
        elif verdict.action == "restart":
            try:
                await self.agents.runtime.start_existing(record.container_id)
            except FlowError as exc:
                log.warning("agent %s: cannot restart: %s", record.id, exc.message)
                return
            record.restarts += 1
            record.next_restart_at_s = None
            record.status = "running"
            record.reason = verdict.reason
        elif verdict.action == "remove":
            await self.agents.runtime.remove(record.container_id)
            record.status = "removed"
            record.desired = "stopped"
            record.reason = verdict.reason
        else:  # keep, give_up: stopped for inspection; nothing more happens on its own
            record.status = "stopped"
            record.desired = "stopped"
            record.next_restart_at_s = None
            record.reason = verdict.reason
        log.info("agent %s: %s (%s)", record.id, verdict.action, verdict.reason or "backoff")
        await self.agents.update(record)
