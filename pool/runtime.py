"""What the pool needs from a container engine, as a Protocol.

The pool only ever talks to :class:`ContainerRuntime`. The Docker adapter lives in
:mod:`pool.docker_runtime`; a Kubernetes adapter would implement the same interface. Every method
raises only :mod:`flowcore.errors` types (:class:`~flowcore.errors.ImageNotFound`,
:class:`~flowcore.errors.RuntimeFailure`, :class:`~flowcore.errors.NotFound`): engine-specific
errors never cross this boundary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

LABEL_FLOW = "io.agentainer.flow"
LABEL_SERVICE = "io.agentainer.flow.service"
LABEL_POOL_KEY = "io.agentainer.flow.pool_key"
LABEL_POOL_SPEC = "io.agentainer.flow.pool_spec"
LABEL_KIND = "io.agentainer.flow.kind"  # pooled | oneshot | agent
LABEL_WORKFLOW = "io.agentainer.flow.workflow"
LABEL_STEP = "io.agentainer.flow.step"
LABEL_TASK = "io.agentainer.flow.task"
LABEL_AGENT = "io.agentainer.flow.agent"

OutputSink = Callable[[Literal["stdout", "stderr"], bytes], None]
"""Receives a run's output chunks as they come (live logs); called on the event loop, must not block."""


@dataclass(frozen=True)
class Bind:
    """A host directory mounted into the container."""

    host_path: str
    container_path: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create a container; engine-neutral."""

    image: str
    command: Sequence[str] | None = None
    entrypoint: Sequence[str] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    binds: Sequence[Bind] = ()
    network: str = "none"
    cpu: float | None = None
    memory_mb: int | None = None
    pids: int | None = None
    workdir: str | None = None
    name: str | None = None
    user: str | None = None  # the container's main process; None: the image's
    cap_drop: Sequence[str] = ("ALL",)
    cap_add: Sequence[str] = ()
    no_new_privileges: bool = True
    read_only_root: bool = False
    tmpfs: Mapping[str, str] = field(default_factory=dict)  # container path -> mount options


@dataclass(frozen=True)
class ContainerState:
    container_id: str
    running: bool
    status: str  # created | running | exited | dead | ...
    exit_code: int | None
    oom_killed: bool
    labels: Mapping[str, str]
    name: str = ""
    image: str = ""
    started_at: str = ""
    finished_at: str = ""


@dataclass(frozen=True)
class ProcessResult:
    """What a one-shot run or an exec returns."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    combined_tail: bytes  # last bytes of stdout+stderr as interleaved by the engine
    oom_killed: bool = False
    timed_out: bool = False
    container_id: str | None = None
    stdout_truncated: bool = False  # stdout went past the output limit: only its start is here


MAX_STDOUT_BYTES = 16 * 1024 * 1024  # the default of what the pool keeps of a task's stdout (flowcore.limits)


@dataclass(frozen=True)
class ContainerStats:
    container_id: str
    cpu_percent: float
    memory_bytes: int
    memory_limit_bytes: int
    pids: int


class ContainerRuntime(Protocol):
    """The engine operations the pool uses. Implementations translate their errors to flowcore's."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise :class:`~flowcore.errors.ServiceUnavailable` when the engine does not answer."""

    async def image_exists(self, image: str) -> bool: ...

    async def ensure_image(self, image: str) -> None:
        """Make the image available (pull if allowed and quick); raise ImageNotFound otherwise."""

    async def start(self, spec: ContainerSpec) -> str:
        """Create and start a container; return its id."""

    async def start_existing(self, container_id: str) -> None:
        """Start a created or stopped container."""

    async def run_once(
        self, spec: ContainerSpec, timeout_s: float | None, on_output: OutputSink | None = None
    ) -> ProcessResult:
        """Create, start, wait (killing on timeout), collect logs, remove; output also to ``on_output``."""

    async def run_once_keep(
        self, spec: ContainerSpec, timeout_s: float | None, on_output: OutputSink | None = None
    ) -> ProcessResult:
        """As :meth:`run_once`, but a container whose run completed is left, exited, for the caller to keep
        or remove (cleanup policy ``keep`` of one-shot containers, ADR 014); removed when the run failed."""

    async def exec(
        self,
        container_id: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        workdir: str | None,
        timeout_s: float | None,
        on_output: OutputSink | None = None,
        user: str | None = None,
    ) -> ProcessResult:
        """Run ``argv`` in a running container (as ``user``); on timeout the container is killed."""

    async def kill(self, container_id: str) -> None:
        """SIGKILL the container; missing or stopped containers are not an error."""

    async def stop(self, container_id: str, timeout_s: float = 5.0) -> None: ...

    async def remove(self, container_id: str) -> None:
        """Force-remove; a missing container is not an error."""

    async def list(self, labels: Mapping[str, str]) -> list[ContainerState]:
        """Containers (running or not) carrying all the given labels."""

    async def inspect(self, container_id: str) -> ContainerState:
        """Raise :class:`~flowcore.errors.NotFound` when the container is gone."""

    async def logs(self, container_id: str, tail: int | None = None) -> str: ...

    def follow_logs(self, container_id: str) -> AsyncIterator[str]:
        """Lines as the container prints them, until it stops."""
        ...

    async def stats(self, container_id: str) -> ContainerStats: ...

    # Kept containers (ADR 014): frozen for inspection, renamed so that no pool adopts them.
    async def pause(self, container_id: str) -> None: ...

    async def unpause(self, container_id: str) -> None: ...

    async def rename(self, container_id: str, name: str) -> None: ...

    async def exec_capped(
        self, container_id: str, argv: Sequence[str], *, user: str | None, max_bytes: int, timeout_s: float
    ) -> tuple[bytes, bool, int | None]:
        """Run ``argv``; its stdout up to ``max_bytes`` (then the stream is dropped), whether it went
        past, and its exit code (None when cut or timed out). Never kills the container."""
        ...
