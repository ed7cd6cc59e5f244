"""Workflow state: user keys holding JSON values, with atomic operations.

One pure function, :func:`apply_state_ops`, decides what a list of operations does to the current
values; :class:`StateStore` applies it to Redis inside an optimistic transaction (WATCH/MULTI), so
the API, the engine's step commits and step code (through the pool's agent channel) share one
behaviour. Values are stored as JSON strings in the hash ``{p}:wf:{id}:state``.
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from flowcore import limits
from flowcore.errors import InvalidInput, NotFound
from flowcore.keyspace import Keyspace
from flowcore.pool_api import StateOp

DELETED = object()
MAX_KEY_LENGTH = 512
MAX_VALUE_BYTES = 1024 * 1024  # the default of FLOW_LIMITS__MAX_STATE_VALUE_KIB: state coordinates, it is no store


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(f"state key must be 1 to {MAX_KEY_LENGTH} characters", field="key")


def _check_size(key: str, value: Any, max_value_bytes: int) -> None:
    try:
        size = len(json.dumps(value, allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"state value of {key!r} is not JSON: {exc}", field="value") from None
    if size > max_value_bytes:
        raise InvalidInput(
            f"state value of {key!r} would be {size} bytes; the limit is {max_value_bytes} bytes per key "
            "(keep large data elsewhere and store a reference)",
            field="value",
        )


def apply_state_ops(
    current: dict[str, Any], ops: list[StateOp], max_value_bytes: int | None = None
) -> dict[str, Any]:
    """Return the keys the ops change: key -> new value, or :data:`DELETED`.

    ``current`` holds the decoded values of (at least) the keys the ops touch. Raises
    :class:`InvalidInput` when an op does not fit the value it meets (incrementing a string,
    appending to an object) or would make a value larger than ``max_value_bytes`` of JSON (an
    ``append`` that grows a list past it included), and nothing is applied.
    """
    if max_value_bytes is None:
        max_value_bytes = limits.current().max_state_value_bytes  # FLOW_LIMITS__MAX_STATE_VALUE_KIB
    view = dict(current)
    changes: dict[str, Any] = {}
    for op in ops:
        _check_key(op.key)
        if op.op == "set":
            new: Any = op.value
        elif op.op == "delete":
            new = DELETED
        elif op.op == "increment":
            by = 1 if op.value is None else op.value
            if isinstance(by, bool) or not isinstance(by, int | float):
                raise InvalidInput(f"increment of {op.key!r} needs a number, got {by!r}", field="value")
            old = view.get(op.key, 0)
            if isinstance(old, bool) or not isinstance(old, int | float):
                raise InvalidInput(f"state key {op.key!r} holds {type(old).__name__}, not a number", field="key")
            new = old + by
        elif op.op == "append":
            old = view.get(op.key, [])
            if not isinstance(old, list):
                raise InvalidInput(f"state key {op.key!r} holds {type(old).__name__}, not a list", field="key")
            new = [*old, op.value]
        else:  # pragma: no cover - Literal keeps this out
            raise InvalidInput(f"unknown state operation {op.op!r}", field="op")
        if new is DELETED:
            view.pop(op.key, None)
        else:
            _check_size(op.key, new, max_value_bytes)
            view[op.key] = new
        changes[op.key] = new
    return changes


def encode_changes(changes: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Split changes into HSET mapping and HDEL keys."""
    sets = {k: json.dumps(v) for k, v in changes.items() if v is not DELETED}
    dels = [k for k, v in changes.items() if v is DELETED]
    return sets, dels


def decode_state(raw: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key = k.decode() if isinstance(k, bytes) else str(k)
        out[key] = json.loads(v)
    return out


class StateStore:
    """Atomic state operations on one workflow's state hash."""

    def __init__(self, redis: Redis, keys: Keyspace) -> None:
        self._redis = redis
        self._keys = keys

    async def _require_workflow(self, wf_id: str) -> None:
        if not await self._redis.exists(self._keys.workflow(wf_id)):
            raise NotFound(f"workflow {wf_id!r} not found", field="workflow_id")

    async def get_all(self, wf_id: str) -> dict[str, Any]:
        await self._require_workflow(wf_id)
        return decode_state(await self._redis.hgetall(self._keys.state(wf_id)))

    async def get(self, wf_id: str, key: str) -> Any:
        _check_key(key)
        await self._require_workflow(wf_id)
        raw = await self._redis.hget(self._keys.state(wf_id), key)
        if raw is None:
            raise NotFound(f"state key {key!r} not found in workflow {wf_id!r}", field="key")
        return json.loads(raw)

    async def apply(self, wf_id: str, ops: list[StateOp]) -> dict[str, Any]:
        """Apply ops atomically; return the new values of the touched keys (None when deleted)."""
        await self._require_workflow(wf_id)
        key = self._keys.state(wf_id)
        names = sorted({op.key for op in ops})
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.hmget(key, names) if names else []
                    current = {n: json.loads(v) for n, v in zip(names, raw, strict=True) if v is not None}
                    changes = apply_state_ops(current, ops)
                    sets, dels = encode_changes(changes)
                    pipe.multi()
                    if sets:
                        pipe.hset(key, mapping=sets)
                    if dels:
                        pipe.hdel(key, *dels)
                    await pipe.execute()
                    return {k: (None if v is DELETED else v) for k, v in changes.items()}
                except WatchError:
                    continue

    async def set(self, wf_id: str, key: str, value: Any) -> Any:
        return (await self.apply(wf_id, [StateOp(op="set", key=key, value=value)]))[key]

    async def delete(self, wf_id: str, key: str) -> None:
        await self.get(wf_id, key)  # 404 when missing
        await self.apply(wf_id, [StateOp(op="delete", key=key)])

    async def increment(self, wf_id: str, key: str, by: float = 1) -> Any:
        return (await self.apply(wf_id, [StateOp(op="increment", key=key, value=by)]))[key]

    async def append(self, wf_id: str, key: str, value: Any) -> list[Any]:
        result = (await self.apply(wf_id, [StateOp(op="append", key=key, value=value)]))[key]
        assert isinstance(result, list)
        return result

    async def compare_and_set(
        self, wf_id: str, key: str, expected: Any, new: Any, *, expect_missing: bool = False
    ) -> bool:
        """Set ``key`` to ``new`` only if it holds ``expected`` (or is absent with ``expect_missing``)."""
        _check_key(key)
        await self._require_workflow(wf_id)
        hkey = self._keys.state(wf_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(hkey)
                    raw = await pipe.hget(hkey, key)
                    if expect_missing:
                        matches = raw is None
                    else:
                        matches = raw is not None and json.loads(raw) == expected
                    if not matches:
                        await pipe.reset()
                        return False
                    pipe.multi()
                    pipe.hset(hkey, key, json.dumps(new))
                    await pipe.execute()
                    return True
                except WatchError:
                    continue


__all__ = ["DELETED", "MAX_VALUE_BYTES", "StateStore", "apply_state_ops", "decode_state", "encode_changes"]
