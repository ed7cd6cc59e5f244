"""The multi-agent example: a planner, two workers and a reviewer, long-running agents cooperating
through one workflow's state until the reviewer accepts (or ``max_rounds`` is reached).

Each agent is its own image, built offline by ``scripts/build_example_images.sh`` from
``Dockerfile.<agent>`` (``agentainer-flow/agents-planner``, ``-worker``, ``-reviewer``), deployed with
the SDK's ``deploy_agent`` for the workflow (``workflow_id``), with network ``none``: it reaches that
workflow's state, and nothing else, over the pool's state bridge (``/flow/state/state.sock``, see
docs/pool.md and ADR 015). The workflow's steps (``flow_steps.py``) post requests into the state and
wait for the agents' answers; a ``decision`` step reads the reviewer's verdict. The agents are removed
when the run ends, whatever happened.

Run it against a running stack (``make up``), after ``scripts/build_example_images.sh``::

    .venv/bin/python -m examples.agents.run
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

from agentainer_flow import Agent, Workflow, WorkflowClient
from examples.agents.model import ModelEndpoint, relay
from examples.images import reference

HERE = Path(__file__).resolve().parent
DOCUMENT = HERE / "data" / "lighthouse.md"
STEP_IMAGE = "agentainer-flow/python:3.11"
AGENTS = (("planner", "planner"), ("worker-1", "worker"), ("worker-2", "worker"), ("reviewer", "reviewer"))
MODULE = "agents_flow_steps"
MODEL_AGENTS = ("planner", "reviewer")  # the kinds that consult the optional model


def image(kind: str) -> str:
    """``agentainer-flow/agents-<kind>:<hash of Dockerfile.<kind> and steps/*.py>``."""
    return reference("agents", kind)


def definition(document: str | None = None, *, max_rounds: int = 3, max_sections: int = 12) -> dict[str, Any]:
    """The workflow: plan -> work (a map over the sections) -> review (retried: the loop) -> decide."""

    def fn(qualname: str) -> dict[str, str]:
        return {"module": MODULE, "qualname": qualname, "source_ref": MODULE}

    common: dict[str, Any] = {"image": STEP_IMAGE, "timeout": 90}
    return {
        "name": "agents-review",
        "description": "A planner, workers and a reviewer (long-running agents) cooperating through state",
        "input": {
            "document": DOCUMENT.read_text() if document is None else document,
            "max_rounds": max_rounds,
            "max_sections": max_sections,
        },
        "config": {"timeout": "5m", "max_parallel": 4},
        "modules": {MODULE: (HERE / "flow_steps.py").read_text()},
        "steps": [
            {"id": "plan", "function": fn("plan"), **common},
            {"id": "work", "type": "map", "items": "steps.plan.output.sections", "max_concurrency": 4,
             "depends_on": ["plan"], "function": fn("work"), **common},
            {"id": "review", "depends_on": ["plan", "work"], "function": fn("review"), **common,
             "retry": {"max_attempts": max_rounds, "backoff": "constant", "initial_delay_s": 0.1, "jitter": 0}},
            {"id": "decide", "type": "decision", "depends_on": ["review"],
             "cases": [{"condition": {"field": "steps.review.output.accepted", "op": "==", "value": True},
                        "targets": ["publish"]}],
             "default": ["give_up"]},
            {"id": "publish", "depends_on": ["review"], "function": fn("publish"), **common},
            {"id": "give_up", "depends_on": ["review"], "function": fn("give_up"), **common},
        ],
    }


async def run(
    client: WorkflowClient, document: str | None = None, *, max_rounds: int = 3, timeout_s: float = 240,
    model: ModelEndpoint | None = None,
) -> tuple[Workflow, dict[str, str]]:
    """Create the workflow, deploy the agents for it, run it; returns it and each agent's log.

    With ``model``, the planner and the reviewer consult it (through the workflow's state and a relay
    here: ``model.py``); without, nothing of it runs. The agents are removed at the end, also when the
    run fails or times out.
    """
    created = await client.submit(definition(document, max_rounds=max_rounds), start=False)
    agents: list[Agent] = []
    logs: dict[str, str] = {}
    relaying: asyncio.Task[None] | None = None
    try:
        for name, kind in AGENTS:
            env = {"AGENT_NAME": name}
            if model is not None and kind in MODEL_AGENTS:
                env.update(MODEL_RELAY="1", MODEL_TIMEOUT_S=str(model.timeout_s * 2))
            agents.append(
                await client.deploy_agent(
                    f"{name}-{created.id[-8:]}", image(kind), env_vars=env,
                    memory_limit=128 * 1024 * 1024, workflow_id=created.id, step_id=kind,
                )
            )
        if model is not None:
            relaying = asyncio.create_task(relay(client, created.id, model))
        execution = await client.start_workflow(created.id)
        wf = await execution.wait_for_completion(timeout=timeout_s)
        for (name, _), agent in zip(AGENTS, agents, strict=True):
            logs[name] = await client.get_agent_logs(agent.id)
        return wf, logs
    finally:
        if relaying is not None:
            relaying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relaying
        for agent in agents:
            with contextlib.suppress(Exception):
                await client.remove_agent(agent.id)


def report(wf: Workflow, logs: dict[str, str]) -> str:
    lines = [f"{wf.name}: {wf.status.value}"]
    for name, text in logs.items():
        lines += [f"  {line}" for line in text.splitlines() if line.startswith(f"[{name}]") and "connected" not in line]
    final = wf.step("publish").output if wf.step("publish").status == "succeeded" else wf.step("give_up").output
    if final and final.get("accepted"):
        lines.append(
            f"  accepted after {final['rounds']} round(s): {len(final['sections'])} sections, "
            f"{final['summary_words']} summary words for {final['document_words']}"
        )
        lines += [f"    {s['title']}: {s['summary']}" for s in final["sections"]]
    elif final:
        lines.append(f"  given up after {final['rounds']} round(s): {'; '.join(final['reasons'])}")
    return "\n".join(lines)


async def main() -> None:
    model = ModelEndpoint.from_env(os.environ)  # FLOW_EXAMPLE_MODEL_URL unset: no model (model.py)
    async with WorkflowClient() as client:
        wf, logs = await run(client, model=model)
    print(report(wf, logs))


if __name__ == "__main__":
    asyncio.run(main())
