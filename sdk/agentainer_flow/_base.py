"""The HTTP core of :class:`~agentainer_flow.WorkflowClient`: one ``httpx.AsyncClient`` (``client.session``)
and the translation of every transport failure and error answer into the SDK's exceptions."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from agentainer_flow.errors import ClientError, TransportError, ValidationError, check_timeout

DEFAULT_URL = "http://localhost:8081"
DEFAULT_TOKEN = "default-token"
USER_AGENT = "agentainer-flow-python/0.1.0"


def seg(value: str) -> str:
    """One URL path segment (ids and state keys may hold ``/`` or spaces)."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"an id or key must be a non-empty string, got {value!r}")
    return quote(value, safe="")


class BaseClient:
    """Connection handling shared by the client's method groups."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """``base_url`` and ``token`` default to ``$FLOW_URL`` / ``$FLOW_TOKEN``, then to
        ``http://localhost:8081`` and ``default-token``. ``transport`` lets tests plug in
        ``httpx.ASGITransport`` or ``httpx.MockTransport``."""
        self.timeout = check_timeout(timeout, "timeout")
        self.base_url = (base_url or os.environ.get("FLOW_URL") or DEFAULT_URL).rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValidationError(f"base_url must start with http:// or https://, got {self.base_url!r}", field="base_url")
        token = token or os.environ.get("FLOW_TOKEN") or DEFAULT_TOKEN
        self.session = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=self.timeout,
            transport=transport,
            headers={"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT, **(headers or {})},
        )
        """The ``httpx.AsyncClient`` used for every request: ``client.session.headers.update(...)``."""

    def __repr__(self) -> str:  # never shows the token
        return f"<{type(self).__name__} {self.base_url}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (what ``async with`` does on exit)."""
        await self.session.aclose()

    # ---- requests ----------------------------------------------------------------------------
    async def _send(
        self, method: str, path: str, *, stream: bool = False, timeout: Any = None, **kwargs: Any
    ) -> httpx.Response:
        try:
            request = self.session.build_request(
                method, path, timeout=timeout if timeout is not None else self.session.timeout, **kwargs
            )
            response = await self.session.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            raise TransportError(f"{method} {path}: no answer from {self.base_url} in time ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise TransportError(f"{method} {path}: cannot reach {self.base_url}: {exc or type(exc).__name__}") from exc
        if response.status_code >= 400:
            if stream:
                try:
                    await response.aread()
                except httpx.HTTPError:
                    pass
                finally:
                    await response.aclose()
            raise error_from_response(response, method, path)
        return response

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and return its JSON body (``None`` for an empty one)."""
        response = await self._send(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ClientError(
                response.status_code, f"the server answered something that is not JSON: {response.text[:200]!r}",
                code="bad_response", method=method, path=path,
            ) from exc

    async def _stream_lines(self, path: str, params: dict[str, Any] | None = None) -> LineStream:
        response = await self._send("GET", path, params=params, stream=True, timeout=httpx.Timeout(self.timeout, read=None))
        return LineStream(response)


def error_from_response(response: httpx.Response, method: str, path: str) -> ClientError:
    """The server's ``{"error", "message", "field", "details"}`` body as a :class:`ClientError`."""
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        body = None
    if isinstance(body, dict):
        message = str(body.get("message") or body.get("detail") or body.get("error") or response.reason_phrase)
        return ClientError(
            response.status_code, message, code=body.get("error"), field=body.get("field"),
            details=body.get("details"), method=method, path=path,
        )
    text = response.text.strip()[:300] if response.content else ""
    return ClientError(response.status_code, text or response.reason_phrase or "error", method=method, path=path)


class LineStream:
    """Lines of a streamed text answer, each keeping its ``"\\n"``; ``async for line in stream``.

    Closes the connection when exhausted, on :meth:`aclose`, or at the end of ``async with``.
    """

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._iter: AsyncIterator[str] | None = None

    def __aiter__(self) -> LineStream:
        return self

    async def __anext__(self) -> str:
        if self._iter is None:
            self._iter = self._lines()
        return await self._iter.__anext__()

    async def _lines(self) -> AsyncIterator[str]:
        buffer = ""
        try:
            async for chunk in self._response.aiter_text():
                buffer += chunk
                while "\n" in buffer:
                    line, buffer = buffer.split("\n", 1)
                    yield line + "\n"
            if buffer:
                yield buffer
        except httpx.HTTPError as exc:
            raise TransportError(f"log stream broke: {exc or type(exc).__name__}") from exc
        finally:
            await self._response.aclose()

    async def aclose(self) -> None:
        await self._response.aclose()

    async def __aenter__(self) -> LineStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
