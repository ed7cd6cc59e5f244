"""``POST /v1/workflows/{id}/steps/{step}/approve`` and ``.../reject``: decide an approval step (ADR 012).

The body is optional: ``{"comment": "..."}`` (at most 2,000 characters). The token needs the
``approve`` scope (``write`` and ``admin`` imply it; ``read`` and ``trigger`` tokens get 403 from the
middleware, :mod:`gateway.scopes`). Who decided is recorded on the step's output: ``token:<name>`` for
a bearer token, ``session:<name>`` for the dashboard (a session carries its token's name). An unknown
step is 404; a step that is not an approval step, or is not waiting (not begun, decided already,
timed out, workflow over) is 409 and changes nothing.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowcore import waitengine, waitrules
from flowcore.engine import EngineEnv
from flowcore.errors import InvalidInput
from flowcore.records import Snapshot
from gateway.bodies import parse_model, read_document
from gateway.routes.workflows import store_of
from gateway.views import step_view, workflow_view


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str | None = Field(None, max_length=waitrules.MAX_COMMENT_CHARS)


def decider(request: Request) -> str:
    """Who is deciding, for the record: the token's (or the session's token's) name, never the token."""
    grant: Any = request.scope.get("state", {}).get("grant")
    via = request.scope.get("state", {}).get("auth", "bearer")
    name = getattr(grant, "name", None) or "anonymous"
    kind = "session" if via == "session" else "token"
    return f"{kind}:{name}"[: waitrules.MAX_DECIDER_CHARS]


async def _decide(request: Request, decision: waitrules.Decision) -> Response:
    store = store_of(request)
    wf_id, step_id = request.path_params["workflow_id"], request.path_params["step_id"]
    body = parse_model(await read_document(request, allow_yaml=False, required=False) or {}, DecisionIn)
    by = decider(request)

    def decide(snap: Snapshot) -> Any:
        try:
            return waitengine.decide(snap, EngineEnv(), step_id, decision, by=by, comment=body.comment)
        except waitrules.WaitRuleError as exc:
            raise InvalidInput(str(exc), field="comment") from None

    plan = await store.transact(wf_id, decide)
    rec = plan.snap.steps[step_id]
    return JSONResponse(
        {"workflow_id": wf_id, "step_id": step_id, "decision": decision, "step": step_view(plan.snap, rec),
         "workflow": workflow_view(plan.snap)},
        status_code=200,
    )


async def approve_step(request: Request) -> Response:
    """Approve a waiting approval step, with an optional comment."""
    return await _decide(request, "approve")


async def reject_step(request: Request) -> Response:
    """Reject a waiting approval step, with an optional comment."""
    return await _decide(request, "reject")


routes = [
    Route("/v1/workflows/{workflow_id}/steps/{step_id}/approve", approve_step, methods=["POST"]),
    Route("/v1/workflows/{workflow_id}/steps/{step_id}/reject", reject_step, methods=["POST"]),
]
