"""The OpenAPI document served at ``/v1/openapi.json``, built from the routes and the models.

Each served route is described by its declaration in :data:`gateway.apiops.OPERATIONS` (parameters,
body, answers, errors; :mod:`gateway.apispec`). A route without one still appears, with a generic
answer, and ``tests/unit/test_openapi_spec.py`` fails until it is declared. The pool forwarder's
catch-all routes appear as the pool service's concrete paths. The document is fuzzed by
``tests/integration/test_openapi_fuzz.py`` (schemathesis).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from flowcore.models import WorkflowDefinition
from gateway.apimodels import ErrorBody
from gateway.apiops import OPERATIONS
from gateway.apispec import Components, Op, operation
from gateway.routes.state import AppendBody, CasBody, IncrementBody, SetBody

BODIES: dict[tuple[str, str], type[Any]] = {
    ("POST", "/v1/workflows"): WorkflowDefinition,
    ("PUT", "/v1/workflows/{workflow_id}/state/{key}"): SetBody,
    ("POST", "/v1/workflows/{workflow_id}/state/{key}/increment"): IncrementBody,
    ("POST", "/v1/workflows/{workflow_id}/state/{key}/append"): AppendBody,
    ("POST", "/v1/workflows/{workflow_id}/state/{key}/cas"): CasBody,
}


def served(routes: Sequence[BaseRoute]) -> list[tuple[str, str]]:
    """Every (method, Starlette path) the routes serve; HEAD goes with GET."""
    return [
        (method, route.path)
        for route in routes
        if isinstance(route, Route) and route.methods is not None
        for method in sorted(route.methods - {"HEAD"})
    ]


def declared(routes: Sequence[BaseRoute]) -> list[Op]:
    """The declarations of the served routes, in declaration order (a forwarder's: those it serves)."""
    serving = set(served(routes))
    return [op for op in OPERATIONS if (op.method, op.route_path) in serving]


def undeclared(routes: Sequence[BaseRoute]) -> list[tuple[str, str]]:
    """The served (method, path) pairs without a declaration; a forwarder's catch-all counts as declared
    when some concrete path it serves is."""
    covered = {(op.method, op.route_path) for op in OPERATIONS}
    forwarders = {op.route_path for op in OPERATIONS if op.served_by is not None}
    return [(m, p) for m, p in served(routes) if (m, p) not in covered and p not in forwarders]


def build_document(routes: Sequence[BaseRoute], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    components = Components()
    components.ref(ErrorBody, mode="serialization")
    ops = declared(routes)
    for decl in ops:
        paths.setdefault(decl.path, {})[decl.method.lower()] = operation(decl, components)
    covered = {(decl.method, decl.route_path) for decl in ops}
    schemas: dict[str, Any] = components.schemas
    for route in routes:
        if not isinstance(route, Route) or route.methods is None:
            continue
        for method in sorted(route.methods - {"HEAD"}):
            if (method, route.path) in covered or "{rest" in route.path:
                continue  # declared; or a catch-all, which only its concrete paths may describe
            doc = (route.endpoint.__doc__ or route.endpoint.__name__).strip()
            op: dict[str, Any] = {
                "operationId": route.endpoint.__name__,
                "summary": doc.splitlines()[0],
                "responses": {"default": {"description": "JSON; errors as {error, message, field}",
                                          "content": {"application/json": {"schema": {}}}}},
            }
            params = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in route.param_convertors
            ]
            if params:
                op["parameters"] = params
            if route.path != "/healthz":
                op["security"] = [{"bearer": []}]
            model = BODIES.get((method, route.path))
            if model is not None:
                schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
                ref = {"$ref": f"#/components/schemas/{model.__name__}"}
                content = {"application/json": {"schema": ref}}
                if model is WorkflowDefinition:
                    content["application/yaml"] = {"schema": ref}
                op["requestBody"] = {"required": True, "content": content}
            paths.setdefault(route.path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Agentainer Flow API", "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


async def openapi(request: Request) -> Response:
    """The OpenAPI 3.1 document of this API."""
    return JSONResponse(request.app.state.openapi)
