"""Fuzzing the gateway through its own OpenAPI document (schemathesis): no 5xx, no answer outside the
document (issue 13). docs/api.md says what the document covers; docs/security.md mentions this pass.

The gateway runs in this process under uvicorn (its own thread and event loop) on the session's real
Redis, with an admin token, so every route is reachable. Its pool service URL points at a closed port:
the forwarded pool and agent routes then answer 503 ``service_unavailable`` naming the pool service, the
one 5xx this pass accepts, and only from those routes (their 4xx checks, done by the gateway before it
forwards, are fuzzed like the rest). No container is started: with no pool service nothing can.

For each operation schemathesis generates valid and invalid parameters and bodies (a bounded number
of examples each, so the pass takes about two minutes on two cores) and checks every answer:

- not a 5xx (:func:`no_server_error`);
- its status code is documented for the operation, its content type is the documented one, its
  body (JSON, or each server-sent event) validates against the documented schema, errors against the
  one ``ErrorBody``, and its documented headers (``Location``, ``Retry-After``) have their types.

Excluded, with why:

- ``GET /v1/events``: the global event stream never ends by design (it is the dashboard's live feed),
  so a generated valid request would hold the test forever. Its parameters are checked by
  ``tests/integration/test_event_stream.py`` (422 naming ``since`` / ``Last-Event-ID``) and its bounds
  by the stream-cap tests.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, settings
from pydantic import SecretStr
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from flowcore.settings import GatewaySettings
from gateway.app import create_app
from tests.conftest import RedisServer
from tests.ports import free_port

TOKEN = "fuzz-admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES_PER_OPERATION = 100
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance, response_headers_conformance]
EXCLUDED = {("GET", "/v1/events")}
HEAVY = {("POST", "/v1/workflows")}


class Served:
    """The gateway under uvicorn in a thread of its own (its own loop, its own Redis connection)."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        for _ in range(1000):
            if self.server.started or not self.thread.is_alive():
                break
            threading.Event().wait(0.01)
        if not self.server.started:
            pytest.fail("the gateway did not start under uvicorn")
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def gateway(redis_server: RedisServer) -> Iterator[tuple[str, dict[str, Any]]]:
    closed_pool = f"http://127.0.0.1:{free_port()}"  # nothing listens: forwarded routes answer 503
    cfg = GatewaySettings(
        redis={"url": redis_server.url, "prefix": f"fuzz-{uuid.uuid4().hex[:8]}"},
        tokens=[SecretStr(TOKEN)],
        pool={"url": closed_pool},
    )
    app = create_app(cfg)
    with Served(app) as base_url:
        yield base_url, app.state.openapi


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def seeds(gateway: tuple[str, dict[str, Any]], http: requests.Session) -> dict[str, str]:
    """Resources whose ids the seeded pass puts in the path: a workflow with a state key and a webhook
    trigger, a cancelled one, one waiting for an approval, a secret; made anew for each operation, as an
    earlier one may have deleted or decided them."""
    base_url, _ = gateway
    definition = {"name": "fuzz-seed", "steps": [{"id": "s1", "image": "agentainer-flow/python:3.11",
                                                    "command": ["python3", "-c", "print(1)"]}]}
    made = http.post(f"{base_url}/v1/workflows", json=definition, headers=AUTH, timeout=10)
    assert made.status_code == 201, made.text
    wf_id = made.json()["id"]
    put = http.put(f"{base_url}/v1/workflows/{wf_id}/state/k1", json={"value": 1}, headers=AUTH, timeout=10)
    assert put.status_code == 200, put.text
    trigger = http.post(f"{base_url}/v1/workflows/{wf_id}/triggers", json={"type": "webhook"}, headers=AUTH, timeout=10)
    assert trigger.status_code == 201, trigger.text
    done = http.post(f"{base_url}/v1/workflows", json={**definition, "name": "fuzz-done"}, headers=AUTH, timeout=10)
    cancelled = http.post(f"{base_url}/v1/workflows/{done.json()['id']}/cancel", headers=AUTH, timeout=10)
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled", cancelled.text
    gated = http.post(f"{base_url}/v1/workflows", params={"start": "true"}, headers=AUTH, timeout=10,
                      json={"name": "fuzz-gate", "steps": [{"id": "gate", "type": "approval", "timeout": "1h"}]})
    assert gated.status_code == 201 and gated.json()["status"] == "running", gated.text
    secret = http.put(f"{base_url}/v1/secrets/fuzz-secret", json={"value": "s3cr3t-value"}, headers=AUTH, timeout=10)
    assert secret.status_code == 200, secret.text
    return {"workflow_id": wf_id, "key": "k1", "step_id": "s1", "trigger_id": trigger.json()["id"],
            "name": "fuzz-secret", "finished": done.json()["id"], "gated": gated.json()["id"]}


def documented() -> Any:
    """The document the gateway serves (built with the app, no I/O), minus the excluded operations."""
    document = create_app(GatewaySettings()).state.openapi
    return schemathesis.openapi.from_dict(document).exclude(func=lambda ctx: key(ctx.operation) in EXCLUDED)


def key(operation: Any) -> tuple[str, str]:
    return operation.method.upper(), operation.path


def forwarded(operation: Any) -> bool:
    """A route the gateway forwards to the pool service (tagged ``pools`` in the document)."""
    return "pools" in (operation.definition.raw.get("tags") or [])


schema = documented()
# Schemathesis's coverage phase (boundary and invalid values, one parameter at a time) does not finish
# in minutes on the workflow definition's large schema: that body gets random generation only.
light = schema.exclude(func=lambda ctx: key(ctx.operation) in HEAVY)
heavy = schema.include(func=lambda ctx: key(ctx.operation) in HEAVY)
# With real ids in the path: valid requests on existing resources, so success answers are checked too.
seeded = documented().include(func=lambda ctx: "{" in ctx.operation.path and not forwarded(ctx.operation))
seeded.config.generation.update(modes=["positive"])


def test_the_fuzzed_document_is_the_served_one(gateway: tuple[str, dict[str, Any]]) -> None:
    base_url, document = gateway
    assert requests.get(f"{base_url}/v1/openapi.json", timeout=10).json() == document
    assert schema.raw_schema == document


def no_server_error(case: Any, response: requests.Response) -> None:
    """No 5xx, except the forwarded routes' documented 503 while the pool service is down."""
    if response.status_code < 500:
        return
    if forwarded(case.operation) and response.status_code == 503:
        body = response.json()
        assert body["error"] == "service_unavailable" and "pool service" in body["message"], body
        return
    raise AssertionError(
        f"{case.operation.method.upper()} {case.formatted_path} answered {response.status_code}: "
        f"{response.text[:500]}\n{case.as_curl_command(headers=AUTH)}"
    )


FUZZ = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],  # explicit: schemathesis's coverage cases
    suppress_health_check=list(HealthCheck),
)


def call_and_check(case: Any, base_url: str, http: requests.Session) -> requests.Response:
    response = case.call(base_url=base_url, session=http, headers=AUTH, timeout=30)
    no_server_error(case, response)
    case.validate_response(response, checks=CHECKS, headers=AUTH)
    return response


@light.parametrize()
@FUZZ
def test_the_gateway_answers_as_documented(
    case: Any, gateway: tuple[str, dict[str, Any]], http: requests.Session
) -> None:
    call_and_check(case, gateway[0], http)


@heavy.parametrize()
@settings(FUZZ, max_examples=EXAMPLES_PER_OPERATION * 2, phases=[Phase.generate])
def test_large_bodies_are_answered_as_documented(
    case: Any, gateway: tuple[str, dict[str, Any]], http: requests.Session
) -> None:
    call_and_check(case, gateway[0], http)


@seeded.parametrize()
@settings(FUZZ, max_examples=EXAMPLES_PER_OPERATION // 2, phases=[Phase.generate])
def test_existing_resources_are_answered_as_documented(
    case: Any, gateway: tuple[str, dict[str, Any]], http: requests.Session, seeds: dict[str, str]
) -> None:
    """The same checks with the path's ids replaced by ids that exist (a workflow, its state key, a
    trigger, a secret; a cancelled workflow for the streams and retries, a waiting approval step): the
    success answers meet their schemas too. Deleting ops may remove a seed; the
    operations after it then see 404, documented as well."""
    ids = dict(seeds)
    path = case.operation.path
    if path.endswith(("/events", "/logs", "/retry")):  # streams of a finished workflow end at once
        ids["workflow_id"] = seeds["finished"]
    if "/steps/" in path:  # a waiting approval step
        ids["workflow_id"], ids["step_id"] = seeds["gated"], "gate"
    case.path_parameters = {name: ids.get(name, value) for name, value in (case.path_parameters or {}).items()}
    call_and_check(case, gateway[0], http)


def test_a_wrong_answer_fails_the_checks(gateway: tuple[str, dict[str, Any]], http: requests.Session) -> None:
    """The checks can fail: an undocumented status, and a documented one whose body is not the schema's."""
    operation = schema["/v1/workflows"]["GET"]
    case = operation.Case(query={"limit": 5})
    response = http.get(f"{gateway[0]}/v1/workflows", params={"limit": 5}, headers=AUTH, timeout=30)
    assert response.status_code == 200
    case.validate_response(response, checks=CHECKS, headers=AUTH)
    response.status_code = 418
    with pytest.raises(FailureGroup, match="Undocumented status code"):
        case.validate_response(response, checks=CHECKS, headers=AUTH)
    response.status_code = 200
    response._content = json.dumps({"items": "not a list"}).encode()
    with pytest.raises(FailureGroup, match="Response violates schema"):
        case.validate_response(response, checks=CHECKS, headers=AUTH)
    with pytest.raises(AssertionError):
        no_server_error(case, type("R", (), {"status_code": 500, "text": "boom"})())
