"""The OpenAPI document is complete: every served route is declared, with its parameters, body and
answers, and the pool forwarder appears as the pool service's concrete paths (issue 13).

A route added without a declaration in ``gateway.apiops`` fails :func:`test_every_served_route_is_declared`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from flowcore.ids import ID_PATTERN
from flowcore.settings import GatewaySettings
from gateway import apimodels, openapi
from gateway.apiops import OPERATIONS
from gateway.app import create_app
from gateway.routes.pools import forwarded_path
from pool.agents import AgentSpec
from pool.routes import agents as pool_agents
from pool.routes import kept as pool_kept
from pool.routes import tasks as pool_tasks
from pool.routes.tasks import ResizeRequest


@pytest.fixture(scope="module")
def app() -> Any:
    return create_app(GatewaySettings())


@pytest.fixture(scope="module")
def doc(app: Any) -> dict[str, Any]:
    document: dict[str, Any] = app.state.openapi
    return document


def gateway_routes(app: Any) -> list[Route]:
    return [r for r in app.routes if isinstance(r, Route) and not r.path.startswith("/ui")]


def test_the_document_is_valid_openapi(doc: dict[str, Any]) -> None:
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}


def test_every_served_route_is_declared(app: Any) -> None:
    assert openapi.undeclared(gateway_routes(app)) == []


def test_an_undeclared_route_is_caught(app: Any) -> None:
    async def new_thing(request: Any) -> Any:  # pragma: no cover - never called
        raise AssertionError

    routes = [*gateway_routes(app), Route("/v1/new-thing/{thing_id}", new_thing, methods=["GET", "POST"])]
    assert openapi.undeclared(routes) == [("GET", "/v1/new-thing/{thing_id}"), ("POST", "/v1/new-thing/{thing_id}")]
    # It still shows in the document (generically), so a client sees it exists.
    assert "/v1/new-thing/{thing_id}" in openapi.build_document(routes, "test")["paths"]


def test_no_placeholder_paths_and_ids_follow_the_rule(doc: dict[str, Any]) -> None:
    text = json.dumps(doc["paths"])
    assert "{rest" not in text and ":path}" not in text
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    assert param["schema"]["pattern"] == ID_PATTERN, (method, path, param["name"])
                    assert f"{{{param['name']}}}" in path


def test_every_operation_documents_answers_and_one_error_body(doc: dict[str, Any]) -> None:
    assert set(doc["components"]["schemas"]["ErrorBody"]["required"]) == {"error", "message"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            codes = {int(code) for code in op["responses"]}
            assert any(200 <= c < 300 for c in codes), (method, path)
            assert 503 in codes, (method, path)
            for code in codes - {c for c in codes if c < 400}:
                schema = op["responses"][str(code)]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code)
            public = op["security"] == []
            assert public == (path in ("/healthz", "/v1/openapi.json") or path.startswith("/v1/hooks/"))
            if not public:
                assert {401, 403, 421, 429} <= codes, (method, path)


def test_bodies_and_query_parameters_are_described(doc: dict[str, Any]) -> None:
    paths = doc["paths"]
    create = paths["/v1/workflows"]["post"]
    assert set(create["requestBody"]["content"]) == {"application/json", "application/yaml"}
    assert {p["name"] for p in create["parameters"]} == {"start", "priority"}
    listing = {p["name"]: p["schema"] for p in paths["/v1/workflows"]["get"]["parameters"]}
    assert listing["limit"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert "enum" in listing["status"]
    bulk = {p["name"] for p in paths["/v1/workflows"]["delete"]["parameters"]}
    assert bulk == {"status", "name", "label", "created_before", "finished_before", "older_than", "limit", "dry_run"}
    fire = {p["name"]: p["in"] for p in paths["/v1/triggers/{trigger_id}/fire"]["post"]["parameters"]}
    assert fire["Idempotency-Key"] == "header"
    assert paths["/v1/triggers/{trigger_id}/fire"]["post"]["requestBody"]["required"] is False
    assert "requestBody" in paths["/v1/workflows/{workflow_id}/state/{key}/cas"]["post"]


def test_the_forwarded_pool_routes_are_the_pool_services_user_routes(doc: dict[str, Any]) -> None:
    """Each pool route the forwarder lets through is declared (as its concrete path), and nothing else."""
    reachable: set[tuple[str, str]] = set()
    for route in [*pool_tasks.routes, *pool_agents.routes, *pool_kept.routes]:
        assert isinstance(route, Route)
        sample = route.path.replace("{key}", "k1").replace("{agent_id}", "a1").replace("{container_id}", "c1")
        try:
            forwarded_path(sample.encode())
        except Exception:
            continue  # /v1/tasks: not reachable through the gateway
        for method in route.methods or ():
            if method != "HEAD":
                reachable.add((method, route.path))
    declared = {(op.method, op.path) for op in OPERATIONS if "pools" in op.tags}
    assert reachable == declared
    assert all(method.lower() in doc["paths"][path] for method, path in declared)


def test_the_pool_bodies_match_the_pool_services_models() -> None:
    """The gateway describes the pool's bodies without importing the pool: these keep them in step."""
    ours = apimodels.AgentSpec.model_json_schema(by_alias=True)["properties"]
    theirs = AgentSpec.model_json_schema(by_alias=True)["properties"]
    assert set(ours) == set(theirs)
    assert ours["name"]["pattern"] == theirs["name"]["pattern"]
    assert ours["on_error"]["enum"] == theirs["on_error"]["enum"]
    assert apimodels.Resize.model_json_schema()["properties"] == ResizeRequest.model_json_schema()["properties"]


def test_operation_ids_are_unique(doc: dict[str, Any]) -> None:
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
