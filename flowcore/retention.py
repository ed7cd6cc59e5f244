"""Deleting workflows by filter: the bulk ``DELETE /v1/workflows`` and the retention sweep.

A :class:`DeleteFilter` says which workflows go (statuses, name, labels, created or finished
before a time); :func:`matches` decides for one workflow record, purely. :class:`Reaper` walks the
candidates newest-last through the by-status indexes (scored by creation time, so a ``created_before``
bound cuts the walk short), loads each record once and deletes those that match through
:meth:`flowcore.store.WorkflowStore.delete`, the same path as a single delete: everything the
workflow owns goes with it.

Two kinds of workflow are never deleted by a filter: one that runs (cancel it first; a single
``DELETE`` answers 409) and one that is the template of a trigger (its triggers would die with it;
delete the triggers first, or the workflow by id). Both are counted in the answer.

The retention sweep (run by the scheduler, every ``retention_sweep_s``) is a bulk delete of the
workflows finished more than ``retention_s`` ago; since a workflow is created before it finishes,
only those created before the same cut-off are read. Every call reads at most ``max_scan`` records,
so a sweep or a request costs a bounded amount however many workflows there are; ``more`` says
that another call would find more.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from redis.asyncio import Redis

from flowcore.errors import Conflict, InvalidInput, NotFound
from flowcore.keyspace import Keyspace
from flowcore.models import WorkflowStatus
from flowcore.records import Snapshot
from flowcore.store import WorkflowStore

log = logging.getLogger("flow.retention")

FINISHED = frozenset({WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED})
DELETABLE = FINISHED | {WorkflowStatus.PENDING}
MAX_LIMIT = 1000
MAX_SCAN = 10_000
_PAGE = 200


@dataclass(frozen=True)
class DeleteFilter:
    """Which workflows a bulk delete removes; every given condition must hold."""

    statuses: frozenset[WorkflowStatus] = FINISHED
    name: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    created_before: float | None = None
    finished_before: float | None = None

    def __post_init__(self) -> None:
        bad = sorted(s.value for s in self.statuses - DELETABLE)
        if bad:
            raise InvalidInput(
                f"status {', '.join(bad)}: only finished or never-started workflows can be deleted"
                " (cancel a running one first)",
                field="status",
            )
        if not self.statuses:
            raise InvalidInput("status: give at least one status", field="status")

    @property
    def narrowed(self) -> bool:
        """Says more than "every finished workflow": a request must, so that no typo deletes everything."""
        return (
            self.statuses != FINISHED
            or self.name is not None
            or bool(self.labels)
            or self.created_before is not None
            or self.finished_before is not None
        )


def matches(snap: Snapshot, flt: DeleteFilter) -> bool:
    """Whether the filter selects this workflow record (its status, name, labels and times)."""
    if snap.status not in flt.statuses:
        return False
    if flt.name is not None and snap.definition.name != flt.name:
        return False
    if any(snap.definition.labels.get(key) != value for key, value in flt.labels.items()):
        return False
    if flt.created_before is not None and not snap.created_at < flt.created_before:
        return False
    return flt.finished_before is None or (snap.finished_at is not None and snap.finished_at < flt.finished_before)


def retention_filter(now: float, retention_s: float) -> DeleteFilter:
    """What the retention sweep deletes: workflows finished more than ``retention_s`` ago."""
    cut = now - retention_s
    return DeleteFilter(statuses=FINISHED, created_before=cut, finished_before=cut)


@dataclass
class Outcome:
    deleted: list[str] = field(default_factory=list)
    matched: int = 0
    scanned: int = 0
    skipped_running: int = 0  # matched when read, running by the time of the delete
    skipped_templates: int = 0
    more: bool = False

    def as_dict(self, dry_run: bool) -> dict[str, object]:
        return {
            "dry_run": dry_run,
            "deleted": [] if dry_run else self.deleted,
            "matched": self.matched,
            "count": 0 if dry_run else len(self.deleted),
            "would_delete": self.deleted if dry_run else [],
            "scanned": self.scanned,
            "skipped_running": self.skipped_running,
            "skipped_templates": self.skipped_templates,
            "more": self.more,
        }


def _ids(raw: Iterable[bytes | str]) -> list[str]:
    return [r.decode() if isinstance(r, bytes) else r for r in raw]


class Reaper:
    def __init__(self, redis: Redis, keys: Keyspace, store: WorkflowStore | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.store = store or WorkflowStore(redis, keys)

    async def _candidates(self, flt: DeleteFilter, max_scan: int) -> tuple[list[str], bool]:
        """Ids from the by-status indexes, oldest first, created before the filter's bound."""
        top = f"({int(flt.created_before * 1000)}" if flt.created_before is not None else "+inf"
        found: list[str] = []
        more = False
        for status in sorted(flt.statuses, key=lambda s: s.value):
            room = max_scan - len(found)
            if room <= 0:
                more = True
                break
            ids = _ids(await self.redis.zrangebyscore(self.keys.by_status(status.value), "-inf", top, 0, room + 1))
            if len(ids) > room:
                more = True
                ids = ids[:room]
            found.extend(ids)
        return found, more

    async def delete(self, flt: DeleteFilter, *, limit: int = 100, dry_run: bool = False,
                     max_scan: int = MAX_SCAN) -> Outcome:
        """Delete (or, with ``dry_run``, list) up to ``limit`` workflows that match ``flt``."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}", field="limit")
        out = Outcome()
        ids, out.more = await self._candidates(flt, max_scan)
        for start in range(0, len(ids), _PAGE):
            page = ids[start : start + _PAGE]
            async with self.redis.pipeline(transaction=False) as pipe:
                for wf_id in page:
                    pipe.scard(self.keys.workflow_triggers(wf_id))
                templates = await pipe.execute()
            for wf_id, trigger_count in zip(page, templates, strict=True):
                out.scanned += 1
                try:
                    snap = await self.store.load_summary(wf_id)
                except NotFound:  # deleted meanwhile
                    continue
                if not matches(snap, flt):
                    continue
                if trigger_count:
                    out.skipped_templates += 1
                    continue
                if len(out.deleted) >= limit:
                    out.more = True
                    return out
                out.matched += 1
                if not dry_run:
                    try:
                        await self.store.delete(wf_id)
                    except NotFound:
                        continue
                    except Conflict:  # started between the read and the delete
                        out.skipped_running += 1
                        continue
                out.deleted.append(wf_id)
        return out

    async def sweep(self, now: float, retention_s: float, *, batch: int = 500) -> Outcome:
        """One pass of the retention: delete up to ``batch`` workflows finished before ``now - retention_s``."""
        out = await self.delete(retention_filter(now, retention_s), limit=min(batch, MAX_LIMIT), max_scan=batch * 4)
        if out.deleted:
            log.info("retention: deleted %d workflows finished more than %.0fs ago", len(out.deleted), retention_s)
        return out
