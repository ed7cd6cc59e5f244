"""The SDK's flow-control options (ADR 013): decorator options land in the definition's config, which
the server's model accepts; submission priority goes as ``?priority=``; the CLI shows why a run waits."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from agentainer_flow import ValidationError, WorkflowClient, definition_of, step, workflow
from agentainer_flow.models import Workflow, WorkflowStatus
from flowcore.models import WorkflowDefinition

IMG = "agentainer-flow/python:3.11"


@workflow(
    "sync", concurrency={"key": "input.customer", "limit": 1, "strategy": "cancel_newest"}, max_concurrent_runs=4,
    rate_limit={"limit": 10, "period": "1m"}, priority=3,
    debounce={"key": "input.customer", "period": "5s", "max_wait": "1m", "inputs": "all"},
)
class Sync:
    @step(image=IMG)
    def go(self, ctx: Any) -> None: ...


def test_decorator_options_become_the_config_the_server_accepts() -> None:
    defn = definition_of(Sync)
    cfg = defn["config"]
    assert cfg["concurrency"] == {"key": "input.customer", "limit": 1, "strategy": "cancel_newest"}
    assert (cfg["max_concurrent_runs"], cfg["priority"]) == (4, 3)
    parsed = WorkflowDefinition.model_validate(defn).config
    assert parsed.rate_limit is not None and parsed.rate_limit.period_s == 60
    assert parsed.debounce is not None and parsed.debounce.inputs == "all"


@pytest.mark.parametrize(
    "options",
    [{"concurrency": "input.customer"}, {"rate_limit": 5}, {"max_concurrent_runs": 0}, {"debounce": "5s"}],
)
def test_bad_options_raise_at_once(options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        workflow("bad", **options)


async def test_submission_priority_is_a_query_parameter() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"id": "wf-1", "name": "n", "status": "queued",
                                         "queued_reason": "queued: concurrency key 'a' is at its limit of 1"})

    async with WorkflowClient(base_url="http://flow.test", token="t", transport=httpx.MockTransport(handler)) as client:
        wf = await client.submit({"name": "n"}, priority=7)
    assert seen[0].url.params["priority"] == "7" and seen[0].url.params["start"] == "true"
    assert wf.status == WorkflowStatus.QUEUED and wf.queued_reason is not None


def test_the_workflow_model_reads_the_flow_fields() -> None:
    wf = Workflow.read({"id": "wf-1", "name": "n", "status": "queued", "queued_reason": "throttled: x",
                        "estimated_start": "2026-11-28T20:00:00Z", "priority": 2, "admitted_at": None})
    assert wf.estimated_start is not None and wf.priority == 2


def test_the_cli_shows_why_a_run_waits(capsys: pytest.CaptureFixture[str]) -> None:
    from agentainer_flow.cli import main

    record = {"id": "wf-9", "name": "sync", "status": "queued", "created_at": "2026-01-01T00:00:00Z",
              "queued_reason": "throttled: rate limit 1 per 60s (key '*')", "estimated_start": "2026-01-01T00:01:00Z",
              "steps": []}

    def gateway(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/workflows":
            return httpx.Response(200, json={"items": [record], "total": 1})
        return httpx.Response(200, json=record)

    assert main(["get", "wf-9"], transport=httpx.MockTransport(gateway)) == 0
    out = capsys.readouterr().out
    assert "queued: throttled: rate limit 1 per 60s (key '*') (estimated start 00:01:00)" in out
    assert main(["list"], transport=httpx.MockTransport(gateway)) == 0
    assert "REASON" in (listing := capsys.readouterr().out) and "throttled: rate limit" in listing
