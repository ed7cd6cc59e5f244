"""The planner agent: when a ``task`` arrives in its workflow's state, split the document into sections
and publish them as ``plan``."""

from __future__ import annotations

from typing import Any

from agentloop import say, serve
from flow_state import StateClient
from textwork import split_sections


def plan(state: StateClient, task: Any) -> None:
    sections = split_sections(task["document"], int(task.get("max_sections", 12)))
    state.set("plan", {"agent": state.agent_id, "sections": sections})
    titles = ", ".join(f"{s['title']} ({s['words']} words)" for s in sections)
    say(f"planned {len(sections)} sections: {titles}")


if __name__ == "__main__":
    serve("task", plan)
