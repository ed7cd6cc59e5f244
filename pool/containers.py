"""Pooled containers: how they are made, adopted after a restart, and removed.

An ``agent`` container (images with python3) mounts, read-only:

- ``{work_dir}/{service}/c/{suffix}`` at ``/flow/ctl``: a directory only the pool writes, holding
  the pool's listening socket ``pool.sock`` for this container (:class:`pool.channel.AgentListener`);
- this package's ``agent/`` directory at ``/flow/agent``: the agent program.

Nothing the container can write is on the host: task directories live on a tmpfs at ``/flow/task``
and ``/tmp`` is a tmpfs too (the root filesystem is read-only where the key says so). The agent runs
as root in the container with only the capabilities it needs to run each task as the key's
unprivileged uid and clean up after it (:data:`AGENT_CAPS`); the task itself has none, and
``no-new-privileges`` keeps it that way. An ``exec`` container (images without python3) runs a
sleeping shell as the task's uid with no capabilities at all; every task is a ``docker exec``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from flowcore.errors import FlowError, NotFound
from pool.channel import AgentChannel, AgentListener, StateHandler, token_digest
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
CTL_DIR = "/flow/ctl"
TASKS_DIR = "/flow/task"
AGENT_CMD = ["python3", "-u", "/flow/agent/flow_agent.py", "--connect", f"{CTL_DIR}/pool.sock"]
SLEEPER_CMD = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]
AGENT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID")
LABEL_AGENT_TOKEN = "io.agentainer.flow.agent_token_sha256"
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes
_SUFFIX = re.compile(r"^[0-9a-f]{12}$")


def scratch_mounts(key: PoolKey, *, tasks_mode: str) -> dict[str, str]:
    """tmpfs mounts of a pooled container (pure): ``/tmp`` and the task directories, bounded."""
    size = f",size={key.memory_mb}m" if key.memory_mb else ""
    return {
        "/tmp": f"rw,nosuid,nodev,mode=1777{size}",
        TASKS_DIR: f"rw,nosuid,nodev,mode={tasks_mode}{size}",
    }


def container_spec(key: PoolKey, *, name: str, labels: dict[str, str], host_dir: Path, token: str) -> ContainerSpec:
    """How a pooled container of ``key`` is created (pure; see the module docstring)."""
    common: dict[str, object] = {
        "image": key.image,
        "command": [],
        "labels": labels,
        "network": key.network,
        "cpu": key.cpu,
        "memory_mb": key.memory_mb,
        "pids": key.pids,
        "workdir": "/",
        "name": name,
        "cap_drop": ("ALL",),
        "no_new_privileges": True,
        "read_only_root": key.read_only_root,
    }
    if key.kind == "agent":
        return ContainerSpec(
            entrypoint=AGENT_CMD,
            env={"PYTHONDONTWRITEBYTECODE": "1", "FLOW_AGENT_TOKEN": token},
            binds=[Bind(str(host_dir), CTL_DIR, read_only=True), Bind(str(AGENT_DIR), "/flow/agent", read_only=True)],
            user="0:0",
            cap_add=AGENT_CAPS,
            tmpfs=scratch_mounts(key, tasks_mode="0755"),
            **common,  # type: ignore[arg-type]
        )
    return ContainerSpec(
        entrypoint=SLEEPER_CMD,
        env={},
        user=key.user,
        tmpfs=scratch_mounts(key, tasks_mode="1777"),
        **common,  # type: ignore[arg-type]
    )


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
        """Start a container for ``key`` and, for an agent container, wait for its agent."""
        suffix = secrets.token_hex(6)
        host_dir = self._host_dir(suffix)
        token = secrets.token_urlsafe(32)
        labels = self.labels(key, kind=kind)
        listener: AgentListener | None = None
        if key.kind == "agent":
            labels[LABEL_AGENT_TOKEN] = token_digest(token)
            self.containers_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            host_dir.mkdir(mode=0o700)
            listener = await AgentListener.open(str(host_dir / "pool.sock"))
        name = f"flow-{safe_name(self.service_id)}-{suffix}"
        spec = container_spec(key, name=name, labels=labels, host_dir=host_dir, token=token)
        try:
            container_id = await self.runtime.start(spec)
        except BaseException:
            if listener is not None:
                listener.close()
            shutil.rmtree(host_dir, ignore_errors=True)
            raise
        container = PooledContainer(container_id, name, key, host_dir, None)
        if listener is not None:
            try:
                container.channel = await listener.accept(
                    token_sha256=token_digest(token),
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
        """A container a previous run of this service left: reuse it when it is healthy and idle.

        Its agent reconnects to a new listener in the pool's own directory and must prove the token
        whose digest the container's label holds; nothing the container wrote is read or removed.
        """
        if state.labels.get(LABEL_KIND) != "pooled" or not state.running:
            return None
        try:
            key = PoolKey.from_label(state.labels[LABEL_POOL_SPEC])
        except (KeyError, ValueError, TypeError):
            return None
        suffix = state.name.rsplit("-", 1)[-1]
        if not _SUFFIX.match(suffix):
            return None
        host_dir = self._host_dir(suffix)
        container = PooledContainer(state.container_id, state.name, key, host_dir, None)
        if key.kind == "agent":
            digest = state.labels.get(LABEL_AGENT_TOKEN)
            try:
                is_dir = stat.S_ISDIR(os.lstat(host_dir).st_mode)
            except OSError:
                is_dir = False
            if not digest or not is_dir:
                return None
            try:
                listener = await AgentListener.open(str(host_dir / "pool.sock"))
                channel = await listener.accept(
                    token_sha256=digest, timeout_s=3.0, state_handler=self.state_handler
                )
            except (AgentStartFailed, OSError):
                return None
            if channel.hello.get("busy"):
                await channel.close()
                return None
            container.channel = channel
        return container

    def remove_orphan_dirs(self, keep: set[Path]) -> None:
        if not self.containers_dir.is_dir():
            return
        for child in self.containers_dir.iterdir():
            if child not in keep:
                with contextlib.suppress(OSError):
                    shutil.rmtree(child, ignore_errors=True)
