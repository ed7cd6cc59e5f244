"""``/v1/agents``: long-running containers (deploy, list, get, start, stop, delete, logs).

Answers carry an agent's env names with masked values (:data:`pool.agents.ENV_MASK`), never the values.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from flowcore.errors import InvalidInput
from pool.agents import AgentService, AgentSpec
from pool.routes import parse_body


def _agents(request: Request) -> AgentService:
    service: AgentService = request.app.state.services.agents
    return service


async def deploy(request: Request) -> Response:
    spec = await parse_body(request, AgentSpec)
    record = await _agents(request).deploy(spec)
    return JSONResponse(record.model_dump(mode="json"), status_code=201)


async def list_agents(request: Request) -> Response:
    records = await _agents(request).list(request.query_params.get("workflow_id"))
    return JSONResponse({"agents": [r.model_dump(mode="json") for r in records]})


async def get_agent(request: Request) -> Response:
    record = await _agents(request).get(request.path_params["agent_id"])
    return JSONResponse(record.model_dump(mode="json"))


async def start_agent(request: Request) -> Response:
    record = await _agents(request).start(request.path_params["agent_id"])
    return JSONResponse(record.model_dump(mode="json"))


async def stop_agent(request: Request) -> Response:
    record = await _agents(request).stop(request.path_params["agent_id"])
    return JSONResponse(record.model_dump(mode="json"))


async def delete_agent(request: Request) -> Response:
    await _agents(request).delete(request.path_params["agent_id"])
    return Response(status_code=204)


async def agent_logs(request: Request) -> Response:
    """The agent's output: whole (``?tail=N`` for the last lines) or ``?follow=1`` as a line stream."""
    agent_id = request.path_params["agent_id"]
    service = _agents(request)
    tail_param = request.query_params.get("tail")
    try:
        tail = int(tail_param) if tail_param else None
    except ValueError:
        raise InvalidInput("tail must be an integer", field="tail") from None
    if request.query_params.get("follow") in ("1", "true", "yes"):
        await service.get(agent_id)  # 404 before the stream starts

        async def lines() -> AsyncIterator[bytes]:
            async for chunk in service.follow(agent_id):
                yield chunk.encode()

        return StreamingResponse(lines(), media_type="text/plain; charset=utf-8")
    return PlainTextResponse(await service.logs(agent_id, tail=tail))


routes = [
    Route("/v1/agents", deploy, methods=["POST"]),
    Route("/v1/agents", list_agents, methods=["GET"]),
    Route("/v1/agents/{agent_id}", get_agent, methods=["GET"]),
    Route("/v1/agents/{agent_id}", delete_agent, methods=["DELETE"]),
    Route("/v1/agents/{agent_id}/start", start_agent, methods=["POST"]),
    Route("/v1/agents/{agent_id}/stop", stop_agent, methods=["POST"]),
    Route("/v1/agents/{agent_id}/logs", agent_logs, methods=["GET"]),
]
