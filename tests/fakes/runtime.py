"""An in-memory :class:`pool.runtime.ContainerRuntime`, for testing pool logic in milliseconds (ADR 022).

It keeps what the pool relies on from a Docker engine, as the contract suite
(``tests/integration/test_runtime_contract.py``) checks against the real adapter:

- containers with ids, names, labels and a state: ``created``, ``running``, ``paused``, ``exited``;
  ``inspect`` answers ``running`` for a paused container while ``list`` does not (as Docker does), and
  ``list`` carries no exit code;
- the main process: a finite program (``sh -c 'echo hi; exit 3'``) ends at once with its output and
  exit code; anything else (``sleep 3600``, the pool's sleeper loop, ``python3 -u agent.py``) runs
  until stopped, killed or :meth:`FakeRuntime.die`; ``stop`` ends a process that traps TERM with 0,
  others with 137, ``kill`` with 137;
- exec with exit codes and captured output (stdout kept, stderr only in the combined tail), ``$VAR``
  expansion from the exec's and the container's env, 126 for an executable the image lacks, a hang
  (``sleep N``) that ends with the timeout (the container is then killed) or when the container dies;
- errors translated as the adapter does: ``NotFound``, ``ImageNotFound``, ``RuntimeFailure`` (a paused
  or stopped container, a taken name) and ``ServiceUnavailable`` while the engine is down.

Its shell (:mod:`tests.fakes.programs`) knows only ``;``-separated ``echo [>&2]``, ``exit N``, ``true``, ``false``, ``sleep N``,
``trap`` and loops; a test that needs another program registers a handler with
:meth:`FakeRuntime.on_exec`. Faults: :meth:`FakeRuntime.die` (a container dies, optionally OOM),
:meth:`FakeRuntime.fail_next` (the next call of a method raises), ``available = False`` (the engine
does not answer), and an exec handler returning a failing :class:`FakeProcess`.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from flowcore import limits
from flowcore.errors import FlowError, ImageNotFound, NotFound, RuntimeFailure, ServiceUnavailable
from pool.runtime import (
    ContainerRuntime,
    ContainerSpec,
    ContainerState,
    ContainerStats,
    OutputSink,
    ProcessResult,
)
from tests.fakes.programs import BASE_PROGRAMS, KILLED, PYTHON_PROGRAMS, FakeProcess, interpret

TAIL_BYTES = 4096  # as pool.docker_runtime


@dataclass
class FakeContainer:
    container_id: str
    name: str
    spec: ContainerSpec
    status: str = "created"
    exit_code: int = 0
    oom_killed: bool = False
    started_at: str = "0001-01-01T00:00:00Z"
    finished_at: str = "0001-01-01T00:00:00Z"
    output: list[tuple[str, bytes]] = field(default_factory=list)  # (stream, chunk) of the main process
    main: FakeProcess = field(default_factory=FakeProcess)
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # set whenever it stops or goes

    @property
    def labels(self) -> Mapping[str, str]:
        return self.spec.labels

    @property
    def env(self) -> Mapping[str, str]:
        return self.spec.env


ExecHandler = Callable[[FakeContainer, Sequence[str], Mapping[str, str]], FakeProcess | None]
"""Decides what an exec does (None: the next handler, then the built-in shell, decides)."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")



class FakeRuntime:
    """:class:`pool.runtime.ContainerRuntime` in memory. ``images``: image name -> its executables."""

    def __init__(self, images: Mapping[str, frozenset[str]] | None = None) -> None:
        self.images: dict[str, frozenset[str]] = dict(images or {})
        self.containers: dict[str, FakeContainer] = {}
        self.available = True
        self.closed = False
        self.calls: list[tuple[str, str]] = []  # (method, container id or image), in order
        self.peak_containers = 0  # the most containers the engine held at once
        self._handlers: list[ExecHandler] = []
        self._failures: dict[str, deque[FlowError]] = defaultdict(deque)

    # ------------------------------------------------------------------ test controls
    def add_image(self, image: str, *, python: bool = True) -> None:
        self.images[image] = PYTHON_PROGRAMS if python else BASE_PROGRAMS

    def on_exec(self, handler: ExecHandler) -> None:
        """Handlers are asked first, most recent first."""
        self._handlers.insert(0, handler)

    def fail_next(self, method: str, error: FlowError) -> None:
        """The next call of ``method`` (``start``, ``exec``, ``inspect``...) raises ``error``."""
        self._failures[method].append(error)

    def die(self, container_id: str, *, exit_code: int = KILLED, oom: bool = False) -> None:
        """The container's main process ends from outside (a crash, ``docker kill``, the OOM killer)."""
        self._end(self._get(container_id), exit_code, oom=oom)

    def running_ids(self) -> list[str]:
        return [c.container_id for c in self.containers.values() if c.status in ("running", "paused")]

    # ------------------------------------------------------------------ internals
    def _enter(self, method: str, target: str) -> None:
        self.calls.append((method, target))
        if not self.available:
            raise ServiceUnavailable(f"{method}: the Docker engine cannot be reached (fake: down)")
        failures = self._failures.get(method)
        if failures:
            raise failures.popleft()

    def _get(self, container_id: str) -> FakeContainer:
        container = self.containers.get(container_id)
        if container is None:  # Docker accepts a unique id prefix or a name too
            found = [c for c in self.containers.values() if c.name == container_id]
            found = found or [c for c in self.containers.values() if c.container_id.startswith(container_id)]
            container = found[0] if len(found) == 1 else None
        if container is None:
            raise NotFound(f"No such container: {container_id}")
        return container

    def _end(self, container: FakeContainer, exit_code: int, *, oom: bool = False) -> None:
        if container.status in ("running", "paused"):
            container.status = "exited"
            container.exit_code = exit_code
            container.oom_killed = container.oom_killed or oom
            container.finished_at = _now()
        container.ended.set()

    def _run_main(self, container: FakeContainer) -> None:
        spec = container.spec
        argv = [*(spec.entrypoint or []), *(spec.command or [])]
        programs = self.images.get(spec.image, BASE_PROGRAMS)
        if argv and argv[0] not in programs:
            raise RuntimeFailure(
                "start container: OCI runtime create failed: starting container process caused:"
                f' exec: "{argv[0]}": executable file not found in $PATH: unknown'
            )
        process = interpret(argv, spec.env, programs) if argv else FakeProcess(hang=True)
        container.main = process if process is not None else FakeProcess(hang=True)
        container.status = "running"
        container.ended = asyncio.Event()
        container.started_at = _now()
        container.oom_killed = False
        if container.main.stdout:
            container.output.append(("stdout", container.main.stdout))
        if container.main.stderr:
            container.output.append(("stderr", container.main.stderr))
        if not container.main.hang:
            self._end(container, container.main.exit_code)

    # ------------------------------------------------------------------ the Protocol
    async def close(self) -> None:
        self.closed = True

    async def ping(self) -> None:
        self._enter("ping", "")

    async def image_exists(self, image: str) -> bool:
        self._enter("image_exists", image)
        return image in self.images

    async def ensure_image(self, image: str) -> None:
        if not await self.image_exists(image):
            raise ImageNotFound(f"image not found: {image}", field="image")

    async def start(self, spec: ContainerSpec) -> str:
        self._enter("start", spec.image)
        if spec.image not in self.images:
            raise ImageNotFound(f"image not found: {spec.image}", field="image")
        name = spec.name or f"fake-{secrets.token_hex(4)}"
        if any(c.name == name for c in self.containers.values()):
            raise RuntimeFailure(f'create container: Conflict. The container name "/{name}" is already in use')
        container = FakeContainer(secrets.token_hex(32), name, spec)
        self.containers[container.container_id] = container
        self.peak_containers = max(self.peak_containers, len(self.containers))
        try:
            self._run_main(container)
        except FlowError:
            del self.containers[container.container_id]  # as the adapter: a container that cannot start goes
            raise
        return container.container_id

    async def start_existing(self, container_id: str) -> None:
        self._enter("start_existing", container_id)
        container = self._get(container_id)
        if container.status in ("created", "exited"):
            self._run_main(container)

    async def run_once(
        self, spec: ContainerSpec, timeout_s: float | None, on_output: OutputSink | None = None
    ) -> ProcessResult:
        return await self._run_once(spec, timeout_s, on_output, leave=False)

    async def run_once_keep(
        self, spec: ContainerSpec, timeout_s: float | None, on_output: OutputSink | None = None
    ) -> ProcessResult:
        return await self._run_once(spec, timeout_s, on_output, leave=True)

    async def _run_once(
        self, spec: ContainerSpec, timeout_s: float | None, on_output: OutputSink | None, *, leave: bool
    ) -> ProcessResult:
        container_id = await self.start(spec)
        container = self.containers[container_id]
        completed = False
        try:
            timed_out = False
            try:
                await asyncio.wait_for(container.ended.wait(), timeout_s)
            except TimeoutError:
                timed_out = True
                self._end(container, KILLED)
            stdout = b"".join(data for stream, data in container.output if stream == "stdout")
            if on_output is not None:
                for stream, data in container.output:
                    on_output("stdout" if stream == "stdout" else "stderr", data)
            completed = True
            return ProcessResult(
                exit_code=container.exit_code,
                stdout=stdout[:limits.current().max_output_bytes],
                stderr=b"",
                combined_tail=b"".join(data for _, data in container.output)[-TAIL_BYTES:],
                oom_killed=container.oom_killed,
                timed_out=timed_out,
                container_id=container_id,
                stdout_truncated=len(stdout) > limits.current().max_output_bytes,
            )
        finally:
            if not (leave and completed):
                await self.remove(container_id)

    def _exec_process(self, container: FakeContainer, argv: Sequence[str], env: Mapping[str, str]) -> FakeProcess:
        if container.status == "paused":
            raise RuntimeFailure(
                f"exec in container: Container {container.container_id} is paused, unpause the container before exec"
            )
        if container.status != "running":
            raise RuntimeFailure(f"exec in container: Container {container.container_id} is not running")
        merged = {**container.env, **env}
        for handler in self._handlers:
            decided = handler(container, argv, merged)
            if decided is not None:
                return decided
        programs = self.images.get(container.spec.image, BASE_PROGRAMS)
        return interpret(argv, merged, programs) or FakeProcess(hang=True)

    async def _wait_process(self, container: FakeContainer, process: FakeProcess, timeout_s: float | None) -> bool:
        """Let a process run; True when it ran out of time. A hang ends when the container does."""
        if process.kills_container:
            self._end(container, KILLED, oom=process.oom)
        if not process.hang:
            return False
        try:
            await asyncio.wait_for(container.ended.wait(), timeout_s)
        except TimeoutError:
            return True
        return False

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
        self._enter("exec", container_id)
        container = self._get(container_id)
        process = self._exec_process(container, argv, env)
        if on_output is not None:
            if process.stdout:
                on_output("stdout", process.stdout)
            if process.stderr:
                on_output("stderr", process.stderr)
        timed_out = await self._wait_process(container, process, timeout_s)
        if timed_out:
            await self.kill(container_id)
        ended_with_container = process.hang and not timed_out
        exit_code = -1 if timed_out else KILLED if ended_with_container else process.exit_code
        return ProcessResult(
            exit_code=exit_code,
            stdout=process.stdout[:limits.current().max_output_bytes],
            stderr=b"",
            combined_tail=(process.stdout + process.stderr)[-TAIL_BYTES:],
            timed_out=timed_out,
            container_id=container_id,
            stdout_truncated=len(process.stdout) > limits.current().max_output_bytes,
        )

    async def exec_capped(
        self, container_id: str, argv: Sequence[str], *, user: str | None, max_bytes: int, timeout_s: float
    ) -> tuple[bytes, bool, int | None]:
        self._enter("exec_capped", container_id)
        container = self._get(container_id)
        process = self._exec_process(container, argv, {})
        if len(process.stdout) > max_bytes:
            return process.stdout[:max_bytes], True, None
        if await self._wait_process(container, process, timeout_s):
            return process.stdout, True, None
        return process.stdout, False, (KILLED if process.hang else process.exit_code)

    async def kill(self, container_id: str) -> None:
        self._enter("kill", container_id)
        container = self.containers.get(container_id)
        if container is not None:
            self._end(container, KILLED)

    async def stop(self, container_id: str, timeout_s: float = 5.0) -> None:
        self._enter("stop", container_id)
        container = self.containers.get(container_id)
        if container is not None:
            self._end(container, 0 if container.main.traps_term else KILLED)

    async def remove(self, container_id: str) -> None:
        self._enter("remove", container_id)
        container = self.containers.pop(container_id, None)
        if container is not None:
            container.status = "removing"
            container.ended.set()

    async def list(self, labels: Mapping[str, str]) -> list[ContainerState]:
        self._enter("list", "")
        return [
            ContainerState(
                container_id=c.container_id,
                running=c.status == "running",
                status=c.status,
                exit_code=None,
                oom_killed=False,
                labels=dict(c.labels),
                name=c.name,
                image=c.spec.image,
            )
            for c in self.containers.values()
            if all(c.labels.get(k) == v for k, v in labels.items())
        ]

    async def inspect(self, container_id: str) -> ContainerState:
        self._enter("inspect", container_id)
        c = self._get(container_id)
        return ContainerState(
            container_id=c.container_id,
            running=c.status in ("running", "paused"),
            status=c.status,
            exit_code=c.exit_code,
            oom_killed=c.oom_killed,
            labels=dict(c.labels),
            name=c.name,
            image=c.spec.image,
            started_at=c.started_at,
            finished_at=c.finished_at,
        )

    async def logs(self, container_id: str, tail: int | None = None) -> str:
        self._enter("logs", container_id)
        text = b"".join(data for _, data in self._get(container_id).output).decode(errors="replace")
        lines = text.splitlines(keepends=True)
        return "".join(lines if tail is None else lines[-tail:] if tail > 0 else [])

    async def follow_logs(self, container_id: str) -> AsyncIterator[str]:
        self._enter("follow_logs", container_id)
        container = self._get(container_id)
        sent = 0
        while True:
            for _, data in container.output[sent:]:
                yield data.decode(errors="replace")
            sent = len(container.output)
            if container.status not in ("running", "paused"):
                return
            await container.ended.wait()

    async def stats(self, container_id: str) -> ContainerStats:
        self._enter("stats", container_id)
        c = self._get(container_id)
        alive = c.status in ("running", "paused")
        return ContainerStats(
            container_id=c.container_id,
            cpu_percent=0.0,
            memory_bytes=1024 * 1024 if alive else 0,
            memory_limit_bytes=(c.spec.memory_mb or 1024) * 1024 * 1024,
            pids=1 if alive else 0,
        )

    async def pause(self, container_id: str) -> None:
        self._enter("pause", container_id)
        c = self._get(container_id)
        if c.status != "running":
            raise RuntimeFailure(f"pause container: Container {c.container_id} is not running")
        c.status = "paused"

    async def unpause(self, container_id: str) -> None:
        self._enter("unpause", container_id)
        c = self._get(container_id)
        if c.status != "paused":
            raise RuntimeFailure(f"unpause container: Container {c.container_id} is not paused")
        c.status = "running"

    async def rename(self, container_id: str, name: str) -> None:
        self._enter("rename", container_id)
        c = self._get(container_id)
        if any(o.name == name for o in self.containers.values() if o is not c):
            raise RuntimeFailure(f'rename container: Conflict. The container name "/{name}" is already in use')
        c.name = name


if TYPE_CHECKING:  # mypy proves the fake implements the whole Protocol (runs nothing)
    _conforms: ContainerRuntime = FakeRuntime()
