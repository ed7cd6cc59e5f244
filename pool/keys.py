"""Pool keys: what makes two warm containers interchangeable.

Two tasks may share a warm container when they agree on the image, the resource limits, the network
mode, the isolation scope (``scope="workflow"`` adds the workflow id) and how the container is
driven (``agent`` or ``exec``). The key's hash labels the containers and names the pool in the API.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

from flowcore.models import PoolOptions
from flowcore.pool_api import TaskRequest
from flowcore.settings import PoolSettings

Kind = Literal["agent", "exec"]


@dataclass(frozen=True)
class PoolKey:
    image: str
    kind: Kind
    network: str = "none"
    cpu: float | None = None
    memory_mb: int | None = None
    pids: int | None = None
    scope: Literal["workflow", "image"] = "image"
    workflow_id: str | None = None

    @property
    def hash(self) -> str:
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_label(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_label(cls, text: str) -> PoolKey:
        data: dict[str, Any] = json.loads(text)
        return cls(**data)

    def describe(self) -> dict[str, Any]:
        return {"hash": self.hash, **asdict(self)}


def key_for(request: TaskRequest, kind: Kind) -> PoolKey:
    scope = request.pool.scope if request.pool is not None else "image"
    return PoolKey(
        image=request.image,
        kind=kind,
        network=request.network,
        cpu=request.resources.cpu,
        memory_mb=request.resources.memory_mb,
        pids=request.resources.pids,
        scope=scope,
        workflow_id=request.workflow_id if scope == "workflow" else None,
    )


@dataclass
class PoolConfig:
    """The live sizing of one pool (from the first request's options, then /resize)."""

    min_size: int
    max_size: int
    warm_up: bool
    idle_timeout_s: float
    max_uses: int

    @classmethod
    def from_options(cls, options: PoolOptions | None, settings: PoolSettings) -> PoolConfig:
        if options is None:
            return cls(
                min_size=settings.default_min_size,
                max_size=max(settings.default_max_size, 1),
                warm_up=True,
                idle_timeout_s=settings.default_idle_timeout_s,
                max_uses=settings.default_max_uses,
            )
        return cls(
            min_size=options.min_size,
            max_size=options.max_size,
            warm_up=options.warm_up,
            idle_timeout_s=options.idle_timeout_s,
            max_uses=options.max_uses,
        )
