"""The reviewer agent: for each ``review_request`` (a round and the result of each section), check the
work against the whole document and answer ``verdict.<round>`` (accepted, or the reasons and what to
fix); every verdict is also appended to ``verdicts``."""

from __future__ import annotations

from typing import Any

from agentloop import say, serve
from flow_state import StateClient
from modelhook import consult
from textwork import review


def judge(state: StateClient, request: dict[str, Any]) -> None:
    task, plan = state.get("task"), state.get("plan")
    results = [state.get(f"result.{job}") for _, job in sorted(request["results"].items(), key=lambda kv: int(kv[0]))]
    verdict = review(task["document"], plan["sections"], [r for r in results if r is not None])
    verdict.update(round=request["round"], agent=state.agent_id)
    # With a model (optional): its opinion goes with the verdict; the checks above decide.
    summaries = "\n".join(f"- {' '.join(r['summary'])}" for r in results if r is not None)
    opinion = consult(state, "review", f"Summaries:\n{summaries}\n\nDocument:\n{task['document']}")
    if opinion is not None:
        verdict["model_opinion"] = opinion
        say(f"round {request['round']}: the model says: {opinion[:200]}")
    state.set(f"verdict.{request['round']}", verdict)
    state.append("verdicts", {k: verdict[k] for k in ("round", "accepted", "reasons", "coverage")})
    if verdict["accepted"]:
        say(f"round {request['round']}: accepted (keyword coverage {verdict['coverage']:.0%}, "
            f"{verdict['summary_words']} summary words for {verdict['document_words']})")
    else:
        say(f"round {request['round']}: rejected: {'; '.join(verdict['reasons'])}")


if __name__ == "__main__":
    serve("review_request", judge)
