"""The planner agent: when a ``task`` arrives in its workflow's state, split the document into sections
and publish them as ``plan``."""

from __future__ import annotations

from typing import Any

from agentloop import say, serve
from flow_state import StateClient
from modelhook import consult
from textwork import split_sections


def plan(state: StateClient, task: Any) -> None:
    sections = split_sections(task["document"], int(task.get("max_sections", 12)))
    answer: dict[str, Any] = {"agent": state.agent_id, "sections": sections}
    titles = ", ".join(f"{s['title']} ({s['words']} words)" for s in sections)
    # With a model (optional, examples/agents/model.py): its view of the sections, recorded with the plan.
    note = consult(state, "plan", f"Sections: {titles}.\n\nDocument:\n{task['document']}")
    if note is not None:
        answer["model_note"] = note
        say(f"the model on the plan: {note[:200]}")
    state.set("plan", answer)
    say(f"planned {len(sections)} sections: {titles}")


if __name__ == "__main__":
    serve("task", plan)
