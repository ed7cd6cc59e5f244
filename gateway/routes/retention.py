"""``DELETE /v1/workflows?...``: delete the workflows a filter selects (:mod:`flowcore.retention`).

Parameters (query): ``status`` (comma-separated or repeated; finished statuses by default, ``pending``
allowed), ``name``, ``label`` (``key=value``, repeated: all must hold), ``created_before`` and
``finished_before`` (ISO-8601 or epoch seconds), ``older_than`` (a duration: finished more than that
long ago), ``limit`` (1..1000, default 100) and ``dry_run``. At least one of them besides ``limit`` and
``dry_run`` must narrow the selection: a bare ``DELETE /v1/workflows`` is a 422, never "everything".
"""

from __future__ import annotations

import time
from datetime import datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowcore.durations import parse_duration_s
from flowcore.errors import InvalidInput
from flowcore.models import WorkflowStatus
from flowcore.retention import FINISHED, MAX_LIMIT, DeleteFilter, Reaper
from gateway.bodies import query_bool, query_int

MAX_LABELS = 20
_KNOWN = frozenset(
    {"status", "name", "label", "created_before", "finished_before", "older_than", "limit", "dry_run"}
)


def _time(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name}: give an ISO-8601 time or epoch seconds, got {raw[:64]!r}", field=name) from None
    if parsed.tzinfo is None:
        raise InvalidInput(f"{name}: give a time zone (e.g. a trailing Z)", field=name)
    return parsed.timestamp()


def _statuses(request: Request) -> frozenset[WorkflowStatus] | None:
    raw = [part.strip() for value in request.query_params.getlist("status") for part in value.split(",")]
    raw = [part for part in raw if part]
    if not raw:
        return None
    out: set[WorkflowStatus] = set()
    for value in raw:
        try:
            out.add(WorkflowStatus(value.lower()))
        except ValueError:
            allowed = ", ".join(s.value for s in WorkflowStatus)
            raise InvalidInput(f"unknown status {value[:32]!r}; use one of {allowed}", field="status") from None
    return frozenset(out)


def _labels(request: Request) -> dict[str, str]:
    pairs = request.query_params.getlist("label")
    if len(pairs) > MAX_LABELS:
        raise InvalidInput(f"at most {MAX_LABELS} label filters", field="label")
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"label: give key=value, got {pair[:64]!r}", field="label")
        labels[key] = value
    return labels


def parse_filter(request: Request, now: float) -> DeleteFilter:
    """The filter a request asks for; InvalidInput (422, naming the parameter) for anything malformed."""
    unknown = sorted(set(request.query_params.keys()) - _KNOWN)
    if unknown:
        raise InvalidInput(f"unknown parameter {unknown[0][:64]!r}", field=unknown[0][:64])
    finished_before = _time(request, "finished_before")
    older_than = request.query_params.get("older_than")
    if older_than is not None:
        try:
            age_s = parse_duration_s(older_than)
        except ValueError as exc:
            raise InvalidInput(f"older_than: {exc}; e.g. '7d', '12h'", field="older_than") from None
        if age_s <= 0:
            raise InvalidInput("older_than must be more than 0", field="older_than")
        cut = now - age_s
        finished_before = cut if finished_before is None else min(finished_before, cut)
    name = request.query_params.get("name")
    if name is not None and not 1 <= len(name) <= 200:
        raise InvalidInput("name: 1 to 200 characters", field="name")
    flt = DeleteFilter(
        statuses=_statuses(request) or FINISHED,
        name=name,
        labels=_labels(request),
        created_before=_time(request, "created_before"),
        finished_before=finished_before,
    )
    if not flt.narrowed:
        raise InvalidInput(
            "say which workflows to delete: status, name, label, created_before, finished_before or older_than"
            " (e.g. ?status=failed&older_than=7d)",
            field="status",
        )
    return flt


async def delete_workflows(request: Request) -> Response:
    """Delete (or list, with ``dry_run=true``) up to ``limit`` workflows a filter selects."""
    now = time.time()
    flt = parse_filter(request, now)
    limit = query_int(request, "limit", 100, lo=1, hi=MAX_LIMIT)
    dry_run = query_bool(request, "dry_run")
    reaper = Reaper(request.app.state.redis, request.app.state.keys, request.app.state.store)
    outcome = await reaper.delete(flt, limit=limit, dry_run=dry_run)
    return JSONResponse(outcome.as_dict(dry_run))


routes = [Route("/v1/workflows", delete_workflows, methods=["DELETE"])]
