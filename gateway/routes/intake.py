"""Event and webhook intake: ``POST /v1/events`` and ``POST /v1/hooks/{trigger_id}``.

Intake records each fire and enqueues the new workflow's first steps in one Redis transaction per
matching trigger (:mod:`flowcore.firing`); it never waits for the workflow.

Events
    ``{"type": ..., "payload": {...}, "id": ...}`` fires every enabled event trigger of that type
    whose filter matches the payload. With an ``id``, a repeat within the retention window starts
    nothing new and answers what the first delivery started (``duplicate: true``). Ids are scoped to
    the sender (the token): another token's event with the same id is another event.
Webhooks
    Public (no bearer token): the trigger's HMAC signature is the credential. A missing or wrong
    signature is 401 and starts nothing; a replayed delivery starts nothing new, even under a new
    delivery id (:func:`flowcore.signatures.replay_key`: a digest of the signed body, remembered for
    ``idempotency_retention_s``); a body over the gateway's limit is 413 (see :mod:`gateway.middleware`).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowcore import eventfilter, waitstore
from flowcore.documents import DocumentLimits, load_json
from flowcore.errors import Conflict, MalformedBody, NotFound, Unauthorized
from flowcore.firing import FireOutcome
from flowcore.ids import ID_PATTERN, MAX_ID_LENGTH, check_id
from flowcore.signatures import SignatureError, delivery_id, replay_key, verify
from flowcore.triggers import TriggerType
from gateway.bodies import parse_bounded, parse_model, read_document
from gateway.routes.triggers import fire_now, retention_s, trigger_store


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:/-]+$")
    payload: Any = None
    id: str | None = Field(None, min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def event_source(request: Request) -> str:
    """Who published: a short digest of the token's (or the dashboard session's) grant name. Event ids
    are scoped to it, so two senders that pick the same id never collide or see each other's runs."""
    grant = request.scope.get("state", {}).get("grant")
    name = grant.name if grant is not None else "anonymous"
    return hashlib.sha256(b"flow-event-source:" + name.encode()).hexdigest()[:16]


async def publish_event(request: Request) -> Response:
    """Fire the event triggers that match; idempotent on ``id`` per sender."""
    event = parse_model(await read_document(request, allow_yaml=False), EventIn)
    store = trigger_store(request)
    redis, keys = store.redis, store.keys
    now = time.time()
    event_id = event.id or uuid.uuid4().hex
    scoped_id = f"{event_source(request)}-{event.id}" if event.id else None  # the id as this sender's
    duplicate = False
    if scoped_id:
        seen = await redis.get(keys.event(scoped_id))
        if seen is not None:
            duplicate = True
            recorded = json.loads(_s(seen))
            if recorded.get("type") != event.type:
                raise Conflict(
                    f"event id {event.id!r} was already used for an event of type {recorded.get('type')!r}", field="id"
                )
            candidates = await store.get_many(list(recorded.get("triggers", [])))
    woken = 0
    if not duplicate:  # runs waiting for this event (ADR 012): logged and their deliveries queued first
        woken = await waitstore.publish(redis, keys, event.type, event_id, event.payload, now)
        candidates = [
            t for t in await store.for_event(event.type)
            if t.enabled and eventfilter.matches(t.spec.config.event_filter, event.payload)
        ]
        if scoped_id:
            record = json.dumps({"type": event.type, "triggers": [t.id for t in candidates], "received_at": now})
            stored = await redis.set(keys.event(scoped_id), record, nx=True, ex=int(retention_s(request)))
            if not stored:  # the same id arrived concurrently: fire what the first one recorded
                duplicate = True
                recorded = json.loads(_s(await redis.get(keys.event(scoped_id)) or b"{}"))
                candidates = await store.get_many(list(recorded.get("triggers", [])))
    fired: list[dict[str, Any]] = []
    for trigger in candidates:
        result = await fire_now(request, trigger, kind="event", fire_key=f"event:{scoped_id}" if scoped_id else None,
                                payload=event.payload, event_id=event_id)
        fired.append({"trigger_id": trigger.id, **result.view()})
    started = sum(1 for f in fired if f["status"] == FireOutcome.STARTED.value)
    body = {"event_id": event_id, "type": event.type, "duplicate": duplicate and started == 0,
            "matched": len(candidates), "started": started, "fires": fired, "woke": woken}
    return JSONResponse(body, status_code=202)


def _json_or_text(text: str, limits: DocumentLimits) -> Any:
    try:
        return load_json(text, limits)  # too deep or too large stays an error (413)
    except MalformedBody:
        return text


def _webhook_payload(ctype: str, raw: bytes, limits: DocumentLimits) -> Any:
    """The body as JSON when it is; GitHub's form encoding (``payload=...``); else the text."""
    text = raw.decode("utf-8", errors="replace")
    if ctype == "application/x-www-form-urlencoded":
        form = parse_qs(text)
        if "payload" in form:
            return _json_or_text(form["payload"][0], limits)
        return {k: v[0] if len(v) == 1 else v for k, v in form.items()}
    if not raw.strip():
        return None
    return _json_or_text(text, limits)


async def receive_webhook(request: Request) -> Response:
    """A provider's delivery, as it sends it; the trigger's signature preset checks it."""
    store = trigger_store(request)
    trigger_id = request.path_params["trigger_id"]
    try:
        trigger = await store.get(trigger_id)
    except NotFound:
        raise NotFound(f"no webhook trigger {trigger_id!r}", field="trigger_id") from None
    if trigger.type != TriggerType.WEBHOOK:
        raise NotFound(f"no webhook trigger {trigger_id!r}", field="trigger_id")
    raw = await request.body()
    auth = trigger.webhook_auth()
    now = time.time()
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        verify(auth, headers, raw, now)
    except SignatureError as exc:
        raise Unauthorized(f"webhook signature rejected: {exc}", field="signature") from None
    if not trigger.enabled:
        raise Conflict(f"trigger {trigger.id!r} is disabled; the delivery started nothing", field="trigger_id")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    payload = await parse_bounded(request, raw, lambda body, limits: _webhook_payload(ctype, body, limits))
    delivery = delivery_id(auth, headers, payload)
    if delivery is not None:
        check_id(delivery, "delivery_id")
    result = await fire_now(request, trigger, kind="webhook", fire_key=replay_key(auth, raw, delivery),
                            payload=payload, event_id=delivery)
    body = {**result.view(), "duplicate": result.outcome == FireOutcome.DUPLICATE, "delivery_id": delivery,
            "trigger_id": trigger.id}
    return JSONResponse(body, status_code=202)


routes = [
    Route("/v1/events", publish_event, methods=["POST"]),
    Route("/v1/hooks/{trigger_id}", receive_webhook, methods=["POST"]),
]
