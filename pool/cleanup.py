"""Cleanup policies (ADR 014): the pure decisions about a task's container once the task has ended.

- :func:`after_task`: ``return`` it to its pool, ``remove`` it, or ``keep`` it quarantined. A failed
  task's container is never returned; a success is returned only when the container is clean (the
  warm pool's own checks decide that: :meth:`pool.warm.WarmPool.release`).
- :func:`keep_until_s`: the expiry of a kept container, ``keep_for`` bounded by the service's
  ``keep_for_max_s``.
- :func:`over_caps`: which kept containers go when one more is kept: the oldest first, until the pool
  key holds at most ``keep_max_per_pool`` and the service at most ``keep_max``.
- :func:`gone_owners`: the pool services not seen for ``kept_owner_gone_s``, whose kept records anyone
  may forget (the overall cap's index, :mod:`pool.keptindex`).
- :func:`expired`, :func:`copy_path`: the sweep's choice and the check of a path asked to be copied.

Everything here is plain data in, plain data out; :mod:`pool.kept` does the I/O.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from flowcore.models import CleanupPolicy

Action = Literal["return", "remove", "keep"]
DEFAULT_POLICY = CleanupPolicy()
FILES_ROOT = "/flow/task"  # where a task's files live in its container (pool.contract)
MAX_PATH_CHARS = 1024


def after_task(policy: CleanupPolicy | None, *, ok: bool) -> Action:
    """What the policy says for a task that succeeded (``ok``) or failed."""
    chosen = policy or DEFAULT_POLICY
    return chosen.on_success if ok else chosen.on_failure


def may_keep(policy: CleanupPolicy | None) -> tuple[bool, bool]:
    """(keep on success, keep on failure): whether the task's files must outlive it in the container."""
    chosen = policy or DEFAULT_POLICY
    return chosen.on_success == "keep", chosen.on_failure == "keep"


def keep_until_s(now_s: float, keep_for_s: float, keep_for_max_s: float) -> float:
    """Epoch seconds at which a container kept now is removed."""
    return now_s + max(0.0, min(keep_for_s, keep_for_max_s))


@dataclass(frozen=True)
class KeptInfo:
    container_id: str
    pool_key: str
    kept_at_s: float


def over_caps(kept: Sequence[KeptInfo], *, keep_max: int, keep_max_per_pool: int) -> list[str]:
    """The kept containers to remove so that both caps hold, oldest first (ties: by id, stable)."""
    ordered = sorted(kept, key=lambda k: (k.kept_at_s, k.container_id))
    doomed: list[str] = []
    per_pool: dict[str, list[KeptInfo]] = {}
    for info in ordered:
        per_pool.setdefault(info.pool_key, []).append(info)
    for infos in per_pool.values():
        excess = len(infos) - keep_max_per_pool
        doomed.extend(i.container_id for i in infos[: max(0, excess)])
    remaining = [i for i in ordered if i.container_id not in doomed]
    excess = len(remaining) - keep_max
    doomed.extend(i.container_id for i in remaining[: max(0, excess)])
    return doomed


def gone_owners(
    owners: Iterable[str], seen_s: Mapping[str, float], *, now_s: float, gone_after_s: float, self_id: str
) -> list[str]:
    """The pool services (among ``owners`` of indexed kept containers, and those ever seen) not seen for
    ``gone_after_s``: gone for good, so that others forget their records. Never ``self_id``. Sorted."""
    candidates = set(owners) | set(seen_s)
    cutoff_s = now_s - gone_after_s
    return sorted(o for o in candidates if o != self_id and o and seen_s.get(o, float("-inf")) < cutoff_s)


def expired(kept: Iterable[tuple[str, float]], now_s: float) -> list[str]:
    """Ids of the kept containers (id, expires_at_s) whose time is up."""
    return [container_id for container_id, until_s in kept if until_s <= now_s]


def copy_path(path: str | None) -> str:
    """The absolute path in the container to copy, from what a caller asked; ValueError when refused.

    Relative paths are taken under ``/flow/task`` (the tasks' directories; the default). ``..``
    segments, NUL and control characters are refused rather than normalised away, so that what is
    copied is always what was asked.
    """
    text = FILES_ROOT if path is None or path == "" else path
    if len(text) > MAX_PATH_CHARS:
        raise ValueError(f"the path is longer than {MAX_PATH_CHARS} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ValueError("the path must not contain control characters")
    if ".." in text.split("/"):
        raise ValueError("the path must not contain '..' segments")
    if not text.startswith("/"):
        text = f"{FILES_ROOT}/{text}"
    normal = posixpath.normpath(text)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    return normal
