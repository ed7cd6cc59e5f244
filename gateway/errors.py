"""Every error the API answers is JSON: ``{"error": code, "message": ..., "field": ...}``.

User mistakes are 4xx with a message naming the field; only our own bugs are 500, and those never
show a traceback to the caller. An unreachable dependency is 503 with ``Retry-After``, on every route:
a Redis connection error or timeout that no route translated itself is answered like the rest.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from flowcore.errors import FlowError, ServiceUnavailable

log = logging.getLogger(__name__)

# What a 503 asks clients to wait before trying again: about one Redis restart or reconnect backoff.
RETRY_AFTER_S = 2


def location(loc: tuple[int | str, ...]) -> str:
    """``('steps', 1, 'map', 'items')`` -> ``steps[1].items`` (the discriminator tag is dropped)."""
    out = ""
    tags = {"sequential", "parallel", "map", "reduce", "branch", "decision"}
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif (i > 0 and isinstance(loc[i - 1], int) and part in tags) or part in ("ConditionLeaf", "ConditionAll", "ConditionAny", "ConditionNot"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def validation_body(exc: ValidationError, prefix: str = "") -> dict[str, Any]:
    problems = []
    for err in exc.errors(include_url=False):
        where = location(tuple(err["loc"]))
        if prefix:
            where = f"{prefix}.{where}" if where else prefix
        msg = str(err["msg"]).removeprefix("Value error, ")
        problems.append({"field": where, "message": msg})
    first = problems[0] if problems else {"field": prefix, "message": "invalid"}
    summary = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    if len(problems) > 1:
        summary += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    return {"error": "invalid_input", "message": summary, "field": first["field"], "details": problems[:20]}


async def flow_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FlowError)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if exc.status_code in (429, 503) else None
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=headers)


async def redis_unreachable(request: Request, exc: Exception) -> Response:
    log.warning("redis is unreachable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return await flow_error(request, ServiceUnavailable(f"redis is unreachable: {type(exc).__name__}"))


async def pydantic_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    return JSONResponse(validation_body(exc), status_code=422)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    body = {"error": codes.get(exc.status_code, "http_error"), "message": exc.detail or "error"}
    if exc.status_code == 404:
        body["message"] = f"no route {request.method} {request.url.path}"
    return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": "internal_error", "message": "internal error; see the gateway log"}, 500)


HANDLERS: dict[Any, Any] = {
    FlowError: flow_error,
    RedisConnectionError: redis_unreachable,  # BusyLoadingError (a restarted Redis loading its AOF) included
    RedisTimeoutError: redis_unreachable,
    ValidationError: pydantic_error,
    HTTPException: http_error,
    Exception: server_error,
}
