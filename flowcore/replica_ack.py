"""Acknowledge a write only once replicas hold it: a replication barrier with ``WAIT`` (ADR 021).

``WAIT n timeout`` blocks until ``n`` replicas acknowledged the replication offset of the *calling
connection's* last write. The writes of one submission go through whichever pooled connections the
stores took (transactions, scripts), so instead of pinning them all to one connection the barrier
makes a write of its own on one connection, after the submission's writes have been answered, and
waits for that one: replication is one ordered stream, so a replica that holds the barrier's write
holds every write the master applied before it, whichever connection made it.

The barrier is the same for every route (:mod:`gateway.replica_ack` runs it after a write request
succeeded), and it also confirms an idempotent retry: the earlier attempt's write, if it is on the
master, is before the barrier's.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from flowcore.errors import ServiceUnavailable
from flowcore.keyspace import Keyspace


class NotReplicated(ServiceUnavailable):
    """The master did not hear from enough replicas in time: the write may exist, it may be lost in a
    failover; retrying with the same idempotency key is safe."""

    code = "not_replicated"


@dataclass(frozen=True)
class ReplicaAck:
    """How many replicas must hold a write before it is acknowledged, and how long to wait for them."""

    min_replicas: int
    timeout_ms: int

    @property
    def enabled(self) -> bool:
        return self.min_replicas > 0

    async def confirm(self, redis: Redis, keys: Keyspace) -> int:
        """Wait until ``min_replicas`` replicas hold every write the master has; returns how many do.

        Raises :class:`NotReplicated` when too few acknowledged within ``timeout_ms``, and
        :class:`~flowcore.errors.ServiceUnavailable` when Redis cannot be reached.
        """
        if not self.enabled:
            return 0
        try:
            async with redis.pipeline(transaction=False) as pipe:  # one connection: the INCR, then its WAIT
                pipe.incr(keys.replication_barrier)
                pipe.execute_command("WAIT", self.min_replicas, self.timeout_ms)
                _, acked = await pipe.execute()
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
        replicas = int(acked)
        if replicas < self.min_replicas:
            raise NotReplicated(
                f"the write reached {replicas} of the {self.min_replicas} replicas required within "
                f"{self.timeout_ms} ms; it may or may not be kept: retry with the same idempotency key"
            )
        return replicas
