"""``/v1/secrets``: named secrets that steps refer to from their env (``${{ secrets.NAME }}``).

Write-only: ``PUT`` stores (or replaces) a value and its scope (``workflows``: the workflows or templates
that may use it; left out, every workflow may), ``DELETE`` removes it, ``GET`` lists names, scopes and
times.
No route returns a value. Storing and deleting need the admin scope, listing needs read (scopes:
docs/adr/011). Values are sealed at rest (:mod:`flowcore.secretstore`) and masked wherever a step
could echo them (:mod:`flowcore.secretrefs`).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowcore.errors import InvalidInput
from flowcore.secretstore import SecretStore
from gateway.bodies import read_document
from gateway.views import iso


def _view(meta: dict[str, Any]) -> dict[str, Any]:
    return {"name": meta["name"], "created_at": iso(meta["created_at"]), "updated_at": iso(meta["updated_at"]),
            "workflows": meta.get("workflows")}


def _store(request: Request) -> SecretStore:
    store: SecretStore = request.app.state.secrets
    return store


async def put_secret(request: Request) -> Response:
    """Store ``{"value": "...", "workflows": [...]}`` under the name; 200 with the name, scope and times
    (never the value)."""
    body = await read_document(request)
    if not isinstance(body, dict) or "value" not in body or not set(body) <= {"value", "workflows"}:
        raise InvalidInput('the body must be {"value": "<the secret>"} (and optionally "workflows": [ids])',
                           field="value")
    meta = await _store(request).put(request.path_params["name"], body["value"], workflows=body.get("workflows"))
    return JSONResponse(_view(meta))


async def get_secret(request: Request) -> Response:
    """The name and times of one secret (404 when unknown); never its value."""
    return JSONResponse(_view(await _store(request).describe(request.path_params["name"])))


async def list_secrets(request: Request) -> Response:
    items = [_view(meta) for meta in await _store(request).list()]
    return JSONResponse({"items": items, "total": len(items)})


async def delete_secret(request: Request) -> Response:
    await _store(request).delete(request.path_params["name"])
    return Response(status_code=204)


routes = [
    Route("/v1/secrets", list_secrets, methods=["GET"]),
    Route("/v1/secrets/{name}", get_secret, methods=["GET"]),
    Route("/v1/secrets/{name}", put_secret, methods=["PUT"]),
    Route("/v1/secrets/{name}", delete_secret, methods=["DELETE"]),
]
