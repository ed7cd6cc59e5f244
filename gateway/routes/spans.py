"""``GET /v1/workflows/{id}/spans``: the trace spans of a workflow, from the Redis span store.

What the dashboard draws its waterfall from. The answer is ``{"trace_id": ..., "items": [...]}``:
``trace_id`` is the workflow's trace (from its record, else from its spans; ``null`` when it was not
traced) and ``items`` its stored spans sorted by ``start_time`` (epoch seconds), each as described
in :mod:`flowcore.tracing_store`. Spans arrive a moment (the export delay) after they finish, only
from processes whose ``FLOW_TRACING__EXPORTER`` includes ``redis``, and expire after the span
retention. 404 for an unknown workflow.
"""

from __future__ import annotations

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowcore.errors import NotFound, ServiceUnavailable
from flowcore.store import WorkflowStore
from flowcore.tracing import trace_id_of
from flowcore.tracing_store import decode_spans


async def workflow_spans(request: Request) -> Response:
    """The workflow's spans, oldest first, and its trace id."""
    store: WorkflowStore = request.app.state.store
    wf_id = request.path_params["workflow_id"]
    try:
        async with store.redis.pipeline(transaction=False) as pipe:
            pipe.exists(store.keys.workflow(wf_id))
            pipe.hget(store.keys.workflow(wf_id), "trace")
            pipe.lrange(store.keys.spans(wf_id), 0, -1)
            exists, traceparent, raw = await pipe.execute()
    except RedisError as exc:
        raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
    if not exists:
        raise NotFound(f"workflow {wf_id!r} not found", field="workflow_id")
    items = decode_spans(raw)
    trace_id = trace_id_of(traceparent.decode() if isinstance(traceparent, bytes) else traceparent)
    if trace_id is None and items:
        trace_id = items[0].get("trace_id")
    return JSONResponse({"trace_id": trace_id, "items": items})


routes = [Route("/v1/workflows/{workflow_id}/spans", workflow_spans, methods=["GET"])]
