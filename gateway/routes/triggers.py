"""Triggers: ``/v1/workflows/{id}/triggers``, ``/v1/triggers/...`` and manual fires.

Creating, listing, enabling, disabling and deleting triggers of a template workflow, firing one by
hand (``POST /v1/triggers/{id}/fire``) and firing a workflow's definition by hand without a trigger
(``POST /v1/workflows/{id}/trigger``, the SDK's ``trigger_workflow``). Manual fires accept an
``Idempotency-Key`` header: the same key within the retention window starts nothing new and answers
the first fire's workflow id.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowcore import dag
from flowcore.errors import Conflict, InvalidInput
from flowcore.firing import Fire, FireOutcome, FireResult, Firing
from flowcore.policy import check_definition
from flowcore.records import Origin
from flowcore.triggers import Trigger, TriggerSpec, trigger_view
from flowcore.triggerstore import TriggerStore
from gateway.bodies import parse_model, query_int, read_document
from gateway.routes.workflows import policy_of

MAX_IDEMPOTENCY_KEY = 200


class ManualFire(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_data: Any = None


def trigger_store(request: Request) -> TriggerStore:
    store: TriggerStore = request.app.state.triggers
    return store


def firing(request: Request) -> Firing:
    fire: Firing = request.app.state.firing
    return fire


def retention_s(request: Request) -> float:
    return float(request.app.state.settings.idempotency_retention_s)


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or any(c.isspace() for c in key):
        raise InvalidInput(
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters without spaces", field="Idempotency-Key"
        )
    return f"manual:{key}"


def fire_answer(result: FireResult, **extra: Any) -> JSONResponse:
    body = {**result.view(), "duplicate": result.outcome == FireOutcome.DUPLICATE, **extra}
    status = 201 if result.outcome == FireOutcome.STARTED else 200
    return JSONResponse(body, status_code=status)


async def _optional_body(request: Request) -> ManualFire:
    document = await read_document(request, allow_yaml=False, required=False)
    return ManualFire() if document is None else parse_model(document, ManualFire)


async def create_trigger(request: Request) -> Response:
    """Create a trigger on a template workflow; a webhook's secret is shown in this answer only."""
    spec = parse_model(await read_document(request, allow_yaml=True), TriggerSpec)
    trigger = await trigger_store(request).create(request.path_params["workflow_id"], spec)
    return JSONResponse(
        trigger_view(trigger, reveal_secret=True), status_code=201, headers={"location": f"/v1/triggers/{trigger.id}"}
    )


async def workflow_triggers(request: Request) -> Response:
    triggers = await trigger_store(request).for_workflow(request.path_params["workflow_id"])
    return JSONResponse({"items": [trigger_view(t) for t in triggers], "total": len(triggers)})


async def list_triggers(request: Request) -> Response:
    """Every trigger, newest first."""
    limit = query_int(request, "limit", 50, lo=1, hi=1000)
    offset = query_int(request, "offset", 0, lo=0, hi=10_000_000)
    triggers, total = await trigger_store(request).list_all(offset, limit)
    return JSONResponse({"items": [trigger_view(t) for t in triggers], "total": total, "limit": limit, "offset": offset})


async def get_trigger(request: Request) -> Response:
    return JSONResponse(trigger_view(await trigger_store(request).get(request.path_params["trigger_id"])))


async def delete_trigger(request: Request) -> Response:
    await trigger_store(request).delete(request.path_params["trigger_id"])
    return Response(status_code=204)


async def enable_trigger(request: Request) -> Response:
    trigger = await trigger_store(request).set_enabled(request.path_params["trigger_id"], True)
    return JSONResponse(trigger_view(trigger))


async def disable_trigger(request: Request) -> Response:
    trigger = await trigger_store(request).set_enabled(request.path_params["trigger_id"], False)
    return JSONResponse(trigger_view(trigger))


async def trigger_runs(request: Request) -> Response:
    """The workflows this trigger started (the last 1000), newest first, with their status."""
    store = trigger_store(request)
    trigger = await store.get(request.path_params["trigger_id"])
    limit = query_int(request, "limit", 50, lo=1, hi=1000)
    keys = store.keys
    rows = await store.redis.zrevrange(keys.trigger_runs(trigger.id), 0, limit - 1, withscores=True)
    items = []
    async with store.redis.pipeline(transaction=False) as pipe:
        for wf_id, _ in rows:
            pipe.hget(keys.workflow(wf_id.decode() if isinstance(wf_id, bytes) else wf_id), "status")
        statuses = await pipe.execute()
    for (wf_id, score), status in zip(rows, statuses, strict=True):
        items.append(
            {
                "workflow_id": wf_id.decode() if isinstance(wf_id, bytes) else wf_id,
                "created_at": score / 1000,
                "status": status.decode() if isinstance(status, bytes) else status or "deleted",
            }
        )
    return JSONResponse({"items": items, "total": len(items)})


async def fire_now(
    request: Request, trigger: Trigger, *, kind: str, fire_key: str | None, payload: Any, event_id: str | None = None
) -> FireResult:
    """Fire ``trigger`` from this request (manual, event or webhook), recording ``kind`` as its origin."""
    fire = firing(request)
    now = time.time()
    return await fire.fire(
        Fire(
            template_id=trigger.workflow_id,
            template=await fire.template(trigger.workflow_id),
            origin=Origin(kind=kind, trigger_id=trigger.id, template_id=trigger.workflow_id, fired_at=now,
                          event_id=event_id),
            now=now,
            trigger=trigger,
            fire_key=fire_key,
            payload=payload,
            retention_s=retention_s(request),
        )
    )


async def fire_trigger(request: Request) -> Response:
    """Fire a trigger by hand, whatever its type; ``input_data`` is merged over the trigger's."""
    body = await _optional_body(request)
    trigger = await trigger_store(request).get(request.path_params["trigger_id"])
    if not trigger.enabled:
        raise Conflict(f"trigger {trigger.id!r} is disabled; enable it to fire it", field="trigger_id")
    # The operator may have tightened the policy since the template was stored: say so to whoever fires
    # by hand (events and webhooks fire anyway; the pool service refuses the step's tasks).
    check_definition(await firing(request).template(trigger.workflow_id), policy_of(request))
    result = await fire_now(request, trigger, kind="manual", fire_key=idempotency_key(request), payload=body.input_data)
    return fire_answer(result, trigger_id=trigger.id)


async def trigger_workflow(request: Request) -> Response:
    """Start a new workflow from this workflow's definition (``trigger_workflow`` in the SDK)."""
    body = await _optional_body(request)
    template_id = request.path_params["workflow_id"]
    fire = firing(request)
    summary = await fire.store.load_summary(template_id)  # always read: the template may have been deleted
    dag.check_runnable(summary.definition)
    check_definition(summary.definition, policy_of(request))
    now = time.time()
    result = await fire.fire(
        Fire(
            template_id=template_id,
            template=summary.definition,
            origin=Origin(kind="manual", template_id=template_id, fired_at=now),
            now=now,
            fire_key=idempotency_key(request),
            payload=body.input_data,
            retention_s=retention_s(request),
        )
    )
    return fire_answer(result, template_id=template_id)


routes = [
    Route("/v1/workflows/{workflow_id}/triggers", create_trigger, methods=["POST"]),
    Route("/v1/workflows/{workflow_id}/triggers", workflow_triggers, methods=["GET"]),
    Route("/v1/workflows/{workflow_id}/trigger", trigger_workflow, methods=["POST"]),
    Route("/v1/triggers", list_triggers, methods=["GET"]),
    Route("/v1/triggers/{trigger_id}", get_trigger, methods=["GET"]),
    Route("/v1/triggers/{trigger_id}", delete_trigger, methods=["DELETE"]),
    Route("/v1/triggers/{trigger_id}/enable", enable_trigger, methods=["POST"]),
    Route("/v1/triggers/{trigger_id}/disable", disable_trigger, methods=["POST"]),
    Route("/v1/triggers/{trigger_id}/fire", fire_trigger, methods=["POST"]),
    Route("/v1/triggers/{trigger_id}/runs", trigger_runs, methods=["GET"]),
]
