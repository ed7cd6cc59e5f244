"""Kept containers (cleanup policy ``keep``, ADR 014): quarantine, list, logs, copy-out, expiry, caps.

A kept container leaves its warm pool for good: it is renamed ``flow-<service>-kept-<suffix>`` (so
that no restart adopts it into a pool, :func:`is_kept_name`), frozen with ``docker pause`` (no CPU;
its tmpfs, where the task's files are, stays), and described in Redis (``keys.kept(service)``:
container id -> :class:`~flowcore.pool_api.KeptContainer`). Docker labels cannot change after
creation, so the workflow, step, attempt, reason and expiry live in that record.

It goes when its time is up, when its workflow's record is gone (deleted: the sweep checks, so a
deletion while this service was down is caught later), when a cap is reached (oldest first:
:func:`pool.cleanup.over_caps`), or when removed through the API. Kept containers do not hold a slot of
``max_containers`` (they serve nothing and burn no CPU); their own caps bound them.

Copying files out runs ``tar`` inside the container as the task's uid (the Docker archive API does
not see tmpfs mounts), reads at most ``kept_copy_max_bytes`` of its output, and re-packs only regular
files and directories with safe names (:mod:`pool.keptfiles`): the host reads nothing from its own
filesystem and nothing unbounded from the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from flowcore.aiotasks import cancel_and_wait
from flowcore.errors import Conflict, FlowError, NotFound
from flowcore.keyspace import Keyspace
from flowcore.pool_api import ErrorKind, KeptContainer, TaskRequest, TaskResult
from flowcore.settings import PoolSettings
from pool import cleanup, keptfiles, keptindex
from pool.containers import PooledContainer, safe_name
from pool.keys import PoolKey
from pool.redisio import aw as _aw
from pool.runtime import LABEL_FLOW, LABEL_SERVICE, ContainerRuntime

log = logging.getLogger(__name__)
KEPT_MARK = "-kept-"
COPY_TIMEOUT_S = 30.0


def is_kept_name(name: str) -> bool:
    """A container renamed by :meth:`Keeper.keep` (never adopted into a warm pool)."""
    return KEPT_MARK in name


# Messages the pool writes itself ("exited with code 3", "timed out after 5 s"); others may quote what the
# step printed or raised (secrets included), so the record names only their kind.
_OWN_MESSAGES = frozenset({ErrorKind.EXIT_CODE, ErrorKind.TIMEOUT, ErrorKind.OOM})


def _failure(result: TaskResult) -> str:
    if result.error is None:
        return "failed"
    if result.error.kind in _OWN_MESSAGES:
        return result.error.message[:200]
    return result.error.kind.value


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")


class Keeper:
    def __init__(self, runtime: ContainerRuntime, redis: Redis, keys: Keyspace, settings: PoolSettings) -> None:
        self.runtime = runtime
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self._key = keys.kept(settings.service_id)
        self._locks: dict[str, asyncio.Lock] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self.removed = 0  # containers this keeper removed (expired, capped, deleted workflow, API)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._sweep_loop())

    async def stop(self) -> None:
        await cancel_and_wait(self._loop_task)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.kept_sweep_s)
            try:
                await self.sweep()
            except Exception:  # the loop must survive anything (Redis or the engine away)
                log.exception("kept containers: sweep failed")

    # ------------------------------------------------------------------ keep
    async def keep(self, container: PooledContainer, request: TaskRequest, result: TaskResult) -> KeptContainer:
        """Quarantine ``container`` (already out of its pool, or a one-shot agent container) for ``keep_for``."""
        if container.channel is not None:
            await container.channel.close()  # the agent stays, idle; nothing talks to it any more
        shutil.rmtree(container.host_dir, ignore_errors=True)  # its socket directory: no longer needed
        return await self._keep(container.container_id, container.name, container.key, request, result)

    async def keep_exited(
        self, container_id: str, name: str, key: PoolKey, request: TaskRequest, result: TaskResult
    ) -> KeptContainer:
        """Keep a one-shot container whose task was its main process (cold mode without python3).

        It has exited: its logs stay readable, its tmpfs (the task's files) is gone, so copy-out answers 409.
        """
        return await self._keep(container_id, name, key, request, result)

    async def _keep(
        self, container_id: str, old_name: str, key: PoolKey, request: TaskRequest, result: TaskResult
    ) -> KeptContainer:
        now_s = time.time()
        policy = request.cleanup or cleanup.DEFAULT_POLICY
        until_s = cleanup.keep_until_s(now_s, policy.keep_for_s, self.settings.keep_for_max_s)
        suffix = old_name.rsplit("-", 1)[-1]
        name = f"flow-{safe_name(self.settings.service_id)}{KEPT_MARK}{suffix}"
        if result.ok:
            reason = "kept on success (cleanup.on_success: keep)"
        else:
            reason = f"kept on failure (cleanup.on_failure: keep): {_failure(result)}"
        record = KeptContainer(
            container_id=container_id,
            name=name,
            service_id=self.settings.service_id,
            workflow_id=request.workflow_id,
            step_id=request.step_id,
            task_id=request.task_id,
            index=request.index,
            attempt=request.attempt,
            outcome="succeeded" if result.ok else "failed",
            reason=reason,
            error_kind=result.error.kind.value if result.error is not None else None,
            image=request.image,
            pool_key=key.hash,
            user=key.user,
            kept_at=_iso(now_s),
            expires_at=_iso(until_s),
            kept_at_s=now_s,
            expires_at_s=until_s,
        )
        await self.runtime.rename(container_id, name)
        record.status = await self._freeze(container_id)
        await _aw(self.redis.hset(self._key, record.container_id, record.model_dump_json()))
        log.info("kept container %s of %s/%s until %s", container_id[:12], request.workflow_id, request.step_id,
                 record.expires_at)
        await self._index(record)
        await self.enforce_caps()
        return record

    async def _index(self, record: KeptContainer, *, only_new: bool = False) -> None:
        """Into the index of all services' kept containers; the overall cap's evictions of ours now."""
        doomed = await keptindex.register(
            self.redis, self.keys, record.container_id, self.settings.service_id, record.kept_at_s,
            self.settings.keep_max_total, only_new=only_new,
        )
        for container_id, owner in doomed:
            log.info("the overall cap on kept containers evicts %s of %s", container_id[:12], owner or "?")
        await self.carry_out_evictions()

    async def carry_out_evictions(self) -> int:
        """Remove what the overall cap asked this service to remove (by any service, even before a restart)."""
        doomed = await keptindex.evictions_for(self.redis, self.keys, self.settings.service_id)
        for container_id in doomed:
            await self._remove(container_id, "the overall cap on kept containers was reached (oldest first)")
        return len(doomed)

    async def reap_gone_services(self, now_s: float) -> list[str]:
        """Forget the kept records of pool services not seen for ``kept_owner_gone_s`` (never their containers)."""
        owners, seen = await keptindex.owners_and_seen(self.redis, self.keys)
        gone = cleanup.gone_owners(
            owners.values(), seen, now_s=now_s, gone_after_s=self.settings.kept_owner_gone_s,
            self_id=self.settings.service_id,
        )
        reaped = []
        for service_id in gone:
            count = await keptindex.reap(self.redis, self.keys, service_id, now_s - self.settings.kept_owner_gone_s)
            if count is not None:
                log.warning("pool service %s was not seen for %.0f s: forgot its %d kept records", service_id,
                            self.settings.kept_owner_gone_s, count)
                reaped.append(service_id)
        return reaped

    async def _freeze(self, container_id: str) -> str:
        try:
            state = await self.runtime.inspect(container_id)
        except NotFound:
            return "gone"
        if not state.running:
            return state.status or "exited"
        if state.status != "paused":
            try:
                await self.runtime.pause(container_id)
            except FlowError as exc:  # it died meanwhile: kept stopped (logs stay readable)
                log.warning("cannot pause kept container %s: %s", container_id[:12], exc.message)
                return "exited"
        return "paused"

    # ------------------------------------------------------------------ read
    async def _all(self) -> list[KeptContainer]:
        raw: dict[bytes | str, bytes | str] = await _aw(self.redis.hgetall(self._key))
        records = []
        for value in raw.values():
            try:
                records.append(KeptContainer.model_validate_json(value))
            except ValueError:
                continue
        return records

    async def list(self, workflow_id: str | None = None) -> list[KeptContainer]:
        records = [r for r in await self._all() if workflow_id is None or r.workflow_id == workflow_id]
        return sorted(records, key=lambda r: r.kept_at_s)

    async def get(self, container_id: str) -> KeptContainer:
        """The record of a kept container, by its id or a unique prefix of 12+ characters."""
        raw = await _aw(self.redis.hget(self._key, container_id))
        if raw is not None:
            return KeptContainer.model_validate_json(raw)
        if len(container_id) >= 12:
            found = [r for r in await self._all() if r.container_id.startswith(container_id)]
            if len(found) == 1:
                return found[0]
        raise NotFound(f"no kept container {container_id!r} on this pool service", field="container_id")

    async def logs(self, container_id: str, tail: int | None = None) -> str:
        record = await self.get(container_id)
        return await self.runtime.logs(record.container_id, tail=tail)

    async def copy(self, container_id: str, path: str | None) -> keptfiles.Packed:
        """A tar of ``path`` in the kept container (see the module docstring); ValueError: a bad path."""
        target = cleanup.copy_path(path)
        record = await self.get(container_id)
        if record.status not in ("paused", "running"):
            raise Conflict(
                f"kept container {container_id[:12]} had stopped ({record.status}): its task files (tmpfs) are gone;"
                " its logs are still readable",
                field="container_id",
            )
        cap = self.settings.kept_copy_max_bytes
        async with self._locks.setdefault(container_id, asyncio.Lock()):
            paused = record.status == "paused"
            if paused:
                await self.runtime.unpause(container_id)
            try:
                parent, leaf = target.rsplit("/", 1) if target != "/" else ("/", ".")
                argv = ["tar", "-c", "-f", "-", "-C", parent or "/", "--", leaf]
                data, over, code = await self.runtime.exec_capped(
                    container_id, argv, user=record.user, max_bytes=cap, timeout_s=COPY_TIMEOUT_S
                )
            finally:
                if paused:
                    with contextlib.suppress(FlowError):
                        await self.runtime.pause(container_id)
        packed = keptfiles.repack(data, truncated=over, max_bytes=cap)
        if code not in (0, None) and not (packed.files or packed.dirs or packed.skipped):
            raise NotFound(f"nothing readable at {target} in kept container {container_id[:12]}", field="path")
        return packed

    # ------------------------------------------------------------------ removal
    async def remove(self, container_id: str, why: str = "removed through the API") -> None:
        await self.get(container_id)  # 404 when unknown
        await self._remove(container_id, why)

    async def _remove(self, container_id: str, why: str) -> None:
        log.info("removing kept container %s: %s", container_id[:12], why)
        try:
            await self.runtime.remove(container_id)
        except FlowError as exc:  # the engine is away: the record stays, the next sweep tries again
            log.warning("cannot remove kept container %s: %s", container_id[:12], exc.message)
            return
        await _aw(self.redis.hdel(self._key, container_id))
        await keptindex.forget(self.redis, self.keys, container_id)
        self._locks.pop(container_id, None)
        self.removed += 1

    async def remove_workflow(self, workflow_id: str) -> int:
        doomed = [r.container_id for r in await self._all() if r.workflow_id == workflow_id]
        for container_id in doomed:
            await self._remove(container_id, f"workflow {workflow_id} removed")
        return len(doomed)

    async def enforce_caps(self) -> int:
        records = await self._all()
        infos = [cleanup.KeptInfo(r.container_id, r.pool_key, r.kept_at_s) for r in records]
        doomed = cleanup.over_caps(
            infos, keep_max=self.settings.keep_max, keep_max_per_pool=self.settings.keep_max_per_pool
        )
        for container_id in doomed:
            await self._remove(container_id, "a cap on kept containers was reached (oldest first)")
        return len(doomed)

    async def sweep(self) -> int:
        """Remove the expired, those of deleted workflows, and records whose container vanished."""
        now_s = time.time()
        await keptindex.touch(self.redis, self.keys, self.settings.service_id, now_s)
        evicted = await self.carry_out_evictions()
        await self.reap_gone_services(now_s)
        records = await self._all()
        doomed = set(cleanup.expired(((r.container_id, r.expires_at_s) for r in records), now_s))
        for container_id in doomed:
            await self._remove(container_id, "its keep_for is over")
        count = len(doomed) + evicted
        for record in records:
            if record.container_id in doomed:
                continue
            try:
                exists = await _aw(self.redis.exists(self.keys.workflow(record.workflow_id)))
            except RedisError:
                break
            if not exists:
                await self._remove(record.container_id, f"workflow {record.workflow_id} is gone")
                count += 1
                continue
            try:
                await self.runtime.inspect(record.container_id)
            except NotFound:  # removed outside Agentainer Flow: forget it
                await _aw(self.redis.hdel(self._key, record.container_id))
                await keptindex.forget(self.redis, self.keys, record.container_id)
        return count

    # ------------------------------------------------------------------ restart
    async def adopt(self) -> set[str]:
        """After a restart: the kept containers stay kept (with their expiry); the rest is tidied.

        A container renamed as kept without a record cannot be described (or expired): it is removed.
        Returns the ids still kept, which no warm pool may adopt.
        """
        await keptindex.touch(self.redis, self.keys, self.settings.service_id, time.time())  # before anyone reaps us
        records = {r.container_id: r for r in await self._all()}
        states = await self.runtime.list({LABEL_FLOW: "1", LABEL_SERVICE: self.settings.service_id})
        kept: set[str] = set()
        for state in states:
            if state.container_id in records:
                kept.add(state.container_id)
                if state.running and state.status != "paused":
                    with contextlib.suppress(FlowError):
                        await self.runtime.pause(state.container_id)
            elif is_kept_name(state.name):
                await self.runtime.remove(state.container_id)
        for container_id in set(records) - kept:
            await _aw(self.redis.hdel(self._key, container_id))
            await keptindex.forget(self.redis, self.keys, container_id)
        for container_id in kept:  # records of an older version, or whose indexing a crash cut short
            await self._index(records[container_id], only_new=True)
        if kept:
            log.info("%d kept containers stay kept after the restart", len(kept))
        await self.sweep()
        return kept
