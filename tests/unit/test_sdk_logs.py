"""``WorkflowClient.get_workflow_logs`` against httpx.MockTransport answering the documented shapes."""

from __future__ import annotations

import httpx
import pytest

from agentainer_flow import ClientError, ValidationError, WorkflowClient


def item(n: int, step: str = "a", source: str | None = None) -> dict[str, object]:
    return {"id": f"{n}-0", "step_id": step, "index": 0, "attempt": 1, "stream": "stdout", "line": f"l{n}",
            "ts": 1.5, "source": source or step}


async def test_whole_log_pages_with_since_and_filters() -> None:
    seen: list[httpx.QueryParams] = []
    pages = {None: [item(n) for n in range(1, 10_001)], "10000-0": [item(10_001, "m", "m#3")]}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.raw_path.startswith(b"/v1/workflows/wf%201/logs?")
        seen.append(request.url.params)
        items = pages[request.url.params.get("since")]
        return httpx.Response(200, json={"items": items, "next": items[-1]["id"]})

    async with WorkflowClient("http://gw", transport=httpx.MockTransport(handler)) as client:
        text = await client.get_workflow_logs("wf 1", "a", index=0)
        with pytest.raises(ValidationError, match="index"):
            await client.get_workflow_logs("wf 1", index=-1)
    lines = text.splitlines(keepends=True)
    assert len(lines) == 10_001 and lines[0] == "[a] l1\n" and lines[-1] == "[m#3] l10001\n"
    assert [dict(p) for p in seen] == [
        {"step": "a", "index": "0", "limit": "10000"},
        {"step": "a", "index": "0", "limit": "10000", "since": "10000-0"},
    ]


async def test_follow_yields_lines_until_the_stream_ends() -> None:
    class Body(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[override]
            for chunk in (b"[a] one\n[a] tw", b"o\n", b"[b#1] three\n"):
                yield chunk

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["follow"] == "true" and "step" not in request.url.params
        return httpx.Response(200, stream=Body(), headers={"content-type": "text/plain"})

    async with WorkflowClient("http://gw", transport=httpx.MockTransport(handler)) as client:
        stream = await client.get_workflow_logs("wf-1", follow=True)
        assert [line async for line in stream] == ["[a] one\n", "[a] two\n", "[b#1] three\n"]


async def test_errors_carry_the_server_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("step"):
            return httpx.Response(422, json={"error": "invalid_input", "message": "no step 'x'", "field": "step"})
        return httpx.Response(404, json={"error": "not_found", "message": "workflow 'wf-9' not found",
                                         "field": "workflow_id"})

    async with WorkflowClient("http://gw", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ClientError) as missing:
            await client.get_workflow_logs("wf-9", follow=True)
        assert missing.value.status_code == 404
        with pytest.raises(ClientError) as bad:
            await client.get_workflow_logs("wf-9", "x")
        assert bad.value.field == "step"
