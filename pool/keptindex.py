"""The index of kept containers across all pool services sharing one Redis (ADR 014, overall cap).

Each pool service describes its own kept containers (``keys.kept(service)``) and alone removes them:
a service never touches another's containers (they may live on another engine). The overall cap
``keep_max_total`` is enforced through a hand-off that survives a crash of any party:

- ``keys.kept_order`` (zset: container id -> kept at, s) and ``keys.kept_owner`` (hash: container id ->
  service) index every kept container. :func:`register` adds one and, in the same Lua call, moves the
  oldest past the cap out of the order into ``keys.kept_evict`` (hash: container id -> owner): an
  eviction request. Atomic, so two services keeping at once never both miss the cap or double-evict.
- The owner carries its requests out at once when it made them, else on its next sweep
  (``kept_sweep_s``); a request outlives the owner's restart (it is in Redis) and is done then.
- Each sweep writes the service's "seen" time (``keys.kept_seen``). A service not seen for
  ``kept_owner_gone_s`` is gone for good: whoever notices first forgets its records and requests
  (:func:`reap`, which re-checks the time atomically). Its containers stay on its engine; should it come
  back, it removes kept containers it has no record of (:meth:`pool.kept.Keeper.adopt`).

Plain Redis I/O; the choices (who is gone) are :func:`pool.cleanup.gone_owners`.
"""

from __future__ import annotations

from redis.asyncio import Redis

from flowcore.keyspace import Keyspace
from pool.redisio import aw as _aw

# KEYS: order, owner, evict. ARGV: container id, owner, kept at (s), cap, "1" = only if not indexed yet.
_REGISTER = """
if ARGV[5] == '1' then
  if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return {} end
  redis.call('ZADD', KEYS[1], 'NX', ARGV[3], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
local out = {}
if excess > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, excess - 1)) do
    local owner = redis.call('HGET', KEYS[2], id) or ''
    redis.call('ZREM', KEYS[1], id)
    redis.call('HSET', KEYS[3], id, owner)
    table.insert(out, id)
    table.insert(out, owner)
  end
end
return out
"""

# KEYS: order, owner, evict, seen, the gone service's records. ARGV: service, cutoff (s).
_REAP = """
local seen = redis.call('ZSCORE', KEYS[4], ARGV[1])
if seen and tonumber(seen) >= tonumber(ARGV[2]) then return -1 end
local n = 0
local owners = redis.call('HGETALL', KEYS[2])
for i = 1, #owners, 2 do
  if owners[i + 1] == ARGV[1] then
    redis.call('ZREM', KEYS[1], owners[i])
    redis.call('HDEL', KEYS[2], owners[i])
    redis.call('HDEL', KEYS[3], owners[i])
    n = n + 1
  end
end
local evict = redis.call('HGETALL', KEYS[3])
for i = 1, #evict, 2 do
  if evict[i + 1] == ARGV[1] then redis.call('HDEL', KEYS[3], evict[i]) end
end
redis.call('DEL', KEYS[5])
redis.call('ZREM', KEYS[4], ARGV[1])
return n
"""


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


async def register(
    redis: Redis, keys: Keyspace, container_id: str, owner: str, kept_at_s: float, cap: int, *,
    only_new: bool = False,
) -> list[tuple[str, str]]:
    """Index a kept container; the (container id, owner) pairs the overall cap now evicts, oldest first.

    ``only_new``: leave an indexed entry's time as it is, and do nothing for one already asked to go
    (a restart re-indexing its records)."""
    script = redis.register_script(_REGISTER)
    raw = await script(
        keys=[keys.kept_order, keys.kept_owner, keys.kept_evict],
        args=[container_id, owner, repr(kept_at_s), cap, "1" if only_new else "0"],
    )
    items = [_text(v) for v in raw]
    return list(zip(items[0::2], items[1::2], strict=True))


async def forget(redis: Redis, keys: Keyspace, container_id: str) -> None:
    """A kept container is gone (removed by its owner): out of the index and of the requests."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zrem(keys.kept_order, container_id)
        pipe.hdel(keys.kept_owner, container_id)
        pipe.hdel(keys.kept_evict, container_id)
        await pipe.execute()


async def evictions_for(redis: Redis, keys: Keyspace, owner: str) -> list[str]:
    """The containers ``owner`` was asked to remove (the overall cap)."""
    raw: dict[bytes | str, bytes | str] = await _aw(redis.hgetall(keys.kept_evict))
    return sorted(_text(k) for k, v in raw.items() if _text(v) == owner)


async def touch(redis: Redis, keys: Keyspace, service_id: str, now_s: float) -> None:
    await _aw(redis.zadd(keys.kept_seen, {service_id: now_s}))


async def owners_and_seen(redis: Redis, keys: Keyspace) -> tuple[dict[str, str], dict[str, float]]:
    """(container id -> owner, service -> last seen s), for :func:`pool.cleanup.gone_owners`."""
    owners_raw: dict[bytes | str, bytes | str] = await _aw(redis.hgetall(keys.kept_owner))
    seen_raw = await redis.zrange(keys.kept_seen, 0, -1, withscores=True)
    owners = {_text(k): _text(v) for k, v in owners_raw.items()}
    return owners, {_text(k): float(s) for k, s in seen_raw}


async def reap(redis: Redis, keys: Keyspace, service_id: str, cutoff_s: float) -> int | None:
    """Forget a gone service's kept records and requests; None when it was seen after ``cutoff_s`` after all."""
    script = redis.register_script(_REAP)
    raw = await script(
        keys=[keys.kept_order, keys.kept_owner, keys.kept_evict, keys.kept_seen, keys.kept(service_id)],
        args=[service_id, repr(cutoff_s)],
    )
    count = int(raw)
    return None if count < 0 else count
