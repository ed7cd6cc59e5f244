"""Reading many workflows of a time window from Redis, for the metrics and the operators' views.

The ``{p}:wfs`` zset (or ``{p}:wfs:status:{status}``) is scored by creation time in ms, so a window is
one ``ZREVRANGEBYSCORE`` (newest first, at most ``limit`` ids). The records are then read in
pipelined batches (no transaction: a workflow changing meanwhile is read as it is at that moment;
one deleted meanwhile is skipped). Only the fields the metrics need are read: the record's times,
status, error and origin, the definition only for its name, and task or step records on request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from flowcore.errors import ServiceUnavailable
from flowcore.keyspace import Keyspace
from flowcore.metrics import RunSummary
from flowcore.models import WorkflowStatus
from flowcore.records import StepRecord, TaskRecord

BATCH = 200
MAX_TASKS = 10_000  # task records parsed for one answer at most
_FIELDS = ("definition", "status", "created_at", "started_at", "finished_at", "error", "origin")


@dataclass(frozen=True)
class Window:
    runs: list[RunSummary]
    truncated: bool  # more workflows were created in the window than were read
    tasks_truncated: bool = False  # some runs were read without their task records (task budget spent)


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _float(value: Any) -> float | None:
    if value is None or value in (b"", ""):
        return None
    try:
        return float(_text(value))
    except ValueError:
        return None


def _json_str(raw: Any, key: str, default: str) -> str:
    """The string at ``key`` of a JSON object stored in a hash field; ``default`` for anything else."""
    if raw is None:
        return default
    try:
        doc = json.loads(raw)
    except ValueError:
        return default
    value = doc.get(key) if isinstance(doc, dict) else None
    return value if isinstance(value, str) else default


def _records(raw: list[Any], model: type[TaskRecord] | type[StepRecord]) -> tuple[Any, ...]:
    out = []
    for item in raw or []:
        try:
            out.append(model.model_validate_json(item))
        except ValidationError:
            continue  # one unreadable record must not hide the others
    return tuple(out)


def summary_from_fields(wf_id: str, values: list[Any], tasks: list[Any], steps: list[Any]) -> RunSummary | None:
    """A :class:`RunSummary` from the HMGET of :data:`_FIELDS` (None when the workflow is gone)."""
    fields = dict(zip(_FIELDS, values, strict=True))
    created = _float(fields["created_at"])
    if fields["status"] is None or created is None:
        return None
    try:
        status = WorkflowStatus(_text(fields["status"]))
    except ValueError:
        return None
    error = fields["error"]
    return RunSummary(
        wf_id=wf_id,
        name=_json_str(fields["definition"], "name", ""),
        status=status,
        created_at=created,
        started_at=_float(fields["started_at"]),
        finished_at=_float(fields["finished_at"]),
        error=_text(error) if error else None,
        origin=_json_str(fields["origin"], "kind", "api"),
        tasks=_records(tasks, TaskRecord),
        steps=_records(steps, StepRecord),
    )


class RunReader:
    def __init__(self, redis: Redis, keys: Keyspace) -> None:
        self.redis = redis
        self.keys = keys

    async def window(
        self,
        since: float,
        until: float,
        *,
        limit: int,
        status: WorkflowStatus | None = None,
        with_tasks: bool = False,
        with_steps: bool = False,
        max_tasks: int = MAX_TASKS,
    ) -> Window:
        """The workflows created in ``[since, until]`` (epoch seconds), newest first, at most ``limit``.

        With ``with_tasks``, task records are read newest workflow first while they fit in ``max_tasks``
        records in all (one map step may hold thousands); a workflow whose records do not fit any more
        comes without them (``tasks_truncated``).
        """
        key = self.keys.by_status(status.value) if status else self.keys.all_workflows
        budget = max_tasks if with_tasks else 0
        runs: list[RunSummary] = []
        tasks_truncated = False
        try:
            raw_ids = await self.redis.zrevrangebyscore(
                key, int(until * 1000), int(since * 1000), start=0, num=limit + 1
            )
            ids = [_text(i) for i in raw_ids]
            truncated = len(ids) > limit
            for start in range(0, min(len(ids), limit), BATCH):
                batch, budget, skipped = await self._read(ids[start : min(start + BATCH, limit)], with_tasks, with_steps, budget)
                runs.extend(batch)
                tasks_truncated = tasks_truncated or skipped
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
        return Window(runs=runs, truncated=truncated, tasks_truncated=tasks_truncated)

    async def _read(
        self, ids: list[str], with_tasks: bool, with_steps: bool, budget: int
    ) -> tuple[list[RunSummary], int, bool]:
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            for wf_id in ids:
                pipe.hmget(k.workflow(wf_id), list(_FIELDS))
                if with_steps:
                    pipe.hvals(k.steps(wf_id))
                if with_tasks:
                    pipe.hlen(k.tasks(wf_id))
            results = await pipe.execute()
        per = 1 + int(with_steps) + int(with_tasks)
        wanted: list[str] = []
        skipped = False
        if with_tasks:
            for i, wf_id in enumerate(ids):
                count = int(results[(i + 1) * per - 1] or 0)
                if count <= budget:
                    wanted.append(wf_id)
                    budget -= count
                elif count:
                    skipped = True
        tasks: dict[str, list[Any]] = {}
        if wanted:
            async with self.redis.pipeline(transaction=False) as pipe:
                for wf_id in wanted:
                    pipe.hvals(k.tasks(wf_id))
                tasks = dict(zip(wanted, await pipe.execute(), strict=True))
        runs: list[RunSummary] = []
        for i, wf_id in enumerate(ids):
            chunk = results[i * per : (i + 1) * per]
            steps = chunk[1] if with_steps else []
            run = summary_from_fields(wf_id, chunk[0], tasks.get(wf_id, []), steps)
            if run is not None:
                runs.append(run)
        return runs, budget, skipped
