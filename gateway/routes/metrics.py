"""Metrics: ``/v1/workflows/{id}/metrics``, ``/v1/metrics/history``, ``/v1/metrics/aggregate`` and the
Prometheus endpoint ``/metrics`` (rendered by :mod:`gateway.prometheus` through ``prometheus_client``;
its counters and histograms are the monotonic ones of :mod:`flowcore.counters`, ADR 020).

The documents are computed by :mod:`flowcore.metrics` (definitions there and in docs/api.md) from
records read by :mod:`flowcore.runs`. A window is read newest first and capped (``MAX_SCAN``
workflows for the aggregates, ``limit`` for the history); answers say ``truncated: true`` when the
window held more. ``/metrics`` needs the bearer token like every other route (configure Prometheus
with ``authorization: {credentials: <token>}``); a pool service that does not answer within
``POOL_TIMEOUT_S`` shows as ``flow_pool_service_up 0`` and never fails the scrape. A registration
that is not signed with the pool token (:func:`flowcore.poolsigning.verify`) is reported down and
never asked: the gateway sends its pool token only to genuine pool services.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowcore import counters, metric_series, metrics, poolsigning
from flowcore.durations import parse_duration_s
from flowcore.errors import InvalidInput, ServiceUnavailable
from flowcore.keyspace import Keyspace
from flowcore.models import WorkflowStatus
from flowcore.runs import RunReader
from flowcore.stepkey_store import step_key_counts
from flowcore.store import WorkflowStore
from gateway.bodies import query_int
from gateway.prometheus import FLOW_OUTCOMES, Exporter, Scrape, counter_fields

MAX_SCAN = 2000  # workflows read for one aggregate
MAX_TASKS = 10_000  # task records parsed for one aggregate (pool efficiency)
MAX_WINDOW_S = 366 * 86400.0
POOL_TIMEOUT_S = 1.0
POOL_STALE_S = 60.0  # registrations without a heartbeat for this long are reported down, not asked


def _duration_param(request: Request, default: str) -> tuple[str, float]:
    raw = request.query_params.get("duration", default)
    try:
        seconds = parse_duration_s(raw)
    except ValueError as exc:
        raise InvalidInput(f"duration: {exc}; e.g. '30m', '1h', '24h', '7d'", field="duration") from None
    if seconds <= 0 or seconds > MAX_WINDOW_S:
        raise InvalidInput("duration must be more than 0 and at most 366d", field="duration")
    return raw, seconds


def _status_param(request: Request) -> WorkflowStatus | None:
    raw = request.query_params.get("status")
    if not raw:
        return None
    try:
        return WorkflowStatus(raw.lower())
    except ValueError:
        allowed = ", ".join(s.value for s in WorkflowStatus)
        raise InvalidInput(f"unknown status {raw!r}; use one of {allowed}", field="status") from None


def _reader(request: Request) -> RunReader:
    return RunReader(request.app.state.redis, request.app.state.keys)


async def workflow_metrics(request: Request) -> Response:
    """One workflow's metrics: duration, step_metrics, resource_usage, errors; 404 when unknown."""
    store: WorkflowStore = request.app.state.store
    snap = await store.load(request.path_params["workflow_id"])
    return JSONResponse(metrics.workflow_metrics(snap, time.time()))


async def metrics_history(request: Request) -> Response:
    """Workflows created in the last ``duration`` (default 24h), running ones included, newest first."""
    text, window_s = _duration_param(request, "24h")
    limit = query_int(request, "limit", 100, lo=1, hi=1000)
    status = _status_param(request)
    now = time.time()
    window = await _reader(request).window(now - window_s, now, limit=limit, status=status)
    items = metrics.history(window.runs, now, window_s, limit)
    return JSONResponse(
        {"items": items, "window": text, "window_s": window_s, "limit": limit, "truncated": window.truncated}
    )


async def metrics_series(request: Request) -> Response:
    """The window (default 24h) in ``buckets`` equal parts (default 24), each with the aggregate's
    definitions: created by status, success rate, average, p50 and p95 duration (nearest rank)."""
    text, window_s = _duration_param(request, "24h")
    buckets = query_int(request, "buckets", 24, lo=1, hi=metric_series.MAX_BUCKETS)
    now = time.time()
    window = await _reader(request).window(now - window_s, now, limit=MAX_SCAN)
    body = metric_series.series(window.runs, now, window_s, buckets)
    return JSONResponse({"window": text, **body, "scanned": len(window.runs), "truncated": window.truncated})


async def metrics_aggregate(request: Request) -> Response:
    """Totals, counts by status, success rate, durations, pool efficiency over the last ``duration`` (1h)."""
    text, window_s = _duration_param(request, "1h")
    now = time.time()
    window = await _reader(request).window(now - window_s, now, limit=MAX_SCAN, with_tasks=True, max_tasks=MAX_TASKS)
    body = metrics.aggregate(window.runs, now, window_s)
    return JSONResponse(
        {"window": text, **body, "scanned": len(window.runs), "truncated": window.truncated,
         "dispatches_truncated": window.tasks_truncated}
    )


# ---- Prometheus -------------------------------------------------------------------------------
async def _pool_report(client: httpx.AsyncClient, url: str) -> dict[str, Any] | None:
    try:
        response = await client.get(f"{url.rstrip('/')}/v1/pools", timeout=POOL_TIMEOUT_S)
        body = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return body if isinstance(body, dict) else None


async def _pool_services(request: Request, raw: dict[Any, Any], beats: list[Any], now: float) -> list[tuple[str, dict[str, Any] | None]]:
    """``(service id, its /v1/pools report or None when down)`` for every registered pool service."""
    seen = {(k.decode() if isinstance(k, bytes) else str(k)): float(v) for k, v in beats}
    targets: dict[str, str | None] = {}
    for key, value in raw.items():
        sid = key.decode() if isinstance(key, bytes) else str(key)
        try:
            reg = json.loads(value)
        except ValueError:
            reg = None
        fresh = now * 1000 - seen.get(sid, 0.0) <= POOL_STALE_S * 1000
        genuine = isinstance(reg, dict) and poolsigning.verify(
            reg, request.app.state.pool_token, service_id=sid, now_ms=now * 1000, max_age_ms=POOL_STALE_S * 1000
        ) is None
        url = reg.get("url") if isinstance(reg, dict) and genuine else None
        targets[sid] = url if fresh and isinstance(url, str) else None
    if not targets:  # nothing registered: the pool service the gateway is configured with
        targets["default"] = request.app.state.settings.pool.url
    client: httpx.AsyncClient = request.app.state.pool_http

    async def ask(url: str | None) -> dict[str, Any] | None:
        return await _pool_report(client, url) if url else None

    reports = await asyncio.gather(*(ask(u) for u in targets.values()))
    return list(zip(targets.keys(), reports, strict=True))


def _flow_counts(raw: dict[Any, Any]) -> dict[str, Any]:
    """``{"totals": {outcome: n}, "by_workflow": {name: {outcome: n}}}`` from ``{p}:fc:counts`` (ADR 013)."""
    totals: dict[str, int] = dict.fromkeys(FLOW_OUTCOMES, 0)
    by_name: dict[str, dict[str, int]] = {}
    for key, value in raw.items():
        text = key.decode() if isinstance(key, bytes) else str(key)
        outcome, _, name = text.partition(":")
        if name:
            by_name.setdefault(name, dict.fromkeys(FLOW_OUTCOMES, 0))[outcome] = int(value)
        else:
            totals[outcome] = int(value)
    return {"totals": totals, "by_workflow": by_name}


async def flow_control_metrics(request: Request) -> Response:
    """Counts of flow-controlled starts by outcome, in all and per workflow name; runs waiting now."""
    keys: Keyspace = request.app.state.keys
    try:
        raw = await request.app.state.redis.hgetall(keys.fc_counts)
        waiting = await request.app.state.redis.zcard(keys.by_status(WorkflowStatus.QUEUED.value))
        step_keys = await request.app.state.redis.hgetall(keys.sk_counts)
    except RedisError as exc:
        raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
    return JSONResponse({**_flow_counts(raw), "queued_now": int(waiting), "step_keys": step_key_counts(step_keys)})


def _exporter(request: Request) -> Exporter:
    """This app's exporter (its own registry: several apps may share a process), made on first use."""
    exporter = getattr(request.app.state, "prometheus", None)
    if not isinstance(exporter, Exporter):
        exporter = request.app.state.prometheus = Exporter()
    return exporter


async def prometheus(request: Request) -> Response:
    """Operators' metrics through ``prometheus_client`` (ADR 020; bearer token required): the text format
    0.0.4, or OpenMetrics when the ``Accept`` header asks for it."""
    redis = request.app.state.redis
    keys: Keyspace = request.app.state.keys
    now = time.time()
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for status in WorkflowStatus:
                pipe.zcard(keys.by_status(status.value))
            pipe.zcard(keys.queue)
            pipe.zcount(keys.queue, "-inf", int(now * 1000))
            pipe.zcard(keys.leases)
            pipe.hgetall(keys.pool_services)
            pipe.zrange(keys.pool_heartbeats, 0, -1, withscores=True)
            pipe.hgetall(keys.fc_counts)
            pipe.zrange(keys.metric_names, 0, counters.MAX_WORKFLOW_LABELS - 1)
            pipe.hgetall(keys.sk_counts)
            results = await pipe.execute()
        n = len(WorkflowStatus)
        counts, (queued, due, leases, registrations, beats, flow_counts, raw_names, sk_counts) = results[:n], results[n:]
        names = [x.decode() if isinstance(x, bytes) else str(x) for x in raw_names]
        fields = counter_fields(names)
        values = await redis.hmget(keys.metric_counters, fields)
    except RedisError as exc:
        raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
    scrape = Scrape(
        workflows={status.value: int(count) for status, count in zip(WorkflowStatus, counts, strict=True)},
        queue_depth=int(queued), queue_ready=int(due), tasks_running=int(leases),
        services=await _pool_services(request, registrations, beats, now),
        flow_counts=_flow_counts(flow_counts)["by_workflow"],
        step_keys=step_key_counts(sk_counts),
        counters=counters.decode(dict(zip(fields, values, strict=True))),
        names=names,
    )
    body, content_type = _exporter(request).render(scrape, request.headers.get("accept"))
    return Response(body, headers={"content-type": content_type, "cache-control": "no-store"})


routes = [
    Route("/v1/workflows/{workflow_id}/metrics", workflow_metrics, methods=["GET"]),
    Route("/v1/metrics/history", metrics_history, methods=["GET"]),
    Route("/v1/metrics/series", metrics_series, methods=["GET"]),
    Route("/v1/metrics/aggregate", metrics_aggregate, methods=["GET"]),
    Route("/v1/metrics/flow-control", flow_control_metrics, methods=["GET"]),
    Route("/metrics", prometheus, methods=["GET"]),
]
