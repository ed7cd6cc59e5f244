"""An optional language model for the planner and the reviewer, asked through the workflow's state.

The agents run with network ``none``: they reach their workflow's state and nothing else. When the run
is started with a model endpoint (``FLOW_EXAMPLE_MODEL_URL``, see ``examples/agents/model.py``), the
agents are deployed with ``MODEL_RELAY=1``; :func:`consult` then appends a request to the state's
``model_requests`` and waits for ``model_reply_<id>``, which the host-side relay answers from the
model. Without it (the default), :func:`consult` returns None at once and the agents do exactly what
their own code decides. The model's answer is advice that is recorded and said; the decisions stay the
code's (``textwork``), so that a run is the same whatever the model says.
"""

from __future__ import annotations

import os
from typing import Any

from flow_state import StateClient

MAX_PROMPT_CHARS = 6000  # what one request may carry of a document
SYSTEM = {
    "plan": "You help plan the summary of a document. In one short paragraph, say what its sections are about.",
    "review": "You review summaries of a document's sections. In one short paragraph, say what they miss.",
}


def enabled() -> bool:
    return os.environ.get("MODEL_RELAY") == "1"


def timeout_s() -> float:
    try:
        return max(1.0, min(300.0, float(os.environ.get("MODEL_TIMEOUT_S", "60"))))
    except ValueError:
        return 60.0


def consult(state: StateClient, purpose: str, prompt: str) -> str | None:
    """The model's answer to ``prompt`` (``purpose``: ``plan`` or ``review``), or None: no model, no answer
    in time, or the relay reported an error (the agent then goes on without it)."""
    if not enabled():
        return None
    request_id = int(state.increment("model_seq"))
    request: dict[str, Any] = {
        "id": request_id,
        "purpose": purpose,
        "agent": state.agent_id,
        "messages": [
            {"role": "system", "content": SYSTEM[purpose]},
            {"role": "user", "content": prompt[:MAX_PROMPT_CHARS]},
        ],
    }
    state.append("model_requests", request)
    found, reply = state.wait(f"model_reply_{request_id}", timeout_s=timeout_s())
    if not found or not isinstance(reply, dict):
        return None
    content = reply.get("content")
    return content if isinstance(content, str) and content else None
