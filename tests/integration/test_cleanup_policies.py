"""Cleanup policies against the real engine and Redis (ADR 014): return, remove, keep; quarantine,
expiry, caps, restart, workflow deletion, copy-out with its attacks, bad inputs."""

# ruff: noqa: F811  (pytest fixtures imported from tests.pool_fixtures are parameters here)

from __future__ import annotations

import io
import json
import tarfile
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis as redis_sync

from flowcore.keyspace import Keyspace
from flowcore.settings import PoolSettings
from pool.app import create_app
from pool.errors import CopyTooLarge
from pool.services import PoolServices
from tests.pool_fixtures import (  # noqa: F401
    docker_cli,
    eventually,
    keep_settings,
    make_task,
    nopython_image,
    pool_headers,
    pool_settings,
    running_pool,
    service_containers,
    work_dir,
)

KEYS = Keyspace("flow")


def _workflow(redis_url: str, wf_id: str | None = None) -> str:
    """A workflow record for the pool's sweep to find (it removes kept containers of deleted ones)."""
    wf_id = wf_id or f"wf-{uuid.uuid4().hex[:8]}"
    with redis_sync.Redis.from_url(redis_url) as client:
        client.hset(KEYS.workflow(wf_id), "status", "running")
    return wf_id


def _drop_workflow(redis_url: str, wf_id: str) -> None:
    with redis_sync.Redis.from_url(redis_url) as client:
        client.delete(KEYS.workflow(wf_id))


def _inspect(docker_host: str, container_id: str) -> dict[str, Any] | None:
    out = docker_cli(docker_host, "inspect", container_id, check=False)
    data = json.loads(out) if out.strip() else []
    return data[0] if data else None


def _members(data: bytes) -> dict[str, bytes | None]:
    """A tar's member names -> the content of regular files (None for the rest)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        found: dict[str, bytes | None] = {}
        for member in archive.getmembers():
            handle = archive.extractfile(member) if member.isreg() else None
            found[member.name] = handle.read() if handle is not None else None
        return found


def _gone(docker_host: str, container_id: str | None) -> Any:
    return lambda: _inspect(docker_host, container_id or "") is None



@pytest.fixture
async def pool(keep_settings: PoolSettings) -> AsyncIterator[PoolServices]:
    async with running_pool(keep_settings) as services:
        yield services


def _task(image: str, wf: str, command: str, **cleanup: Any) -> Any:
    fields: dict[str, Any] = {"workflow_id": wf, "command": command}
    if cleanup:
        fields["cleanup"] = cleanup
    return make_task(image, **fields)


async def test_defaults_success_returns_failure_removed(
    pool: PoolServices, base_image: str, docker_host: str, redis_url: str
) -> None:
    wf = _workflow(redis_url)
    first = await pool.dispatcher.execute(_task(base_image, wf, "echo 1"))
    second = await pool.dispatcher.execute(_task(base_image, wf, "echo 2"))
    assert first.ok and second.ok and second.container_id == first.container_id  # returned, reused
    failed = await pool.dispatcher.execute(_task(base_image, wf, "exit 3"))
    assert not failed.ok and failed.container_id == first.container_id
    assert failed.container_id is not None
    await eventually(lambda: _inspect(docker_host, failed.container_id or "") is None, what="removal")
    after = await pool.dispatcher.execute(_task(base_image, wf, "echo 3"))
    assert after.ok and after.container_id != failed.container_id
    assert await pool.keeper.list() == []


async def test_failure_kept_quarantined_then_expired(
    pool: PoolServices, base_image: str, docker_host: str, redis_url: str
) -> None:
    wf = _workflow(redis_url)
    failed = await pool.dispatcher.execute(
        _task(base_image, wf, "echo evidence > $HOME/note.txt; echo oops >&2; exit 4", on_failure="keep", keep_for="2s")
    )
    assert not failed.ok and failed.container_id
    kept = await pool.keeper.list(wf)
    assert [k.container_id for k in kept] == [failed.container_id]
    record = kept[0]
    assert record.outcome == "failed" and record.step_id == "step" and record.error_kind == "exit_code"
    assert "exited with code 4" in record.reason and record.expires_at_s > record.kept_at_s
    state = _inspect(docker_host, failed.container_id)
    assert state is not None and state["State"]["Paused"] is True and "-kept-" in state["Name"]
    # Quarantined: the next task of the same pool gets another container.
    again = await pool.dispatcher.execute(_task(base_image, wf, "echo 1", on_failure="keep"))
    assert again.ok and again.container_id != failed.container_id
    assert failed.container_id not in pool.manager.get(again.pool_key or "").containers
    # Its files are still there (the agent kept the task's directory): copied out through tar.
    packed = await pool.keeper.copy(failed.container_id, None)
    members = _members(packed.data)
    note = [n for n in members if n.endswith("work/note.txt")]
    assert note, members
    assert members[note[0]] == b"evidence\n"
    # Expired: the sweep removes it.
    await eventually(lambda: _inspect(docker_host, failed.container_id or "") is None, what="expiry")

    async def forgotten() -> bool:
        return await pool.keeper.list(wf) == []

    await eventually(forgotten, what="its record to go")


async def test_success_kept_and_failure_removed_variants(
    pool: PoolServices, base_image: str, nopython_image: str, docker_host: str, redis_url: str
) -> None:
    wf = _workflow(redis_url)
    for image in (base_image, nopython_image):  # the agent and exec dispatch modes
        ok = await pool.dispatcher.execute(_task(image, wf, "echo 1 > /tmp/mark; echo 5", on_success="keep"))
        assert ok.ok and ok.container_id
        record = await pool.keeper.get(ok.container_id)
        assert record.outcome == "succeeded"
        packed = await pool.keeper.copy(ok.container_id, "/tmp")
        assert any(n.endswith("mark") for n in _members(packed.data))
        nxt = await pool.dispatcher.execute(_task(image, wf, "echo 6"))
        assert nxt.ok and nxt.container_id != ok.container_id
        gone = await pool.dispatcher.execute(_task(image, wf, "exit 1", on_success="keep", on_failure="remove"))
        assert not gone.ok and gone.container_id
        await eventually(_gone(docker_host, gone.container_id), what="removal")
        removed = await pool.dispatcher.execute(_task(image, wf, "echo 7", on_success="remove"))
        assert removed.ok
        await eventually(_gone(docker_host, removed.container_id), what="removal")
    assert len(await pool.keeper.list(wf)) == 2


async def test_caps_remove_the_oldest_first(
    keep_settings: PoolSettings, base_image: str, docker_host: str, redis_url: str
) -> None:
    keep_settings.keep_max_per_pool = 2
    keep_settings.keep_max = 3
    services = await PoolServices.open(keep_settings)
    try:
        wf = _workflow(redis_url)
        ids: list[str] = []
        for n in range(3):  # one pool key: the per-pool cap of 2 removes the oldest
            result = await services.dispatcher.execute(_task(base_image, wf, f"exit {n + 1}", on_failure="keep"))
            ids.append(result.container_id or "")
        kept = [k.container_id for k in await services.keeper.list()]
        assert kept == ids[1:]
        assert _inspect(docker_host, ids[0]) is None
        other: list[str] = []
        for _ in range(2):  # another pool key (other limits): the service cap of 3 removes the oldest overall
            result = await services.dispatcher.execute(
                make_task(base_image, workflow_id=wf, command="exit 9", resources={"memory_mb": 96},
                          cleanup={"on_failure": "keep"})
            )
            other.append(result.container_id or "")
        kept = [k.container_id for k in await services.keeper.list()]
        assert kept == [ids[2], *other]
        assert _inspect(docker_host, ids[1]) is None
    finally:
        await services.close()


async def test_restart_keeps_kept_containers_kept(
    keep_settings: PoolSettings, base_image: str, docker_host: str, redis_url: str
) -> None:
    keep_settings.keep_containers_on_shutdown = True
    wf = _workflow(redis_url)
    services = await PoolServices.open(keep_settings)
    try:
        long = await services.dispatcher.execute(_task(base_image, wf, "exit 1", on_failure="keep", keep_for="1h"))
        short = await services.dispatcher.execute(_task(base_image, wf, "exit 2", on_failure="keep", keep_for="3s"))
        warm = await services.dispatcher.execute(_task(base_image, wf, "echo 1"))
        assert warm.ok
    finally:
        await services.close()
    assert long.container_id and short.container_id
    services = await PoolServices.open(keep_settings)
    try:
        kept = {k.container_id: k for k in await services.keeper.list()}
        assert set(kept) == {long.container_id, short.container_id}
        pooled = {cid for p in services.manager.pools.values() for cid in p.containers}
        assert warm.container_id in pooled  # the idle one was adopted into its pool...
        assert not pooled & set(kept)  # ...the kept ones were not
        state = _inspect(docker_host, long.container_id)
        assert state is not None and state["State"]["Paused"] is True
        again = await services.dispatcher.execute(_task(base_image, wf, "echo 2"))
        assert again.container_id not in kept
        # The expiry survives the restart: the short one goes, the long one stays.
        await eventually(lambda: _inspect(docker_host, short.container_id or "") is None, what="expiry")

        async def only_long() -> bool:
            return [k.container_id for k in await services.keeper.list()] == [long.container_id]

        await eventually(only_long, what="the expired record to go")
    finally:
        await services.close()
    leftover = service_containers(docker_host, keep_settings.service_id)
    assert long.container_id[:12] in leftover  # a kept container outlives the service that kept it


async def test_workflow_deleted_removes_its_kept_containers(
    pool: PoolServices, base_image: str, docker_host: str, redis_url: str
) -> None:
    gone_wf = _workflow(redis_url)
    other_wf = _workflow(redis_url)
    a = await pool.dispatcher.execute(_task(base_image, gone_wf, "exit 1", on_failure="keep"))
    b = await pool.dispatcher.execute(_task(base_image, other_wf, "exit 1", on_failure="keep"))
    _drop_workflow(redis_url, gone_wf)  # deleted (the pool may have been down at that moment)
    await eventually(lambda: _inspect(docker_host, a.container_id or "") is None, what="sweep of deleted workflow")

    async def only_b() -> bool:
        return [k.container_id for k in await pool.keeper.list()] == [b.container_id]

    await eventually(only_b, what="the record of the deleted workflow's container to go")


async def test_copy_attacks_symlinks_and_size(
    keep_settings: PoolSettings, base_image: str, docker_host: str, redis_url: str, tmp_path: Any
) -> None:
    keep_settings.kept_copy_max_bytes = 1024 * 1024
    secret = tmp_path / "host-secret.txt"
    secret.write_text("HOST-SECRET-7f3a")
    services = await PoolServices.open(keep_settings)
    try:
        wf = _workflow(redis_url)
        hostile = (
            f"ln -s {secret} $HOME/leak; ln -s / $HOME/root; ln -s /etc/passwd $HOME/passwd; "
            "echo fine > $HOME/ok.txt; exit 1"
        )
        result = await services.dispatcher.execute(_task(base_image, wf, hostile, on_failure="keep"))
        cid = result.container_id or ""
        packed = await services.keeper.copy(cid, None)
        with tarfile.open(fileobj=io.BytesIO(packed.data)) as archive:
            members = archive.getmembers()
        assert all(m.isreg() or m.isdir() for m in members)
        assert any(m.name.endswith("work/ok.txt") for m in members)
        assert not any(m.name.endswith(("leak", "root", "passwd")) for m in members)
        assert len(packed.skipped) == 3
        assert b"HOST-SECRET" not in packed.data and b"root:x:0" not in packed.data
        # The path itself a link: nothing behind it is read.
        work = next(m.name for m in members if m.name.endswith("/work"))
        linked = await services.keeper.copy(cid, f"/flow/{work}/leak")  # names start at the leaf asked for
        assert b"HOST-SECRET" not in linked.data and linked.files == 0
        # Too large: a hostile step leaves a file past the cap.
        big = await services.dispatcher.execute(
            _task(base_image, wf, "head -c 5000000 /dev/urandom > $HOME/big; exit 1", on_failure="keep")
        )
        with pytest.raises(CopyTooLarge):
            await services.keeper.copy(big.container_id or "", None)
        # Bad paths are refused before anything runs.
        for bad in ("../etc", "/flow/task/../../etc", "a\x00b", "x" * 2000):
            with pytest.raises(ValueError):
                await services.keeper.copy(cid, bad)
    finally:
        await services.close()


@pytest.fixture
async def client(keep_settings: PoolSettings) -> AsyncIterator[tuple[httpx.AsyncClient, PoolServices]]:
    app = create_app(keep_settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://pool", headers=pool_headers(keep_settings)) as c,
    ):
        yield c, app.state.services


async def test_kept_api_and_bad_inputs(
    client: tuple[httpx.AsyncClient, PoolServices], base_image: str, redis_url: str
) -> None:
    http, _services = client
    wf = _workflow(redis_url)
    base = {"task_id": f"t-{uuid.uuid4().hex[:8]}", "workflow_id": wf, "step_id": "s", "image": base_image,
            "command": "echo hi; exit 2"}
    for cleanup, field in (
        ({"on_failure": "keep", "keep_for": "-5s"}, "keep_for"),
        ({"on_failure": "keep", "keep_for": "30d"}, "keep_for"),
        ({"on_failure": "return"}, "on_failure"),
        ({"on_success": "explode"}, "on_success"),
        ({"on_failure": "keep", "extra": 1}, "extra"),
    ):
        answer = await http.post("/v1/tasks", json={**base, "cleanup": cleanup})
        assert answer.status_code == 422, (cleanup, answer.text)
        assert field in answer.text
    assert (await http.get("/v1/kept")).json() == {"kept": []}  # the bad asks changed nothing
    answer = await http.post("/v1/tasks", json={**base, "cleanup": {"on_failure": "keep"}})
    assert answer.status_code == 200 and not answer.json()["ok"]
    cid = answer.json()["container_id"]
    listed = (await http.get("/v1/kept", params={"workflow_id": wf})).json()["kept"]
    assert [k["container_id"] for k in listed] == [cid]
    assert (await http.get(f"/v1/kept/{cid[:12]}")).json()["container_id"] == cid
    files = await http.get(f"/v1/kept/{cid}/files", params={"path": "/flow/task"})
    assert files.status_code == 200 and files.headers["content-type"] == "application/x-tar"
    logs = await http.get(f"/v1/kept/{cid}/logs")
    assert logs.status_code == 200
    for path, status in (
        (f"/v1/kept/{cid}/files?path=../../etc", 422),
        (f"/v1/kept/{cid}/files?path=/flow/task/../../../etc/shadow", 422),
        (f"/v1/kept/{cid}/logs?tail=abc", 422),
        ("/v1/kept/NOT-AN-ID", 422),
        ("/v1/kept/" + "0" * 64, 404),
        ("/v1/kept/" + "0" * 64 + "/files", 404),
        ("/v1/kept?workflow_id=../x", 422),
    ):
        answer = await http.get(path)
        assert answer.status_code == status, (path, answer.text)
    assert (await http.delete("/v1/kept/" + "0" * 64)).status_code == 404
    assert (await http.delete("/v1/kept")).status_code == 422
    assert (await http.delete(f"/v1/kept/{cid}")).status_code == 204
    assert (await http.get(f"/v1/kept/{cid}")).status_code == 404
    answer = await http.post("/v1/tasks", json={**base, "task_id": "t2", "cleanup": {"on_failure": "keep"}})
    assert (await http.delete("/v1/kept", params={"workflow_id": wf})).json() == {"removed": 1}


async def test_a_kept_container_outlives_a_plain_shutdown(
    keep_settings: PoolSettings, base_image: str, docker_host: str, redis_url: str
) -> None:
    assert keep_settings.keep_containers_on_shutdown is False  # idle pooled containers go; kept ones stay
    wf = _workflow(redis_url)
    services = await PoolServices.open(keep_settings)
    try:
        kept = await services.dispatcher.execute(_task(base_image, wf, "exit 1", on_failure="keep"))
        warm = await services.dispatcher.execute(_task(base_image, wf, "echo 1"))
    finally:
        await services.close()
    assert _inspect(docker_host, warm.container_id or "") is None
    state = _inspect(docker_host, kept.container_id or "")
    assert state is not None and state["State"]["Paused"] is True
    services = await PoolServices.open(keep_settings)
    try:
        assert [k.container_id for k in await services.keeper.list(wf)] == [kept.container_id]
    finally:
        await services.close()
