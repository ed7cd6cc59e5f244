"""The multi-agent example (examples/agents) on the real stack: four long-running agents, each its own
image, cooperate through one workflow's state over the pool's state bridge; the reviewer rejects the
first round with a reason, the retried review step has the workers fix it, and the decision publishes.

The final report is checked against the input document with this file's own counting, not the agents'.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from agentainer_flow import StepStatus, WorkflowClient, WorkflowStatus
from examples.agents import run as agents
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.usefixtures("example_images")


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[WorkflowClient]:
    async with WorkflowClient(stack.url, stack.token, timeout=60) as c:
        yield c


def sections_of(document: str) -> list[tuple[str, str]]:
    """(heading, body) pairs, counted here independently of the example's planner."""
    parts = re.split(r"^# (.+)$", document, flags=re.MULTILINE)
    return list(zip(parts[1::2], parts[2::2], strict=True))


def word_count(text: str) -> int:
    return len(re.findall(r"[a-z][a-z'-]*[a-z]|[a-z]", text.lower()))


async def test_agents_cooperate_until_the_reviewer_accepts(client: WorkflowClient) -> None:
    document = agents.DOCUMENT.read_text()
    wf, logs = await agents.run(client)
    assert wf.status == WorkflowStatus.COMPLETED, [(s.id, s.status, s.error) for s in wf.steps]
    assert wf.step("give_up").status == StepStatus.SKIPPED
    review = wf.step("review")
    assert review.tasks[-1].attempt == 2  # the first verdict failed the attempt; the retry was accepted

    state = await client.get_workflow_state(wf.id)
    first, second = state["verdicts"]
    assert (first["round"], first["accepted"], second["round"], second["accepted"]) == (1, False, 2, True)
    assert any("keywords missing" in reason for reason in first["reasons"]), first
    # The retried review had the workers redo exactly the sections the first verdict named.
    redone = sorted(job["section"] for job in state["jobs"] if job["round"] == 2)
    assert redone == sorted(int(i) for i in state["verdict.1"]["fixes"]) and redone

    final = wf.step("publish").output
    expected = sections_of(document)
    assert [s["title"] for s in final["sections"]] == [title for title, _ in expected]
    assert [s["words"] for s in final["sections"]] == [word_count(body) for _, body in expected]
    assert final["document_words"] == sum(word_count(body) for _, body in expected)
    flat = {title: " ".join(body.split()) for title, body in expected}
    for section in final["sections"]:  # extractive: every sentence is the section's own
        sentences = re.split(r"(?<=[.!?]) ", section["summary"])
        assert sentences and all(sentence in flat[section["title"]] for sentence in sentences), section
    summaries = " ".join(s["summary"] for s in final["sections"]).lower()
    assert all(re.search(rf"\b{k}\b", summaries) for k in final["keywords"]), final["keywords"]
    assert final["summary_words"] <= 0.4 * final["document_words"]
    # The gap was real: the words the first verdict named are in the document and in no first-round
    # summary, and the final summaries have them.
    gap = [w for words in state["verdict.1"]["fixes"].values() for w in words]
    first_round = " ".join(" ".join(v["summary"]) for k, v in state.items() if re.fullmatch(r"result\.s\d+-r1", k))
    for word in gap:
        assert re.search(rf"\b{word}\b", document.lower()) and re.search(rf"\b{word}\b", summaries)
        assert not re.search(rf"\b{word}\b", first_round.lower()), word
    # Work was spread over the deployed agents, and each said what it did.
    claims = {key.removeprefix("claim."): agent for key, agent in state.items() if key.startswith("claim.")}
    current = review.output["results"]
    assert [s["by"] for s in final["sections"]] == [claims[current[str(s["index"])]] for s in final["sections"]]
    assert "planned 5 sections" in logs["planner"]
    assert "round 1: rejected: keywords missing" in logs["reviewer"] and "round 2: accepted" in logs["reviewer"]
    assert "summarised" in logs["worker-1"] + logs["worker-2"]
    report = agents.report(wf, logs)
    assert "accepted after 2 round(s)" in report and "[reviewer] round 1: rejected" in report
    # The agents are gone when the example ends.
    assert [a for a in await client.list_agents(workflow_id=wf.id)] == []


async def test_the_limit_of_rounds_takes_the_other_branch(client: WorkflowClient) -> None:
    wf, logs = await agents.run(client, max_rounds=1)
    assert wf.status == WorkflowStatus.COMPLETED
    assert wf.step("publish").status == StepStatus.SKIPPED
    final = wf.step("give_up").output
    assert final["accepted"] is False and final["rounds"] == 1
    assert any("keywords missing" in reason for reason in final["reasons"])
    assert "given up after 1 round(s)" in agents.report(wf, logs)
