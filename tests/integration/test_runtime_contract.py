"""The behaviour of :class:`pool.runtime.ContainerRuntime`, run against the Docker adapter and the fake.

Every test here runs twice through the ``engine`` fixture: on :class:`pool.docker_runtime.DockerRuntime`
(the real engine, network ``none``, the session's test labels plus one label per test, removed at the
end) and on :class:`tests.fakes.runtime.FakeRuntime`. What the fake answers differently from the
engine fails here, so the fast pool tests on the fake (``tests/unit/test_pool_on_fake_runtime.py``)
cannot drift from what the pool meets in production (ADR 022).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from flowcore.errors import ImageNotFound, NotFound, RuntimeFailure, ServiceUnavailable
from pool.docker_runtime import DockerRuntime
from pool.runtime import ContainerRuntime, ContainerSpec
from tests.conftest import BASE_IMAGE
from tests.fakes.runtime import FakeRuntime
from tests.pool_fixtures import eventually

MISSING_IMAGE = "agentainer-flow/no-such-image:never"
LABEL_CONTRACT = "io.agentainer.flow.test.contract"
SLEEPER = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"]


@dataclass
class Engine:
    name: str
    runtime: ContainerRuntime
    image: str
    labels: dict[str, str]

    def spec(self, entrypoint: list[str] | None = None, **fields: Any) -> ContainerSpec:
        return ContainerSpec(
            image=fields.pop("image", self.image),
            entrypoint=entrypoint or SLEEPER,
            command=[],
            labels={**self.labels, **fields.pop("labels", {})},
            network="none",
            **fields,
        )


def _fake_runtime() -> FakeRuntime:
    fake = FakeRuntime()
    fake.add_image(BASE_IMAGE)
    return fake


@pytest.fixture(params=["fake", "docker"])
def engine_kind(request: pytest.FixtureRequest) -> tuple[str, str | None, dict[str, str]]:
    """Which runtime; the real one pulls in the session's engine, base image and test labels."""
    if request.param == "fake":
        return "fake", None, {"io.agentainer.flow.test": "1"}
    docker_host: str = request.getfixturevalue("docker_host")
    request.getfixturevalue("base_image")
    labels: dict[str, str] = request.getfixturevalue("test_labels")
    return "docker", docker_host, dict(labels)


@pytest.fixture
async def engine(engine_kind: tuple[str, str | None, dict[str, str]]) -> AsyncIterator[Engine]:
    name, docker_host, labels = engine_kind
    labels = {**labels, LABEL_CONTRACT: uuid.uuid4().hex[:12]}
    runtime: ContainerRuntime = _fake_runtime() if name == "fake" else await DockerRuntime(docker_host).open()
    try:
        yield Engine(name, runtime, BASE_IMAGE, labels)
    finally:
        for state in await runtime.list({LABEL_CONTRACT: labels[LABEL_CONTRACT]}):
            await runtime.remove(state.container_id)
        await runtime.close()


async def exited(engine: Engine, container_id: str) -> Any:
    async def check() -> Any:
        state = await engine.runtime.inspect(container_id)
        return state if not state.running else None

    return await eventually(check, timeout_s=20.0, what="the container to exit")


async def test_a_container_lives_carries_its_labels_and_goes(engine: Engine) -> None:
    rt = engine.runtime
    name = f"flow-contract-{uuid.uuid4().hex[:8]}"
    cid = await rt.start(engine.spec(name=name, labels={"role": "a"}))
    state = await rt.inspect(cid)
    assert state.container_id == cid and state.running and state.status == "running"
    assert state.name == name and state.image == engine.image and state.labels["role"] == "a"
    assert state.exit_code == 0 and not state.oom_killed
    listed = await rt.list({**engine.labels, "role": "a"})
    assert [s.container_id for s in listed] == [cid] and listed[0].running and listed[0].name == name
    assert listed[0].exit_code is None  # the list endpoint carries no exit code
    assert await rt.list({**engine.labels, "role": "b"}) == []
    with pytest.raises(RuntimeFailure):  # a name is unique
        await rt.start(engine.spec(name=name))
    await rt.remove(cid)
    with pytest.raises(NotFound):
        await rt.inspect(cid)
    assert await rt.list(engine.labels) == []
    await rt.remove(cid)  # missing: not an error
    await rt.kill(cid)
    await rt.stop(cid)


async def test_kill_and_stop_end_the_main_process(engine: Engine) -> None:
    rt = engine.runtime
    killed, stopped = await rt.start(engine.spec()), await rt.start(engine.spec())
    await rt.kill(killed)
    await rt.stop(stopped, timeout_s=5.0)
    k, s = await rt.inspect(killed), await rt.inspect(stopped)
    assert (k.running, k.status, k.exit_code) == (False, "exited", 137)
    assert (s.running, s.status, s.exit_code) == (False, "exited", 0)  # the sleeper traps TERM
    listed = {st.container_id: st for st in await rt.list(engine.labels)}
    assert listed[killed].status == "exited" and not listed[killed].running  # still there until removed
    await rt.kill(killed)  # stopped: not an error
    await rt.start_existing(killed)
    assert (await rt.inspect(killed)).running


async def test_a_finite_main_process_exits_with_its_code_and_output(engine: Engine) -> None:
    rt = engine.runtime
    cid = await rt.start(engine.spec(["/bin/sh", "-c", "echo out; echo err >&2; exit 5"]))
    state = await exited(engine, cid)
    assert state.status == "exited" and state.exit_code == 5
    assert sorted((await rt.logs(cid)).splitlines()) == ["err", "out"]
    assert (await rt.logs(cid, tail=1)).strip() in ("err", "out")
    assert "".join([line async for line in rt.follow_logs(cid)]).split() in (["out", "err"], ["err", "out"])


async def test_exec_returns_exit_code_stdout_and_a_combined_tail(engine: Engine) -> None:
    rt = engine.runtime
    cid = await rt.start(engine.spec(env={"FROM_SPEC": "s"}))
    seen: list[tuple[str, bytes]] = []
    res = await rt.exec(
        cid, ["/bin/sh", "-c", "echo $A; echo $FROM_SPEC; echo oops >&2; exit 3"], {"A": "x"}, None, 20.0,
        lambda stream, data: seen.append((stream, data)),
    )
    assert res.exit_code == 3 and not res.timed_out and res.container_id == cid
    assert res.stdout == b"x\ns\n" and res.stderr == b""  # stderr only in the tail
    assert b"oops" in res.combined_tail and b"x" in res.combined_tail
    assert b"".join(d for s, d in seen if s == "stdout") == b"x\ns\n"
    assert b"".join(d for s, d in seen if s == "stderr") == b"oops\n"
    ok = await rt.exec(cid, ["echo", "hello"], {}, None, 20.0)
    assert (ok.exit_code, ok.stdout) == (0, b"hello\n")
    missing = await rt.exec(cid, ["no-such-program"], {}, None, 20.0)
    assert missing.exit_code == 126 and b"executable file not found" in missing.combined_tail
    assert (await rt.inspect(cid)).running  # a failed exec leaves the container running


async def test_exec_timeout_kills_the_container(engine: Engine) -> None:
    rt = engine.runtime
    cid = await rt.start(engine.spec())
    res = await rt.exec(cid, ["sleep", "30"], {}, None, 0.5)
    assert res.timed_out and res.exit_code == -1
    state = await exited(engine, cid)
    assert state.exit_code == 137


async def test_an_exec_ends_when_its_container_dies(engine: Engine) -> None:
    rt = engine.runtime
    cid = await rt.start(engine.spec())
    running = asyncio.create_task(rt.exec(cid, ["sleep", "30"], {}, None, 20.0))
    await asyncio.sleep(0.5)
    await rt.kill(cid)
    res = await asyncio.wait_for(running, 15.0)
    assert not res.timed_out and res.exit_code in (-1, 137)  # what dispatch reads as "killed"


async def test_exec_refused_on_stopped_paused_and_missing_containers(engine: Engine) -> None:
    rt = engine.runtime
    cid = await rt.start(engine.spec())
    await rt.pause(cid)
    paused = await rt.inspect(cid)
    assert paused.status == "paused" and paused.running  # inspect: still running, frozen
    assert [s.running for s in await rt.list(engine.labels)] == [False]  # the list says otherwise
    with pytest.raises(RuntimeFailure):
        await rt.exec(cid, ["true"], {}, None, 10.0)
    with pytest.raises(RuntimeFailure):
        await rt.unpause(await rt.start(engine.spec()))  # not paused
    await rt.unpause(cid)
    assert (await rt.inspect(cid)).status == "running"
    await rt.kill(cid)
    with pytest.raises(RuntimeFailure):
        await rt.exec(cid, ["true"], {}, None, 10.0)
    with pytest.raises(RuntimeFailure):
        await rt.pause(cid)
    await rt.remove(cid)
    with pytest.raises(NotFound):
        await rt.exec(cid, ["true"], {}, None, 10.0)
    with pytest.raises(NotFound):
        await rt.pause(cid)


async def test_rename(engine: Engine) -> None:
    rt = engine.runtime
    a, b = await rt.start(engine.spec()), await rt.start(engine.spec())
    new = f"flow-contract-kept-{uuid.uuid4().hex[:8]}"
    await rt.rename(a, new)
    assert (await rt.inspect(a)).name == new
    with pytest.raises(RuntimeFailure):
        await rt.rename(b, new)
    await rt.remove(a)
    with pytest.raises(NotFound):
        await rt.rename(a, "flow-contract-gone")


async def test_run_once_collects_and_removes(engine: Engine) -> None:
    rt = engine.runtime
    seen: list[bytes] = []
    res = await rt.run_once(
        engine.spec(["/bin/sh", "-c", "echo hi; echo warn >&2; exit 4"]), 20.0, lambda _s, d: seen.append(d)
    )
    assert (res.exit_code, res.stdout, res.timed_out, res.oom_killed) == (4, b"hi\n", False, False)
    assert b"hi" in res.combined_tail and b"warn" in res.combined_tail and b"hi\n" in b"".join(seen)
    slow = await rt.run_once(engine.spec(["sleep", "30"]), 0.5)
    assert slow.timed_out and slow.exit_code == 137
    assert await rt.list(engine.labels) == []  # both removed
    with pytest.raises(RuntimeFailure, match="executable file not found"):
        await rt.run_once(engine.spec(["no-such-program"]), 10.0)
    assert await rt.list(engine.labels) == []


async def test_run_once_keep_leaves_a_completed_container(engine: Engine) -> None:
    rt = engine.runtime
    res = await rt.run_once_keep(engine.spec(["/bin/sh", "-c", "echo kept; exit 3"]), 20.0)
    assert (res.exit_code, res.stdout) == (3, b"kept\n") and res.container_id is not None
    state = await rt.inspect(res.container_id)
    assert (state.running, state.status, state.exit_code) == (False, "exited", 3)
    assert (await rt.logs(res.container_id)).strip() == "kept"
    await rt.remove(res.container_id)


async def test_images(engine: Engine) -> None:
    rt = engine.runtime
    assert await rt.image_exists(engine.image) and not await rt.image_exists(MISSING_IMAGE)
    await rt.ensure_image(engine.image)
    with pytest.raises(ImageNotFound):
        await rt.ensure_image(MISSING_IMAGE)
    with pytest.raises(ImageNotFound):
        await rt.start(engine.spec(image=MISSING_IMAGE))
    with pytest.raises(RuntimeFailure, match="executable file not found"):
        await rt.start(engine.spec(["no-such-program"]))
    assert await rt.list(engine.labels) == []  # a container that cannot start is not left behind


async def test_exec_capped_and_stats(engine: Engine) -> None:
    rt = engine.runtime
    cid = await rt.start(engine.spec(memory_mb=64))
    assert await rt.exec_capped(cid, ["echo", "12345"], user=None, max_bytes=100, timeout_s=10.0) == (
        b"12345\n", False, 0,
    )
    out, over, code = await rt.exec_capped(
        cid, ["/bin/sh", "-c", "echo 1234567890; exit 2"], user=None, max_bytes=4, timeout_s=10.0
    )
    assert (out, over, code) == (b"1234", True, None)
    assert (await rt.inspect(cid)).running  # never kills
    stats = await rt.stats(cid)
    assert stats.container_id == cid and stats.pids >= 1 and stats.memory_limit_bytes == 64 * 1024 * 1024


async def test_an_engine_that_does_not_answer(engine: Engine, tmp_path: Any) -> None:
    if isinstance(engine.runtime, FakeRuntime):
        down: ContainerRuntime = engine.runtime
        engine.runtime.available = False
    else:
        down = DockerRuntime(f"unix://{tmp_path}/no-engine.sock")
        with pytest.raises(ServiceUnavailable):
            await down.open()
    try:
        with pytest.raises(ServiceUnavailable):
            await down.ping()
        with pytest.raises(ServiceUnavailable):
            await down.start(engine.spec())
        with pytest.raises(ServiceUnavailable):
            await down.list(engine.labels)
    finally:
        if isinstance(engine.runtime, FakeRuntime):
            engine.runtime.available = True  # for the fixture's clean-up
        else:
            await down.close()
