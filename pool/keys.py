"""Pool keys: what makes two warm containers interchangeable.

Two tasks may share a warm container when they agree on the image, the resource limits, the network
mode, the task user and root filesystem, the isolation scope (``scope="workflow"``, the default, adds
the workflow id) and how the container is driven (``agent`` or ``exec``). The key's hash labels the
containers and names the pool in the API. :func:`key_for` fills in the operator's defaults and
enforces the operator's policy (:mod:`flowcore.policy`), so a key is always fully resolved.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Literal

from flowcore.models import PoolOptions
from flowcore.policy import TaskPolicy, resolve
from flowcore.pool_api import TaskRequest
from flowcore.settings import PoolSettings, TaskPolicySection

Kind = Literal["agent", "exec"]


@dataclass(frozen=True)
class PoolKey:
    image: str
    kind: Kind
    network: str = "none"
    cpu: float | None = None
    memory_mb: int | None = None
    pids: int | None = None
    scope: Literal["workflow", "image"] = "workflow"
    workflow_id: str | None = None
    user: str = "65534:65534"  # uid:gid of the task processes (the agent itself runs as root)
    read_only_root: bool = True

    @property
    def hash(self) -> str:  # per task on the hot path: computed once per distinct key
        return _key_hash(self)

    def to_label(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_label(cls, text: str) -> PoolKey:
        data: dict[str, Any] = json.loads(text)
        return cls(**data)

    def describe(self) -> dict[str, Any]:
        return {"hash": self.hash, **asdict(self)}


@lru_cache(maxsize=4096)
def _key_hash(key: PoolKey) -> str:
    canonical = json.dumps(asdict(key), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def resolve_policy(request: TaskRequest, settings: PoolSettings | TaskPolicySection) -> TaskPolicy:
    """The task's network, user, root filesystem, limits and scope under the operator's policy.

    Raises :class:`~flowcore.errors.InvalidInput` (422, naming the field) for what the policy refuses:
    a network off the allow-list (``host`` and ``container:*`` always), root unless allowed, limits
    over the maxima, ``pool.scope: image`` when cross-workflow reuse is off. Pure.
    """
    policy = settings.policy if isinstance(settings, PoolSettings) else settings
    return resolve(request, policy)


def key_for(
    request: TaskRequest,
    kind: Kind,
    settings: PoolSettings | TaskPolicySection | None = None,
    *,
    enforce: bool = True,
) -> PoolKey:
    """The pool key of a task, fully resolved (defaults filled in, the policy enforced).

    Without ``settings``, or with ``enforce=False`` (a worker computing a routing hint), the values
    come from the policy given (else the default one) and only what no setting can allow (``host``,
    ``container:*``, a malformed user) is refused; the pool service enforces the rest.
    """
    if settings is None:
        resolved = resolve(request, TaskPolicySection(), enforce=False)
    elif not enforce:
        policy = settings.policy if isinstance(settings, PoolSettings) else settings
        resolved = resolve(request, policy, enforce=False)
    else:
        resolved = resolve_policy(request, settings)
    return key_from(request, kind, resolved)


def key_from(request: TaskRequest, kind: Kind, resolved: TaskPolicy) -> PoolKey:
    """The key of a task whose policy is already resolved (one-shot containers use it too)."""
    return PoolKey(
        image=request.image,
        kind=kind,
        network=resolved.network,
        cpu=resolved.cpu,
        memory_mb=resolved.memory_mb,
        pids=resolved.pids,
        scope=resolved.scope,
        workflow_id=request.workflow_id if resolved.scope == "workflow" else None,
        user=resolved.user,
        read_only_root=resolved.read_only_root,
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
