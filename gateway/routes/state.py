"""``/v1/workflows/{id}/state``: the workflow's shared state and its atomic operations."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowcore.state import StateStore
from gateway.bodies import read_model


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SetBody(_Body):
    value: Any = Field(description="Any JSON value.")


class IncrementBody(_Body):
    by: float | int = 1


class AppendBody(_Body):
    value: Any


class CasBody(_Body):
    expected: Any = None
    value: Any
    expect_missing: bool = Field(False, description="Succeed only when the key does not exist yet.")


def states(request: Request) -> StateStore:
    store: StateStore = request.app.state.states
    return store


def _ids(request: Request) -> tuple[str, str]:
    return request.path_params["workflow_id"], request.path_params.get("key", "")


async def get_state(request: Request) -> Response:
    wf_id, _ = _ids(request)
    return JSONResponse({"workflow_id": wf_id, "state": await states(request).get_all(wf_id)})


async def get_key(request: Request) -> Response:
    wf_id, key = _ids(request)
    return JSONResponse({"key": key, "value": await states(request).get(wf_id, key)})


async def set_key(request: Request) -> Response:
    wf_id, key = _ids(request)
    body = await read_model(request, SetBody)
    return JSONResponse({"key": key, "value": await states(request).set(wf_id, key, body.value)})


async def delete_key(request: Request) -> Response:
    wf_id, key = _ids(request)
    await states(request).delete(wf_id, key)
    return Response(status_code=204)


async def increment_key(request: Request) -> Response:
    wf_id, key = _ids(request)
    body = await read_model(request, IncrementBody)
    return JSONResponse({"key": key, "value": await states(request).increment(wf_id, key, body.by)})


async def append_key(request: Request) -> Response:
    wf_id, key = _ids(request)
    body = await read_model(request, AppendBody)
    return JSONResponse({"key": key, "value": await states(request).append(wf_id, key, body.value)})


async def cas_key(request: Request) -> Response:
    """Compare-and-set: ``{"swapped": false}`` (200) when the current value is not ``expected``."""
    wf_id, key = _ids(request)
    body = await read_model(request, CasBody)
    swapped = await states(request).compare_and_set(
        wf_id, key, body.expected, body.value, expect_missing=body.expect_missing
    )
    return JSONResponse({"key": key, "swapped": swapped})


routes = [
    Route("/v1/workflows/{workflow_id}/state", get_state, methods=["GET"]),
    Route("/v1/workflows/{workflow_id}/state/{key}", get_key, methods=["GET"]),
    Route("/v1/workflows/{workflow_id}/state/{key}", set_key, methods=["PUT"]),
    Route("/v1/workflows/{workflow_id}/state/{key}", delete_key, methods=["DELETE"]),
    Route("/v1/workflows/{workflow_id}/state/{key}/increment", increment_key, methods=["POST"]),
    Route("/v1/workflows/{workflow_id}/state/{key}/append", append_key, methods=["POST"]),
    Route("/v1/workflows/{workflow_id}/state/{key}/cas", cas_key, methods=["POST"]),
]
