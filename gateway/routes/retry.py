"""``POST /v1/workflows/{id}/retry``: run a finished workflow again as a new workflow.

The new workflow gets the same definition and the same input (a fired workflow's merged input
included) and starts at once; its origin is ``{"kind": "retry", "template_id": <the old id>}`` so the
dashboard and the API can tell where it came from. The old workflow stays as it was. A workflow that
has not finished yet is refused (409): cancel it first, or wait.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowcore.errors import Conflict
from flowcore.policy import check_definition
from flowcore.records import Origin
from gateway.routes.workflows import policy_of, store_of, submit


async def retry_workflow(request: Request) -> Response:
    """Start a new workflow from this finished workflow's definition and input; 409 while it runs."""
    store = store_of(request)
    wf_id = request.path_params["workflow_id"]
    old = await store.load_summary(wf_id)
    if not old.status.finished:
        raise Conflict(
            f"workflow {wf_id!r} is {old.status.value}; only a finished workflow can be retried (cancel it first)",
            field="workflow_id",
        )
    check_definition(old.definition, policy_of(request))  # the operator may have tightened the policy since
    definition = old.definition.model_copy(update={"input": old.input})
    root = old.origin.root_id or (old.origin.template_id if old.origin.kind != "retry" else None) or wf_id
    origin = Origin(kind="retry", template_id=wf_id, root_id=root, fired_at=time.time())
    snap = await submit(store, definition, start=True, origin=origin)
    return JSONResponse(
        {"workflow_id": snap.wf_id, "retry_of": wf_id, "status": snap.status.value},
        status_code=201,
        headers={"location": f"/v1/workflows/{snap.wf_id}"},
    )


routes = [Route("/v1/workflows/{workflow_id}/retry", retry_workflow, methods=["POST"])]
