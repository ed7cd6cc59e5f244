"""What a step may ask for: the operator's policy applied to one step or one task (pure).

The operator's :class:`~flowcore.settings.TaskPolicySection` says which networks a step may name,
whether it may run as root, the default and largest limits, and whether a pool may share warm
containers across workflows. One function, :func:`resolve`, serves both sides of the trust boundary:

- the gateway refuses a definition at submission (:func:`check_definition`; the error names the
  field as ``steps[0].network``), so nothing that breaks the policy is ever stored;
- the pool service resolves every task it is sent (``pool.keys.key_for``), so a request that did not
  come through the gateway is refused too (field ``network``), and the container gets the operator's
  defaults for whatever the step left out.

``host`` and ``container:<id>`` are refused whatever the settings say: a step on the host's network
reaches every service on its loopback (Redis, the pool API), and one in another container's
namespace reaches that container. Privileged mode, devices, capabilities and mounts are not fields of
a step at all (``extra="forbid"`` refuses them).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from flowcore import secretrefs
from flowcore.errors import InvalidInput
from flowcore.models import PoolOptions, Resources, WorkflowDefinition
from flowcore.settings import TASK_USER_PATTERN, TaskPolicySection

Scope = Literal["workflow", "image"]
MAX_ID = 4_294_967_294  # (uid_t)-1 means "unchanged" to the kernel


class Asks(Protocol):
    """What a step (definition) or a task (pool request) asks for; both models have these fields."""

    @property
    def network(self) -> str: ...

    @property
    def user(self) -> str | None: ...

    @property
    def read_only_root(self) -> bool | None: ...

    @property
    def resources(self) -> Resources: ...

    @property
    def pool(self) -> PoolOptions | None: ...


@dataclass(frozen=True)
class Violation:
    field: str
    message: str


@dataclass(frozen=True)
class TaskPolicy:
    """What a task gets: every value decided (the step's, else the operator's default)."""

    network: str
    user: str  # "uid:gid", the gid spelled out (docker's "uid" alone means gid 0)
    read_only_root: bool
    cpu: float
    memory_mb: int
    pids: int
    scope: Scope


def never_allowed(network: str, policy: TaskPolicySection | None = None) -> str | None:
    """Why ``network`` cannot be allowed under ``policy``, or None. ``host`` only by the operator's
    explicit opt-in (``allow_host_network``, for trusted steps on a development machine)."""
    if network == "host" and (policy is None or not policy.allow_host_network):
        return "network 'host' is never allowed: a host-network step reaches every service on the host"
    if network.startswith("container:"):
        return f"network {network!r} is never allowed: it joins another container's network namespace"
    return None


def normalise_user(user: str) -> str | None:
    """``"1000"`` -> ``"1000:1000"``; None when it is not ``uid[:gid]`` with ids in range."""
    if not re.fullmatch(TASK_USER_PATTERN, user):
        return None
    ids = [int(part) for part in user.split(":")]
    if any(i > MAX_ID for i in ids):
        return None
    uid, gid = ids[0], ids[-1]
    return f"{uid}:{gid}"


def violations(asks: Asks, policy: TaskPolicySection, *, prefix: str = "", enforce: bool = True) -> list[Violation]:
    """Every way ``asks`` breaks ``policy``; field names are prefixed (``steps[2].``).

    With ``enforce=False`` only what no setting can allow is reported (``host``, ``container:*``,
    a malformed user): for callers that merely compute a pool key (routing hints).
    """
    found: list[Violation] = []
    network = asks.network
    reason = never_allowed(network, policy)
    if reason is not None:
        found.append(Violation(f"{prefix}network", reason))
    elif enforce and network not in policy.allowed_networks:
        allowed = ", ".join(policy.allowed_networks)
        found.append(
            Violation(f"{prefix}network", f"network {network!r} is not allowed here; the operator allows: {allowed}")
        )
    if asks.user is not None:
        user = normalise_user(asks.user)
        if user is None:
            found.append(Violation(f"{prefix}user", f"user {asks.user!r} must be uid or uid:gid (numbers)"))
        elif enforce and not policy.allow_root_tasks and "0" in user.split(":"):
            found.append(
                Violation(f"{prefix}user", f"user {asks.user!r} is root (uid or gid 0); the operator does not allow it")
            )
    if enforce:
        for name, unit in (("cpu", " cores"), ("memory_mb", " MiB"), ("pids", " processes")):
            value = getattr(asks.resources, name)
            ceiling = getattr(policy, f"max_{name}")
            if value is not None and value > ceiling:
                found.append(
                    Violation(
                        f"{prefix}resources.{name}",
                        f"resources.{name} {value:g}{unit} exceeds the operator's maximum {ceiling:g}{unit}",
                    )
                )
        if asks.pool is not None and asks.pool.scope == "image" and not policy.allow_cross_workflow_reuse:
            found.append(
                Violation(
                    f"{prefix}pool.scope",
                    "pool.scope 'image' (warm containers shared across workflows) is not allowed here; use 'workflow'",
                )
            )
    return found


def resolve(asks: Asks, policy: TaskPolicySection, *, prefix: str = "", enforce: bool = True) -> TaskPolicy:
    """The task's settings, or :class:`InvalidInput` naming the first field that breaks the policy."""
    raise_first(violations(asks, policy, prefix=prefix, enforce=enforce))
    resources = asks.resources
    user = normalise_user(asks.user) if asks.user is not None else None
    return TaskPolicy(
        network=asks.network,
        user=user or normalise_user(policy.default_task_user) or "65534:65534",
        read_only_root=policy.default_read_only_root if asks.read_only_root is None else asks.read_only_root,
        cpu=resources.cpu if resources.cpu is not None else policy.default_cpu,
        memory_mb=resources.memory_mb if resources.memory_mb is not None else policy.default_memory_mb,
        pids=resources.pids if resources.pids is not None else policy.default_pids,
        scope=asks.pool.scope if asks.pool is not None else "workflow",
    )


def check_definition(definition: WorkflowDefinition, policy: TaskPolicySection) -> None:
    """Refuse (422, field ``steps[i]....``) a definition with a step asking for more than ``policy`` allows,
    or with a malformed secret reference in its env (:mod:`flowcore.secretrefs`)."""
    check_steps(definition.steps, policy)
    secretrefs.check_steps(definition.steps)


def check_steps(steps: Sequence[Asks], policy: TaskPolicySection) -> None:
    """Refuse (422, field ``steps[i]....``) the first step that asks for more than ``policy`` allows."""
    found: list[Violation] = []
    for i, step in enumerate(steps):
        found.extend(violations(step, policy, prefix=f"steps[{i}]."))
    raise_first(found)


def raise_first(found: Sequence[Violation]) -> None:
    if not found:
        return
    first = found[0]
    more = f" (and {len(found) - 1} more problem{'s' if len(found) > 2 else ''})" if len(found) > 1 else ""
    raise InvalidInput(
        f"{first.field}: {first.message}{more}",
        field=first.field,
        details=[{"field": v.field, "message": v.message} for v in found[:20]],
    )
