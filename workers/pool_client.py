"""The worker's side of the worker -> pool HTTP boundary (:mod:`flowcore.pool_api`).

Keep-alive HTTP to the pool service. Transport failures become a retriable ``runtime`` task error:
httpx errors never reach the engine. The pool service to use is chosen per task by
:mod:`workers.routing` from the registrations pool services write to Redis, falling back to the
configured URL. Every call carries the pool token (``Authorization: Bearer``).
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from flowcore import pooltoken
from flowcore.pool_api import ErrorKind, TaskError, TaskRequest, TaskResult
from flowcore.tracing import inject_headers

log = logging.getLogger(__name__)

CONNECT_RETRIES = 3


class PoolClient:
    def __init__(
        self, *, margin_s: float = 30.0, client: httpx.AsyncClient | None = None, token: str | None = None
    ) -> None:
        """``token``: the pool token (:func:`flowcore.pooltoken.resolve`); the pool answers 401 without it."""
        self._auth = pooltoken.bearer(token) if token else {}
        self._client = client or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
            timeout=httpx.Timeout(30.0, connect=5.0),
        )
        self._margin_s = margin_s

    async def aclose(self) -> None:
        await self._client.aclose()

    async def execute(self, base_url: str, request: TaskRequest) -> TaskResult:
        read_timeout_s = (request.timeout_s or 7 * 86400.0) + self._margin_s
        timeout = httpx.Timeout(read_timeout_s, connect=5.0)
        body = request.model_dump(mode="json")
        headers = {**inject_headers(), **self._auth}  # W3C traceparent of the current (step) span
        last_error = ""
        for attempt in range(CONNECT_RETRIES):
            try:
                response = await self._client.post(
                    f"{base_url}/v1/tasks", json=body, timeout=timeout, headers=headers
                )
            except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
                last_error = f"pool service {base_url} unreachable: {exc!r}"
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            except httpx.HTTPError as exc:
                last_error = f"pool service {base_url} failed: {exc!r}"
                break
            if response.status_code == 200:
                return TaskResult.model_validate_json(response.content)
            last_error = f"pool service answered {response.status_code}: {response.text[:500]}"
            if response.status_code == 413:  # the step's input (or env, or source) is too large to send
                size = len(response.request.content)
                return _failed(
                    request,
                    ErrorKind.INPUT,
                    f"the task is {size} bytes of JSON (its input, env and function source), more than the pool "
                    "service takes (FLOW_MAX_BODY_BYTES of the pool; by default one whole step output and a module "
                    "source, 21 MiB): pass large data by "
                    "reference (a path or URL in the input, an object store) instead of inline",
                )
            if response.status_code < 500:
                return _failed(request, ErrorKind.RUNTIME, last_error)
            await asyncio.sleep(0.2 * (attempt + 1))
        return _failed(request, ErrorKind.POOL_UNAVAILABLE, last_error)

    async def cancel(self, base_url: str, task_id: str) -> None:
        try:
            await self._client.delete(f"{base_url}/v1/tasks/{task_id}", timeout=5.0, headers=self._auth)
        except httpx.HTTPError as exc:
            log.warning("cancel of %s at %s failed: %r", task_id, base_url, exc)


def _failed(request: TaskRequest, kind: ErrorKind, message: str) -> TaskResult:
    return TaskResult(task_id=request.task_id, ok=False, error=TaskError(kind=kind, message=message))
