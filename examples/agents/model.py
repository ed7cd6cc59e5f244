"""The example's optional language model: an OpenAI-compatible chat-completions endpoint, over httpx.

Settings (environment, read by :meth:`ModelEndpoint.from_env`; unset ``FLOW_EXAMPLE_MODEL_URL``: no model,
and the example runs exactly as without this module):

- ``FLOW_EXAMPLE_MODEL_URL``: the API's base URL, e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions``
  is appended); http or https only.
- ``FLOW_EXAMPLE_MODEL``: the model name sent (default ``default``).
- ``FLOW_EXAMPLE_MODEL_KEY``: a bearer token, if the endpoint wants one.
- ``FLOW_EXAMPLE_MODEL_TIMEOUT_S``: per request (default 30).

The agents keep network ``none``: they post requests into their workflow's state
(``steps/modelhook.py``), and :func:`relay`, running beside the example's driver on the host, answers
them from the model. What comes from a container is checked here before it is sent (roles, sizes);
what the model answers is cut to ``MAX_ANSWER_CHARS``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from agentainer_flow import WorkflowClient

log = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 2000
MAX_MESSAGE_CHARS = 8000
MAX_MESSAGES = 4
ROLES = frozenset({"system", "user"})


class ModelError(Exception):
    """The model could not be asked, or its answer was not a chat completion."""


@dataclass(frozen=True)
class ModelEndpoint:
    url: str
    model: str = "default"
    api_key: str | None = None
    timeout_s: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ModelEndpoint | None:
        """The endpoint the environment names, or None; ValueError for a setting that is not usable."""
        url = env.get("FLOW_EXAMPLE_MODEL_URL", "").strip()
        if not url:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"FLOW_EXAMPLE_MODEL_URL must be an http(s) URL, not {url!r}")
        try:
            timeout_s = float(env.get("FLOW_EXAMPLE_MODEL_TIMEOUT_S", "30"))
        except ValueError:
            raise ValueError("FLOW_EXAMPLE_MODEL_TIMEOUT_S must be a number of seconds") from None
        if not 0 < timeout_s <= 600:
            raise ValueError("FLOW_EXAMPLE_MODEL_TIMEOUT_S must be more than 0 and at most 600")
        return cls(url=url.rstrip("/"), model=env.get("FLOW_EXAMPLE_MODEL") or "default",
                   api_key=env.get("FLOW_EXAMPLE_MODEL_KEY") or None, timeout_s=timeout_s)


def checked_messages(raw: Any) -> list[dict[str, str]]:
    """The messages of a request an agent posted, as sent to the model; ValueError when malformed."""
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_MESSAGES:
        raise ValueError(f"messages must be a list of 1 to {MAX_MESSAGES}")
    messages = []
    for item in raw:
        if not isinstance(item, dict) or item.get("role") not in ROLES or not isinstance(item.get("content"), str):
            raise ValueError("each message needs a role (system or user) and a text content")
        messages.append({"role": item["role"], "content": item["content"][:MAX_MESSAGE_CHARS]})
    return messages


async def chat(http: httpx.AsyncClient, endpoint: ModelEndpoint, messages: list[dict[str, str]]) -> str:
    """The model's answer (deterministic settings: temperature 0)."""
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    body = {"model": endpoint.model, "messages": messages, "temperature": 0}
    try:
        answer = await http.post(f"{endpoint.url}/chat/completions", json=body, headers=headers,
                                 timeout=endpoint.timeout_s)
    except httpx.HTTPError as exc:
        raise ModelError(f"the model endpoint is unreachable: {type(exc).__name__}") from exc
    if answer.status_code != 200:
        raise ModelError(f"the model endpoint answered {answer.status_code}")
    try:
        content = answer.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ModelError("the model's answer is not a chat completion") from None
    if not isinstance(content, str):
        raise ModelError("the model's answer has no text")
    return content.strip()[:MAX_ANSWER_CHARS]


async def answer_pending(
    client: WorkflowClient, http: httpx.AsyncClient, endpoint: ModelEndpoint, workflow_id: str, answered: set[int]
) -> int:
    """Answer the workflow's model requests not answered yet; how many were answered now."""
    state = await client.get_workflow_state(workflow_id)
    requests = state.get("model_requests") if isinstance(state, dict) else None
    count = 0
    for request in requests if isinstance(requests, list) else []:
        request_id = request.get("id") if isinstance(request, dict) else None
        if not isinstance(request_id, int) or isinstance(request_id, bool) or request_id in answered:
            continue
        try:
            reply: dict[str, Any] = {"content": await chat(http, endpoint, checked_messages(request.get("messages")))}
        except (ValueError, ModelError) as exc:
            log.warning("model request %d of %s: %s", request_id, workflow_id, exc)
            reply = {"error": str(exc)}
        await client.update_workflow_state(workflow_id, f"model_reply_{request_id}", reply)
        answered.add(request_id)
        count += 1
    return count


async def relay(client: WorkflowClient, workflow_id: str, endpoint: ModelEndpoint, *, poll_s: float = 0.1) -> None:
    """Answer the agents' model requests of one workflow until cancelled."""
    answered: set[int] = set()
    async with httpx.AsyncClient() as http:
        while True:
            try:
                await answer_pending(client, http, endpoint, workflow_id, answered)
            except Exception:  # the relay must outlive a hiccup of the gateway; the agents time out meanwhile
                log.exception("model relay of %s", workflow_id)
            await asyncio.sleep(poll_s)
