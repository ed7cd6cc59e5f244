"""Pooled containers: how they are made, adopted after a restart, and removed.

A pooled container mounts two host directories:

- ``{work_dir}/c/{suffix}`` at ``/flow/run`` (read-write): the agent socket ``agent.sock``, shipped
  function modules ``modules/`` and the per-task directories ``tasks/``;
- this package's ``agent/`` directory at ``/flow/agent`` (read-only): the agent program.

An ``agent`` container runs ``python3 /flow/agent/flow_agent.py`` as its main process; an ``exec``
container (images without python3) runs a shell that sleeps, and every task is a ``docker exec``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from flowcore.errors import FlowError, NotFound
from pool.channel import AgentChannel, StateHandler
from pool.errors import AgentStartFailed
from pool.keys import PoolKey
from pool.runtime import (
    LABEL_FLOW,
    LABEL_KIND,
    LABEL_POOL_KEY,
    LABEL_POOL_SPEC,
    LABEL_SERVICE,
    LABEL_WORKFLOW,
    Bind,
    ContainerRuntime,
    ContainerSpec,
    ContainerState,
)

log = logging.getLogger(__name__)

AGENT_DIR = Path(__file__).resolve().parent / "agent"
RUN_DIR = "/flow/run"
TASKS_DIR = f"{RUN_DIR}/tasks"
AGENT_CMD = [
    "python3",
    "-u",
    "/flow/agent/flow_agent.py",
    "--socket",
    f"{RUN_DIR}/agent.sock",
    "--modules",
    f"{RUN_DIR}/modules",
]
SLEEPER_CMD = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes


@dataclass(eq=False)
class PooledContainer:
    container_id: str
    name: str
    key: PoolKey
    host_dir: Path
    channel: AgentChannel | None
    created_s: float = field(default_factory=time.monotonic)
    idle_since_s: float = field(default_factory=time.monotonic)
    uses: int = 0
    busy: bool = False
    lost_reason: str | None = None  # set when found dead or unhealthy
    broken: bool = False  # must not serve another task (killed after a timeout, OOM flag set...)
    generation: int = 0

    @property
    def tasks_host_dir(self) -> Path:
        return self.host_dir / "tasks"

    @property
    def short_id(self) -> str:
        return self.container_id[:12]


def safe_name(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", text)[:limit] or "x"


class ContainerFactory:
    def __init__(
        self,
        runtime: ContainerRuntime,
        *,
        service_id: str,
        work_dir: Path,
        agent_start_timeout_s: float,
        state_handler: StateHandler | None,
        extra_labels: dict[str, str] | None = None,
    ) -> None:
        self.extra_labels = dict(extra_labels or {})
        self.runtime = runtime
        self.service_id = service_id
        self.work_dir = work_dir
        self.agent_start_timeout_s = agent_start_timeout_s
        self.state_handler = state_handler
        # Per service, so that services sharing a work_dir never touch each other's directories.
        self.service_dir = work_dir / safe_name(service_id, 24)
        self.containers_dir = self.service_dir / "c"
        sample = self.containers_dir / ("x" * 12) / "agent.sock"
        if len(str(sample)) > MAX_SOCKET_PATH:
            from flowcore.errors import ConfigError

            raise ConfigError(
                f"work_dir {work_dir} is too long for unix socket paths (108 bytes): use a shorter one",
                field="work_dir",
            )

    def base_labels(self, kind: str) -> dict[str, str]:
        """Labels of every container this service makes."""
        return {**self.extra_labels, LABEL_FLOW: "1", LABEL_SERVICE: self.service_id, LABEL_KIND: kind}

    def labels(self, key: PoolKey, *, kind: str = "pooled") -> dict[str, str]:
        labels = {**self.base_labels(kind), LABEL_POOL_KEY: key.hash, LABEL_POOL_SPEC: key.to_label()}
        if key.workflow_id is not None:
            labels[LABEL_WORKFLOW] = key.workflow_id
        return labels

    def _host_dir(self, suffix: str) -> Path:
        return self.containers_dir / suffix

    async def create(self, key: PoolKey, *, kind: str = "pooled") -> PooledContainer:
        """Start a container for ``key`` and, for an agent container, connect to its agent."""
        suffix = secrets.token_hex(6)
        host_dir = self._host_dir(suffix)
        (host_dir / "tasks").mkdir(parents=True)
        (host_dir / "modules").mkdir()
        for path in (host_dir, host_dir / "tasks", host_dir / "modules"):
            os.chmod(path, 0o777)
        spec = ContainerSpec(
            image=key.image,
            entrypoint=AGENT_CMD if key.kind == "agent" else SLEEPER_CMD,
            command=[],
            env={"PYTHONDONTWRITEBYTECODE": "1"} if key.kind == "agent" else {},
            labels=self.labels(key, kind=kind),
            binds=[Bind(str(host_dir), RUN_DIR), Bind(str(AGENT_DIR), "/flow/agent", read_only=True)],
            network=key.network,
            cpu=key.cpu,
            memory_mb=key.memory_mb,
            pids=key.pids,
            workdir="/",
            name=f"flow-{safe_name(self.service_id)}-{suffix}",
        )
        try:
            container_id = await self.runtime.start(spec)
        except BaseException:
            shutil.rmtree(host_dir, ignore_errors=True)
            raise
        container = PooledContainer(container_id, spec.name or suffix, key, host_dir, None)
        if key.kind == "agent":
            try:
                container.channel = await AgentChannel.connect(
                    str(host_dir / "agent.sock"),
                    timeout_s=self.agent_start_timeout_s,
                    state_handler=self.state_handler,
                    alive=lambda: self._alive(container_id),
                )
            except BaseException as exc:
                await self.destroy(container)
                if isinstance(exc, AgentStartFailed):
                    raise AgentStartFailed(f"image {key.image}: {exc.message}") from exc
                raise
        return container

    async def _alive(self, container_id: str) -> bool:
        try:
            return (await self.runtime.inspect(container_id)).running
        except NotFound:
            return False

    async def destroy(self, container: PooledContainer) -> None:
        if container.channel is not None:
            await container.channel.close()
        try:
            await self.runtime.remove(container.container_id)
        except FlowError as exc:
            log.warning("cannot remove container %s: %s", container.short_id, exc)
        shutil.rmtree(container.host_dir, ignore_errors=True)

    async def adopt(self, state: ContainerState) -> PooledContainer | None:
        """A container a previous run of this service left: reuse it when it is healthy and idle."""
        if state.labels.get(LABEL_KIND) != "pooled" or not state.running:
            return None
        try:
            key = PoolKey.from_label(state.labels[LABEL_POOL_SPEC])
        except (KeyError, ValueError, TypeError):
            return None
        suffix = state.name.rsplit("-", 1)[-1]
        host_dir = self._host_dir(suffix)
        if not host_dir.is_dir():
            return None
        container = PooledContainer(state.container_id, state.name, key, host_dir, None)
        if key.kind == "agent":
            try:
                channel = await AgentChannel.connect(
                    str(host_dir / "agent.sock"), timeout_s=2.0, state_handler=self.state_handler
                )
            except AgentStartFailed:
                return None
            if channel.hello.get("busy"):
                await channel.close()
                return None
            container.channel = channel
        # Leftover task directories belong to tasks of the previous run.
        for child in container.tasks_host_dir.iterdir():
            shutil.rmtree(child, ignore_errors=True)
        return container

    def remove_orphan_dirs(self, keep: set[Path]) -> None:
        if not self.containers_dir.is_dir():
            return
        for child in self.containers_dir.iterdir():
            if child not in keep:
                with contextlib.suppress(OSError):
                    shutil.rmtree(child, ignore_errors=True)
