"""Step-level concurrency keys in Redis: taking, releasing and handing on slots (ADR 019).

A key's slots are the members of ``{p}:sk:active:{key}`` (tasks ``{wf}|{step}|{index}``), each with
the token of the attempt that took it in ``{p}:sk:tok:{key}`` (``""``: reserved by a pump for a task
not yet claimed again). Tasks that found the key full wait in ``{p}:sk:q:{key}``, in arrival order,
parked (:func:`flowcore.stepkey_engine.park`: no job, no worker). Every change reads what it needs
under ``WATCH`` and commits in one MULTI, so two workers taking the last slot at the same instant
cannot both have it: one EXEC fails and decides again (:func:`flowcore.stepkeys.decide_acquire`).

*Release.* The worker that ran the task releases its slot after committing the result, whatever the
result (success, failure, a retry, a cancel or a timeout all end the attempt), and pumps the key:
slots freed are reserved for the heads of its queue, which are unparked (dispatched again). A
release names the attempt's token, so it happens once, and a late one from a worker that lost its
task to a takeover frees nothing. *The sweep* (:meth:`StepKeys.sweep_once`, every worker, each
second) looks at the keys in ``{p}:sk:keys`` whose time has come: holds older than the grace whose
attempt is over (the worker was killed: the task finished, was retried or was taken over under
another token) are released, reservations whose unpark was interrupted are redone, queues pumped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError, WatchError

from flowcore.errors import NotFound, ServiceUnavailable
from flowcore.keyspace import task_field
from flowcore.plan import EngineEnv
from flowcore.records import TaskRecord
from flowcore.stepkey_engine import still_waiting, unpark
from flowcore.stepkeys import (
    Acquire,
    KeyState,
    SlotNeeded,
    Verdict,
    decide_acquire,
    hold_is_stale,
    parse_holder,
    room,
)
from flowcore.store import WorkflowStore

log = logging.getLogger(__name__)

MAX_RETRIES = 100
BATCH = 100  # keys per sweep pass, holders per key visit, waiting tasks per pump
GRACE_S = 5.0  # how long the sweep leaves a hold to the worker that took it before checking its task
COUNTERS = ("admitted", "queued", "released", "swept")


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Held:
    """A slot a worker holds for the attempt it runs."""

    key: str
    holder: str
    token: str


class StepKeys:
    def __init__(self, store: WorkflowStore) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys

    # ---- taking a slot -------------------------------------------------------------------------
    async def acquire(self, need: SlotNeeded, token: str, *, now: float | None = None) -> Acquire:
        """Take a slot of ``need.key`` for the attempt ``token`` of ``need.holder``, or join the key's queue."""
        try:
            return await self._acquire(need, token, time.time() if now is None else now)
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc

    async def _acquire(self, need: SlotNeeded, token: str, now: float) -> Acquire:
        k, key, holder = self.keys, need.key, need.holder
        now_ms = int(now * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            for _ in range(MAX_RETRIES):
                try:
                    await pipe.watch(k.sk_active(key), k.sk_queue(key))
                    holders = frozenset(_s(m) for m in await pipe.zrange(k.sk_active(key), 0, -1))
                    queued = int(await pipe.zcard(k.sk_queue(key)))
                    rank = await pipe.zrank(k.sk_queue(key), holder)
                    state = KeyState(holders, queued, None if rank is None else int(rank))
                    decision = decide_acquire(key, need.limit, holder, state)
                    seq = None
                    if decision.verdict == Verdict.WAIT and rank is None:
                        seq = int(await pipe.incr(k.sk_seq))
                    pipe.multi()
                    pipe.hset(k.sk_limits, key, need.limit)
                    pipe.zadd(k.sk_keys, {key: now_ms + int(GRACE_S * 1000)})
                    if decision.verdict == Verdict.ADMIT:
                        pipe.zadd(k.sk_active(key), {holder: now_ms})
                        pipe.hset(k.sk_tokens(key), holder, token)
                        pipe.zrem(k.sk_queue(key), holder)
                        if holder not in holders:
                            pipe.hincrby(k.sk_counts, "admitted", 1)
                    elif seq is not None:
                        pipe.zadd(k.sk_queue(key), {holder: seq}, nx=True)
                        pipe.hincrby(k.sk_counts, "queued", 1)
                    await pipe.execute()
                    return decision
                except WatchError:
                    continue
        raise ServiceUnavailable(f"concurrency key {key!r} is too contended")

    # ---- letting go ----------------------------------------------------------------------------
    async def release(self, held: Held, *, counter: str = "released") -> bool:
        """The attempt ``held.token`` ended: free its slot (once) and hand it on. False: not held (any more)."""
        try:
            freed = await self._drop(held.key, held.holder, held.token, counter)
            await self.pump(held.key)
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
        return freed

    async def _drop(self, key: str, holder: str, token: str, counter: str) -> bool:
        """Remove ``holder``'s slot if the token that holds it is still ``token``."""
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            for _ in range(MAX_RETRIES):
                try:
                    await pipe.watch(k.sk_tokens(key))
                    current = await pipe.hget(k.sk_tokens(key), holder)
                    if current is None or _s(current) != token:
                        await pipe.unwatch()
                        return False
                    pipe.multi()
                    pipe.zrem(k.sk_active(key), holder)
                    pipe.hdel(k.sk_tokens(key), holder)
                    if counter:
                        pipe.hincrby(k.sk_counts, counter, 1)
                    await pipe.execute()
                    return True
                except WatchError:
                    continue
        return False

    async def pump(self, key: str, *, now: float | None = None) -> list[str]:
        """Reserve the free slots of ``key`` for the heads of its queue and unpark them; returns those."""
        handed: list[str] = []
        for _ in range(BATCH):
            holder = await self._reserve_head(key, time.time() if now is None else now)
            if holder is None:
                break
            if await self._unpark(holder):
                handed.append(holder)
            else:  # cancelled, finished or deleted while it waited: its reservation goes
                await self._drop(key, holder, "", "")
        if handed:
            log.debug("concurrency key %s handed to %s", key, handed)
        return handed

    async def _reserve_head(self, key: str, now: float) -> str | None:
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            for _ in range(MAX_RETRIES):
                try:
                    await pipe.watch(k.sk_active(key), k.sk_queue(key))
                    head = await pipe.zrange(k.sk_queue(key), 0, 0)
                    if not head:
                        await pipe.unwatch()
                        return None
                    limit = int(await pipe.hget(k.sk_limits, key) or 1)
                    if room(limit, int(await pipe.zcard(k.sk_active(key)))) == 0:
                        await pipe.unwatch()
                        return None
                    holder = _s(head[0])
                    pipe.multi()
                    pipe.zrem(k.sk_queue(key), holder)
                    pipe.zadd(k.sk_active(key), {holder: int(now * 1000)})
                    pipe.hset(k.sk_tokens(key), holder, "")
                    pipe.hincrby(k.sk_counts, "admitted", 1)
                    await pipe.execute()
                    return holder
                except WatchError:
                    continue
        return None

    async def _unpark(self, holder: str) -> bool:
        """Dispatch a waiting task again; False when it no longer waits for anything (gone)."""
        wf_id, step_id, index = parse_holder(holder)
        field = task_field(step_id, index)
        try:
            plan = await self.store.transact(
                wf_id, lambda snap: unpark(snap, EngineEnv(), step_id, index), tasks=(field,), items=(field,)
            )
        except NotFound:
            return False
        return bool(plan.dispatch)

    # ---- the sweep -----------------------------------------------------------------------------
    async def sweep_once(self, *, now: float | None = None, grace_s: float = GRACE_S) -> dict[str, int]:
        """Release holds whose attempt is over, redo interrupted hand-ons, pump; returns what it did."""
        k = self.keys
        at = time.time() if now is None else now
        done = {"released": 0, "unparked": 0, "pumped": 0}
        try:
            for raw in await self.redis.zrangebyscore(k.sk_keys, 0, int(at * 1000), start=0, num=BATCH):
                key = _s(raw)
                released, unparked = await self._check_holds(key, int((at - grace_s) * 1000))
                done["released"] += released
                done["unparked"] += unparked
                done["pumped"] += len(await self.pump(key, now=now))
                await self._revisit(key, at, grace_s)
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
        return done

    async def _check_holds(self, key: str, before_ms: int) -> tuple[int, int]:
        k = self.keys
        released = unparked = 0
        members = await self.redis.zrangebyscore(k.sk_active(key), 0, before_ms, start=0, num=BATCH)
        for raw in members:
            holder = _s(raw)
            token_raw = await self.redis.hget(k.sk_tokens(key), holder)
            token = "" if token_raw is None else _s(token_raw)
            wf_id, step_id, index = parse_holder(holder)
            task_raw = await self.redis.hget(k.tasks(wf_id), task_field(step_id, index))
            task = TaskRecord.model_validate_json(task_raw) if task_raw is not None else None
            status = task.status.value if task is not None else None
            if token_raw is None or hold_is_stale(token, status, task.token if task is not None else None):
                if await self._drop_any(key, holder, token_raw is not None, token):
                    released += 1
            elif token == "" and still_waiting(task):
                unparked += int(await self._unpark(holder))  # the pump that reserved it died first
        return released, unparked

    async def _drop_any(self, key: str, holder: str, has_token: bool, token: str) -> bool:
        if has_token:
            return await self._drop(key, holder, token, "swept")
        removed = int(await self.redis.zrem(self.keys.sk_active(key), holder))  # a slot without a token
        return removed > 0

    async def _revisit(self, key: str, now: float, grace_s: float) -> None:
        """Look at ``key`` again after the grace while it has holders or waiters; else forget it."""
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            for _ in range(MAX_RETRIES):
                try:
                    await pipe.watch(k.sk_active(key), k.sk_queue(key))
                    busy = int(await pipe.zcard(k.sk_active(key))) + int(await pipe.zcard(k.sk_queue(key)))
                    pipe.multi()
                    if busy:
                        pipe.zadd(k.sk_keys, {key: int((now + grace_s) * 1000)})
                    else:
                        pipe.zrem(k.sk_keys, key)
                        pipe.hdel(k.sk_limits, key)
                    await pipe.execute()
                    return
                except WatchError:
                    continue

    # ---- what the API shows --------------------------------------------------------------------
    async def counts(self) -> dict[str, int]:
        return step_key_counts(await self.redis.hgetall(self.keys.sk_counts))


def step_key_counts(raw: dict[Any, Any]) -> dict[str, int]:
    """``{p}:sk:counts`` as counts by outcome: admitted (took a slot), queued (waited for one),
    released (by the worker that ran the task), swept (by the sweep, after a worker died)."""
    out = dict.fromkeys(COUNTERS, 0)
    out.update({_s(a): int(b) for a, b in raw.items()})
    return out
