"""The examples against the real stack: the word counter (bundled texts and URLs) and the decorated
order pipeline, whose Python-function steps run inside containers through the pool's agent."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from contextlib import redirect_stdout

import pytest

from agentainer_flow import StepStatus, WorkflowClient, WorkflowStatus, run_locally
from examples import demo
from examples.decorators import run as decorators
from examples.decorators.pipeline import SAMPLE_ORDERS, OrderPipeline
from examples.wordcount import wordcount
from tests.e2e.conftest import Stack

# The word counter's steps run in agentainer-flow/wordcount, built by scripts/build_example_images.sh.
pytestmark = pytest.mark.usefixtures("example_images")


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[WorkflowClient]:
    async with WorkflowClient(stack.url, stack.token, timeout=60) as c:
        yield c


async def test_wordcount_on_bundled_texts_matches_the_scripts_run_locally(client: WorkflowClient) -> None:
    wf = await wordcount.run(client)
    assert wf.status == WorkflowStatus.COMPLETED
    assert [s.id for s in wf.steps] == ["list", "map", "reduce"]
    assert wf.step("map").total == 5 and len(wf.step("map").tasks) == 5
    assert wf.step("reduce").output == wordcount.expected()
    assert "5 documents" in wordcount.report(wf)
    ran = [(s["image"], s["command"]) for s in (wf.definition or {})["steps"]]
    assert ran == [(wordcount.IMAGE, ["python3", f"/app/{name}.py"]) for name in ("list_documents", "count_words", "top_words")]


async def test_wordcount_over_urls_served_from_loopback(client: WorkflowClient) -> None:
    wf = await wordcount.run(client, urls=True)
    assert wf.status == WorkflowStatus.COMPLETED
    assert wf.step("reduce").output == wordcount.expected()


async def test_decorated_pipeline_runs_in_containers_like_it_runs_locally(client: WorkflowClient) -> None:
    wf, state = await decorators.run(client)
    local = await run_locally(OrderPipeline(), input_data={"orders": SAMPLE_ORDERS})
    assert wf.status == WorkflowStatus.COMPLETED
    assert wf.step("quiet_day").status == StepStatus.SKIPPED
    assert wf.step("report").output == local.outputs["report"]
    assert {k: state[k] for k in ("orders_seen", "revenue", "verdict")} == {
        "orders_seen": 4, "revenue": 141.0, "verdict": "big"
    }
    assert sorted(state["priced"]) == ["A-1", "A-2", "A-3", "A-4"]
    assert all(t.mode == "agent" for s in wf.steps for t in s.tasks), [t.mode for s in wf.steps for t in s.tasks]


async def test_small_orders_take_the_other_branch(client: WorkflowClient) -> None:
    wf, state = await decorators.run(client, orders=[{"id": "B-1", "qty": 1, "unit_price": 3.5}])
    assert wf.step("big_day").status == StepStatus.SKIPPED
    assert wf.step("quiet_day").output == "quiet day: 3.5"
    assert state["verdict"] == "quiet"


async def test_demo_prints_results_and_a_timing_table(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_URL", stack.url)
    monkeypatch.setenv("FLOW_TOKEN", stack.token)
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = await demo.main()
    text = buffer.getvalue()
    assert code == 0, text
    assert "wall time" in text and "order-pipeline" in text and "wordcount (urls)" in text
    assert "wordcount-dag" in text and "branch took" in text
    assert "agents-review" in text and "[reviewer] round 1: rejected" in text and "accepted after 2 round(s)" in text
    assert json.dumps(wordcount.expected()["top"][0][0]) .strip('"') in text


@pytest.mark.parametrize("above", [True, False])
async def test_wordcount_dag_branches_on_the_word_total(stack: Stack, above: bool) -> None:
    from examples.wordcount import pipeline

    expected = wordcount.expected()
    threshold = expected["total_words"] - 1 if above else expected["total_words"]
    async with WorkflowClient(stack.url, token=stack.token) as client:
        wf = await pipeline.run(client, threshold=threshold)
    taken, skipped = ("long-summary", "short-summary") if above else ("short-summary", "long-summary")
    assert wf.step("reduce").output == expected
    assert wf.step(taken).status == "succeeded" and wf.step(skipped).status == "skipped"
    assert wf.step(taken).output.startswith(f"{expected['total_words']} words")
    assert taken in pipeline.report(wf)
