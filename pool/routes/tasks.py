"""``/v1/tasks`` (run, cancel) and ``/v1/pools`` (stats, resize, drain)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowcore.errors import InvalidInput, NotFound
from flowcore.pool_api import TaskRequest
from flowcore.tracing_spans import PoolTask
from pool.dispatch import Dispatcher
from pool.routes import parse_body
from pool.services import PoolServices

log = logging.getLogger(__name__)


class ResizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_size: int = Field(ge=0, le=256)
    max_size: int = Field(ge=1, le=256)

    @model_validator(mode="after")
    def _sizes(self) -> ResizeRequest:
        if self.min_size > self.max_size:
            raise ValueError("min_size must not exceed max_size")
        return self


def _services(request: Request) -> PoolServices:
    services: PoolServices = request.app.state.services
    return services


async def run_task(request: Request) -> Response:
    """Run one task to its end; the step's own failure is a 200 with ``ok: false``.

    The caller (a worker) waits on this request for the task's end: when it goes away (killed, or
    gave up), nobody can commit the result any more, so the task is cancelled at once instead of
    running on beside the attempt that takes it over.
    """
    task = await parse_body(request, TaskRequest)
    dispatcher = _services(request).dispatcher
    with PoolTask(request.headers, task) as span:  # the step process is parented on this span
        running = asyncio.ensure_future(dispatcher.execute(task))
        watcher = asyncio.ensure_future(_cancel_when_the_caller_leaves(request, dispatcher, task.task_id))
        try:
            result = await asyncio.shield(running)
        finally:
            watcher.cancel()
        span.result(result)
    # Serialised by pydantic's core in one pass (a step's hot path), the same JSON as model_dump.
    return Response(result.model_dump_json(), media_type="application/json")


async def _cancel_when_the_caller_leaves(request: Request, dispatcher: Dispatcher, task_id: str) -> None:
    # The body has been read: the next ASGI message is the client's disconnect, if it comes.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            log.warning("task %s: its caller went away; cancelling it", task_id)
            with contextlib.suppress(NotFound):
                await dispatcher.cancel(task_id, reason="its caller went away")
            return


async def cancel_task(request: Request) -> Response:
    task_id = request.path_params["task_id"]
    await _services(request).dispatcher.cancel(task_id)
    return JSONResponse({"task_id": task_id, "cancelled": True}, status_code=202)


async def list_pools(request: Request) -> Response:
    return JSONResponse(_services(request).manager.report())


async def get_pool(request: Request) -> Response:
    return JSONResponse(_services(request).manager.get(request.path_params["key"]).report())


async def resize_pool(request: Request) -> Response:
    pool = _services(request).manager.get(request.path_params["key"])
    body = await parse_body(request, ResizeRequest)
    if body.min_size > body.max_size:  # pragma: no cover - the model checks it
        raise InvalidInput("min_size must not exceed max_size", field="min_size")
    pool.resize(body.min_size, body.max_size)
    return JSONResponse(pool.report())


async def drain_pool(request: Request) -> Response:
    pool = _services(request).manager.get(request.path_params["key"])
    removed = await pool.drain()
    return JSONResponse({"key": pool.key.hash, "removed_idle": removed, "busy": pool.busy_count})


routes = [
    Route("/v1/tasks", run_task, methods=["POST"]),
    Route("/v1/tasks/{task_id:path}", cancel_task, methods=["DELETE"]),
    Route("/v1/pools", list_pools, methods=["GET"]),
    Route("/v1/pools/{key}", get_pool, methods=["GET"]),
    Route("/v1/pools/{key}/resize", resize_pool, methods=["POST"]),
    Route("/v1/pools/{key}/drain", drain_pool, methods=["POST"]),
]
