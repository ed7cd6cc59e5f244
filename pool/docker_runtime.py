"""The Docker adapter of :class:`pool.runtime.ContainerRuntime`, on aiodocker.

aiodocker/aiohttp errors are translated here and never escape: a 404 becomes
:class:`~flowcore.errors.NotFound` (or :class:`~flowcore.errors.ImageNotFound`), a refused
connection :class:`~flowcore.errors.ServiceUnavailable`, anything else
:class:`~flowcore.errors.RuntimeFailure`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import aiodocker
import aiohttp

from flowcore import limits
from flowcore.errors import FlowError, ImageNotFound, NotFound, RuntimeFailure, ServiceUnavailable
from pool.runtime import (
    ContainerSpec,
    ContainerState,
    ContainerStats,
    OutputSink,
    ProcessResult,
)

TAIL_BYTES = 4096
TAIL_LINES = 200  # of a one-shot container's log, for its tail (docker splits lines at 16 KiB)
ATTACH_DRAIN_S = 2.0  # after a one-shot container exits, how long its attached output may still take


@contextlib.contextmanager
def _translate(what: str, *, image: str | None = None) -> Iterator[None]:
    try:
        yield
    except (FlowError, TimeoutError):  # TimeoutError is an OSError: callers handle their own timeouts
        raise
    except aiodocker.DockerError as exc:
        message = str(getattr(exc, "message", exc))
        if exc.status == 900:  # aiodocker's code for a connection that failed (ADR 022)
            raise ServiceUnavailable(f"{what}: the Docker engine cannot be reached ({message})") from exc
        if exc.status == 404:
            if image is not None and "image" in message.lower():
                raise ImageNotFound(f"image not found: {image}", field="image") from exc
            raise NotFound(f"{what}: {message}") from exc
        raise RuntimeFailure(f"{what}: {message}") from exc
    except (aiohttp.ClientConnectionError, ConnectionError, FileNotFoundError) as exc:
        raise ServiceUnavailable(f"{what}: the Docker engine cannot be reached ({exc})") from exc
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise RuntimeFailure(f"{what}: {exc}") from exc


def container_config(spec: ContainerSpec) -> dict[str, Any]:
    """The Docker API create body for a spec (pure; tested without an engine)."""
    host: dict[str, Any] = {
        "NetworkMode": spec.network,
        "Binds": [f"{b.host_path}:{b.container_path}:{'ro' if b.read_only else 'rw'}" for b in spec.binds],
        "Privileged": False,
        "Init": False,
        "CapDrop": list(spec.cap_drop),
        "CapAdd": list(spec.cap_add),
        "SecurityOpt": ["no-new-privileges:true"] if spec.no_new_privileges else [],
        "ReadonlyRootfs": spec.read_only_root,
        "Tmpfs": dict(spec.tmpfs),
    }
    if spec.memory_mb is not None:
        host["Memory"] = spec.memory_mb * 1024 * 1024
        host["MemorySwap"] = spec.memory_mb * 1024 * 1024  # no swap: the limit is the limit
    if spec.cpu is not None:
        host["NanoCpus"] = int(spec.cpu * 1e9)
    if spec.pids is not None:
        host["PidsLimit"] = spec.pids
    config: dict[str, Any] = {
        "Image": spec.image,
        "Env": [f"{k}={v}" for k, v in spec.env.items()],
        "Labels": dict(spec.labels),
        "HostConfig": host,
        "AttachStdin": False,
        "AttachStdout": True,
        "AttachStderr": True,
        "Tty": False,
        "OpenStdin": False,
    }
    if spec.entrypoint is not None:
        config["Entrypoint"] = list(spec.entrypoint)
    if spec.command is not None:
        config["Cmd"] = list(spec.command)
    if spec.workdir is not None:
        config["WorkingDir"] = spec.workdir
    if spec.user is not None:
        config["User"] = spec.user
    return config


def _state(data: Mapping[str, Any]) -> ContainerState:
    state = data.get("State") or {}
    config = data.get("Config") or {}
    if isinstance(state, str):  # the list endpoint gives State as a string
        return ContainerState(
            container_id=str(data.get("Id", "")),
            running=state == "running",
            status=state,
            exit_code=None,
            oom_killed=False,
            labels=dict(data.get("Labels") or {}),
            name=str((data.get("Names") or [""])[0]).lstrip("/"),
            image=str(data.get("Image", "")),
        )
    return ContainerState(
        container_id=str(data.get("Id", "")),
        running=bool(state.get("Running")),
        status=str(state.get("Status", "")),
        exit_code=state.get("ExitCode"),
        oom_killed=bool(state.get("OOMKilled")),
        labels=dict(config.get("Labels") or {}),
        name=str(data.get("Name", "")).lstrip("/"),
        image=str(config.get("Image", "")),
        started_at=str(state.get("StartedAt", "")),
        finished_at=str(state.get("FinishedAt", "")),
    )


def _tail(data: bytes) -> bytes:
    return data[-TAIL_BYTES:]


class DockerRuntime:
    """:class:`pool.runtime.ContainerRuntime` on a Docker engine."""

    def __init__(
        self, url: str | None = None, *, pull_missing: bool = False, pull_timeout_s: float = 10.0
    ) -> None:
        self._url = url
        self._docker: Any = None
        self._pull_missing = pull_missing
        self._pull_timeout_s = pull_timeout_s

    async def open(self) -> DockerRuntime:
        with _translate("connect to the Docker engine"):
            self._docker = aiodocker.Docker(url=self._url)
        await self.ping()
        return self

    @property
    def _d(self) -> Any:
        if self._docker is None:
            raise ServiceUnavailable("the Docker runtime is not open")
        return self._docker

    async def close(self) -> None:
        if self._docker is not None:
            docker, self._docker = self._docker, None
            with contextlib.suppress(Exception):
                await docker.close()

    async def ping(self) -> None:
        with _translate("ping the Docker engine"):
            await self._d.version()

    async def image_exists(self, image: str) -> bool:
        try:
            with _translate("inspect image"):  # a plain NotFound (ImageNotFound is no NotFound)
                await self._d.images.inspect(image)
        except NotFound:
            return False
        return True

    async def ensure_image(self, image: str) -> None:
        if await self.image_exists(image):
            return
        if self._pull_missing:
            try:
                with _translate("pull image", image=image):
                    await asyncio.wait_for(self._d.images.pull(image), self._pull_timeout_s)
            except (FlowError, TimeoutError):
                pass
            if await self.image_exists(image):
                return
        raise ImageNotFound(f"image not found: {image}", field="image")

    async def start(self, spec: ContainerSpec) -> str:
        container_id = await self._create(spec)
        await self._start_created(container_id)
        return container_id

    async def _create(self, spec: ContainerSpec) -> str:
        with _translate("create container", image=spec.image):
            container = await self._d.containers.create(container_config(spec), name=spec.name)
        return str(container.id)

    async def _start_created(self, container_id: str) -> None:
        try:
            with _translate("start container"):
                await self._d.containers.container(container_id).start()
        except FlowError:
            await self.remove(container_id)
            raise

    async def _attach(self, container_id: str, on_output: OutputSink) -> asyncio.Task[None] | None:
        """Stream a created container's output to ``on_output`` (attached before the start: nothing
        is missed). Live logs are best effort: None when the engine refuses to attach."""
        try:
            with _translate("attach to container"):
                stream = self._d.containers.container(container_id).attach(stdout=True, stderr=True, logs=True)
                await stream.__aenter__()
        except FlowError:
            return None

        async def pump() -> None:
            try:
                while True:
                    message = await stream.read_out()
                    if message is None:
                        return
                    on_output("stdout" if message.stream == 1 else "stderr", bytes(message.data))
            except (aiodocker.DockerError, aiohttp.ClientError, OSError):
                return
            finally:
                with contextlib.suppress(Exception):
                    await stream.close()

        return asyncio.create_task(pump())

    async def start_existing(self, container_id: str) -> None:
        with _translate("start container"):
            await self._d.containers.container(container_id).start()

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
        # stdout is read from the container's log once it has exited (bounded: a step that prints a
        # gigabyte costs the pool its output limit). The attached stream feeds live logs only: while
        # dockerd sets it up it may repeat what was printed (the runtime contract test caught one run
        # in 30 with its stdout doubled, ADR 022).
        completed = False
        container_id = await self._create(spec)
        attached = await self._attach(container_id, on_output) if on_output is not None else None
        try:
            await self._start_created(container_id)
        except BaseException:
            if attached is not None:
                attached.cancel()
            raise
        try:
            container = self._d.containers.container(container_id)
            timed_out = False
            try:
                with _translate("wait for container"):
                    await asyncio.wait_for(container.wait(), timeout_s)
            except TimeoutError:
                timed_out = True
                await self.kill(container_id)
                with _translate("wait for container"), contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(container.wait(), 10.0)
            if attached is not None:
                await asyncio.wait({attached}, timeout=ATTACH_DRAIN_S)
            state = await self.inspect(container_id)
            stdout, truncated = await self._stdout_of(container_id)
            with _translate("read container logs"):
                combined = "".join(await container.log(stdout=True, stderr=True, tail=str(TAIL_LINES)))
            completed = True
            return ProcessResult(
                exit_code=state.exit_code if state.exit_code is not None else -1,
                stdout=stdout,
                stderr=b"",
                combined_tail=_tail(combined.encode()),
                oom_killed=state.oom_killed,
                timed_out=timed_out,
                container_id=container_id,
                stdout_truncated=truncated,
            )
        finally:
            if attached is not None and not attached.done():
                attached.cancel()
            if not (leave and completed):
                await self.remove(container_id)

    async def _stdout_of(self, container_id: str) -> tuple[bytes, bool]:
        """An exited container's stdout, at most the output limit of it, and whether there was more.

        The log is read to its end, past the cap too (dropped): aiodocker's log stream never closes its
        HTTP response, so leaving it early leaked one connection per truncated run (a ResourceWarning
        in tests/integration/test_output_caps.py). Its end releases the connection."""
        out = bytearray()
        cut = False
        cap = limits.current().max_output_bytes  # FLOW_LIMITS__MAX_OUTPUT_MIB
        with _translate("read container logs"):
            stream = self._d.containers.container(container_id).log(stdout=True, follow=True)
            try:
                async for chunk in stream:
                    if cut:
                        continue
                    data = chunk.encode()
                    if len(out) + len(data) > cap:
                        out.extend(data[: cap - len(out)])
                        cut = True
                        continue
                    out.extend(data)
            finally:
                with contextlib.suppress(Exception):
                    await stream.aclose()
        return bytes(out), cut

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
        with _translate("exec in container"):
            container = self._d.containers.container(container_id)
            execution = await container.exec(
                list(argv), environment=dict(env), workdir=workdir, user=user or ""
            )
        out = bytearray()
        combined = bytearray()
        truncated = False
        cap = limits.current().max_output_bytes  # FLOW_LIMITS__MAX_OUTPUT_MIB

        async def collect() -> None:
            nonlocal truncated
            async with execution.start(detach=False) as stream:
                while True:
                    message = await stream.read_out()
                    if message is None:
                        return
                    if message.stream == 1:  # stdout is kept up to its cap; stderr only in the tail
                        room = cap - len(out)
                        if len(message.data) > room:
                            truncated = True
                        out.extend(message.data[: max(room, 0)])
                    combined.extend(message.data)
                    if on_output is not None:
                        on_output("stdout" if message.stream == 1 else "stderr", bytes(message.data))
                    if len(combined) > 4 * TAIL_BYTES:
                        del combined[:-TAIL_BYTES]

        timed_out = False
        try:
            with _translate("exec in container"):
                await asyncio.wait_for(collect(), timeout_s)
        except TimeoutError:
            timed_out = True
            await self.kill(container_id)
        exit_code = -1
        if not timed_out:
            with _translate("inspect exec"):
                info = await execution.inspect()
            if info.get("ExitCode") is not None:
                exit_code = int(info["ExitCode"])
        return ProcessResult(
            exit_code=exit_code,
            stdout=bytes(out),
            stderr=b"",
            combined_tail=_tail(bytes(combined)),
            timed_out=timed_out,
            container_id=container_id,
            stdout_truncated=truncated,
        )

    async def kill(self, container_id: str) -> None:
        with contextlib.suppress(NotFound, RuntimeFailure), _translate("kill container"):
            await self._d.containers.container(container_id).kill()

    async def stop(self, container_id: str, timeout_s: float = 5.0) -> None:
        with contextlib.suppress(NotFound), _translate("stop container"):
            await self._d.containers.container(container_id).stop(t=int(timeout_s))

    async def remove(self, container_id: str) -> None:
        with contextlib.suppress(NotFound), _translate("remove container"):
            await self._d.containers.container(container_id).delete(force=True, v=True)

    async def list(self, labels: Mapping[str, str]) -> list[ContainerState]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        with _translate("list containers"):
            found = await self._d.containers.list(all=True, filters=json.dumps(filters))
        return [_state(c._container) for c in found]

    async def inspect(self, container_id: str) -> ContainerState:
        with _translate("inspect container"):
            container = await self._d.containers.get(container_id)
        return _state(container._container)

    async def logs(self, container_id: str, tail: int | None = None) -> str:
        params: dict[str, Any] = {} if tail is None else {"tail": str(tail)}
        with _translate("read container logs"):
            lines = await self._d.containers.container(container_id).log(stdout=True, stderr=True, **params)
        return "".join(lines)

    async def follow_logs(self, container_id: str) -> AsyncIterator[str]:
        with _translate("follow container logs"):
            stream = self._d.containers.container(container_id).log(stdout=True, stderr=True, follow=True)
            async for chunk in stream:
                yield chunk

    async def pause(self, container_id: str) -> None:
        with _translate("pause container"):
            await self._d.containers.container(container_id).pause()

    async def unpause(self, container_id: str) -> None:
        with _translate("unpause container"):
            await self._d.containers.container(container_id).unpause()

    async def rename(self, container_id: str, name: str) -> None:
        with _translate("rename container"):
            await self._d.containers.container(container_id).rename(name)

    async def exec_capped(
        self, container_id: str, argv: Sequence[str], *, user: str | None, max_bytes: int, timeout_s: float
    ) -> tuple[bytes, bool, int | None]:
        with _translate("exec in container"):
            execution = await self._d.containers.container(container_id).exec(list(argv), user=user or "")
        out = bytearray()
        over = False

        async def collect() -> None:
            nonlocal over
            async with execution.start(detach=False) as stream:
                while True:
                    message = await stream.read_out()
                    if message is None:
                        return
                    if message.stream != 1:
                        continue  # stderr is not part of the answer
                    out.extend(message.data)
                    if len(out) > max_bytes:
                        over = True
                        return  # leaving the context closes the stream: the producer gets EPIPE

        try:
            with _translate("exec in container"):
                await asyncio.wait_for(collect(), timeout_s)
        except TimeoutError:
            return bytes(out[:max_bytes]), True, None
        if over:
            return bytes(out[:max_bytes]), True, None
        with _translate("inspect exec"):
            info = await execution.inspect()
        code = info.get("ExitCode")
        return bytes(out), False, int(code) if code is not None else None

    async def stats(self, container_id: str) -> ContainerStats:
        with _translate("read container stats"):
            data = await self._d.containers.container(container_id).stats(stream=False)
        sample: dict[str, Any] = data[0] if data else {}
        cpu = sample.get("cpu_stats") or {}
        pre = sample.get("precpu_stats") or {}
        cpu_delta = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (pre.get("cpu_usage") or {}).get(
            "total_usage", 0
        )
        sys_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
        cores = cpu.get("online_cpus") or 1
        percent = (cpu_delta / sys_delta) * cores * 100.0 if sys_delta > 0 and cpu_delta > 0 else 0.0
        memory = sample.get("memory_stats") or {}
        return ContainerStats(
            container_id=container_id,
            cpu_percent=round(percent, 2),
            memory_bytes=int(memory.get("usage", 0)),
            memory_limit_bytes=int(memory.get("limit", 0)),
            pids=int((sample.get("pids_stats") or {}).get("current", 0)),
        )
