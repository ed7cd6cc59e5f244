"""The OpenAPI document served at ``/v1/openapi.json``, built from the routes and the models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from flowcore.models import WorkflowDefinition
from gateway.routes.state import AppendBody, CasBody, IncrementBody, SetBody

BODIES: dict[tuple[str, str], type[Any]] = {
    ("POST", "/v1/workflows"): WorkflowDefinition,
    ("PUT", "/v1/workflows/{workflow_id}/state/{key}"): SetBody,
    ("POST", "/v1/workflows/{workflow_id}/state/{key}/increment"): IncrementBody,
    ("POST", "/v1/workflows/{workflow_id}/state/{key}/append"): AppendBody,
    ("POST", "/v1/workflows/{workflow_id}/state/{key}/cas"): CasBody,
}


def build_document(routes: Sequence[BaseRoute], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for route in routes:
        if not isinstance(route, Route) or route.methods is None:
            continue
        for method in sorted(route.methods - {"HEAD"}):
            doc = (route.endpoint.__doc__ or route.endpoint.__name__).strip()
            op: dict[str, Any] = {
                "operationId": route.endpoint.__name__,
                "summary": doc.splitlines()[0],
                "responses": {"default": {"description": "JSON; errors as {error, message, field}"}},
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
