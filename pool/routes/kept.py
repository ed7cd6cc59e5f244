"""``/v1/kept``: containers quarantined by a cleanup policy ``keep`` (ADR 014).

- ``GET    /v1/kept[?workflow_id=W]``        ``{"kept": [KeptContainer, ...]}``, oldest first
- ``DELETE /v1/kept?workflow_id=W``          remove every kept container of a workflow: ``{"removed": n}``
- ``GET    /v1/kept/{id}``                   one record (``id``: the container id, or 12+ of its first hex digits)
- ``DELETE /v1/kept/{id}``                   remove it now (204)
- ``GET    /v1/kept/{id}/logs[?tail=N]``     the container's output (text)
- ``GET    /v1/kept/{id}/files[?path=P]``    a tar of ``P`` (default ``/flow/task``; relative paths are taken
  under it): regular files and directories only, at most ``kept_copy_max_bytes`` (413 past it)
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from flowcore.errors import InvalidInput
from flowcore.ids import check_id
from pool.kept import Keeper

_CONTAINER_ID = re.compile(r"^[0-9a-f]{12,64}$")


def _keeper(request: Request) -> Keeper:
    keeper: Keeper = request.app.state.services.keeper
    return keeper


async def _resolve(request: Request) -> str:
    """The full container id of the path's ``container_id`` (422 when malformed, 404 when unknown)."""
    given = request.path_params["container_id"]
    if not _CONTAINER_ID.match(given):
        raise InvalidInput("container_id must be 12 to 64 lowercase hex digits", field="container_id")
    return (await _keeper(request).get(given)).container_id


def _workflow_param(request: Request) -> str | None:
    value = request.query_params.get("workflow_id")
    return check_id(value, "workflow_id") if value is not None else None


async def list_kept(request: Request) -> Response:
    records = await _keeper(request).list(_workflow_param(request))
    return JSONResponse({"kept": [r.model_dump(mode="json") for r in records]})


async def remove_for_workflow(request: Request) -> Response:
    workflow_id = _workflow_param(request)
    if workflow_id is None:
        raise InvalidInput("workflow_id is required to remove kept containers in bulk", field="workflow_id")
    return JSONResponse({"removed": await _keeper(request).remove_workflow(workflow_id)})


async def get_kept(request: Request) -> Response:
    record = await _keeper(request).get(await _resolve(request))
    return JSONResponse(record.model_dump(mode="json"))


async def remove_kept(request: Request) -> Response:
    await _keeper(request).remove(await _resolve(request))
    return Response(status_code=204)


async def kept_logs(request: Request) -> Response:
    container_id = await _resolve(request)
    tail_param = request.query_params.get("tail")
    try:
        tail = int(tail_param) if tail_param else None
    except ValueError:
        raise InvalidInput("tail must be an integer", field="tail") from None
    if tail is not None and not 0 < tail <= 100_000:
        raise InvalidInput("tail must be between 1 and 100000", field="tail")
    return PlainTextResponse(await _keeper(request).logs(container_id, tail=tail))


async def kept_files(request: Request) -> Response:
    container_id = await _resolve(request)
    try:
        packed = await _keeper(request).copy(container_id, request.query_params.get("path"))
    except ValueError as exc:
        raise InvalidInput(f"path: {exc}", field="path") from None
    headers = {
        "X-Flow-Files": str(packed.files),
        "X-Flow-Dirs": str(packed.dirs),
        "X-Flow-Skipped": str(len(packed.skipped)),
    }
    return Response(packed.data, media_type="application/x-tar", headers=headers)


routes = [
    Route("/v1/kept", list_kept, methods=["GET"]),
    Route("/v1/kept", remove_for_workflow, methods=["DELETE"]),
    Route("/v1/kept/{container_id}", get_kept, methods=["GET"]),
    Route("/v1/kept/{container_id}", remove_kept, methods=["DELETE"]),
    Route("/v1/kept/{container_id}/logs", kept_logs, methods=["GET"]),
    Route("/v1/kept/{container_id}/files", kept_files, methods=["GET"]),
]
