"""A worker agent: take the jobs in ``jobs`` that no other worker has claimed (compare-and-set on
``claim.<job>``), summarise the section, extract its keywords and statistics, answer in
``result.<job>``. Several workers share the jobs."""

from __future__ import annotations

from typing import Any

from agentloop import say, serve
from flow_state import StateClient
from textwork import process


def work(state: StateClient, jobs: list[dict[str, Any]]) -> None:
    plan = None
    for job in jobs:
        if state.get(f"result.{job['id']}") is not None or not state.cas(f"claim.{job['id']}", state.agent_id, missing=True):
            continue
        plan = plan or state.get("plan")
        section = plan["sections"][job["section"]]
        result = process(section, job.get("hints") or [])
        result.update(agent=state.agent_id, job=job["id"])
        state.set(f"result.{job['id']}", result)
        hints = f", taking in {', '.join(job['hints'])}" if job.get("hints") else ""
        say(
            f"{job['id']}: section {section['index']} '{section['title']}' summarised in "
            f"{len(result['summary'])} sentence(s){hints}; keywords {', '.join(result['keywords'])}; "
            f"{result['stats']['words']} words"
        )


if __name__ == "__main__":
    serve("jobs", work)
