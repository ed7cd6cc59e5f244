"""The agents example's optional model (examples/agents/model.py) against a deterministic chat-completions
server on 127.0.0.1: the settings, the request sent, the answer read, and each way it can fail."""

from __future__ import annotations

import httpx
import pytest

from examples.agents.model import ModelEndpoint, ModelError, chat, checked_messages
from tests.model_server import model_server


def test_settings() -> None:
    assert ModelEndpoint.from_env({}) is None  # unset: no model at all
    assert ModelEndpoint.from_env({"FLOW_EXAMPLE_MODEL_URL": "  "}) is None
    endpoint = ModelEndpoint.from_env({"FLOW_EXAMPLE_MODEL_URL": "http://127.0.0.1:1/v1/", "FLOW_EXAMPLE_MODEL": "m",
                                       "FLOW_EXAMPLE_MODEL_KEY": "k", "FLOW_EXAMPLE_MODEL_TIMEOUT_S": "5"})
    assert endpoint == ModelEndpoint(url="http://127.0.0.1:1/v1", model="m", api_key="k", timeout_s=5.0)
    for bad in ({"FLOW_EXAMPLE_MODEL_URL": "file:///etc/passwd"}, {"FLOW_EXAMPLE_MODEL_URL": "127.0.0.1:80"},
                {"FLOW_EXAMPLE_MODEL_URL": "http://x", "FLOW_EXAMPLE_MODEL_TIMEOUT_S": "soon"},
                {"FLOW_EXAMPLE_MODEL_URL": "http://x", "FLOW_EXAMPLE_MODEL_TIMEOUT_S": "0"}):
        with pytest.raises(ValueError, match="FLOW_EXAMPLE_MODEL"):
            ModelEndpoint.from_env(bad)


@pytest.mark.parametrize(
    "bad",
    [None, [], "hi", [{"role": "assistant", "content": "x"}], [{"role": "user", "content": 3}], [{"role": "user"}] * 5],
)
def test_requests_from_a_container_are_checked(bad: object) -> None:
    with pytest.raises(ValueError):
        checked_messages(bad)


def test_long_messages_are_cut() -> None:
    assert len(checked_messages([{"role": "user", "content": "x" * 100_000}])[0]["content"]) == 8000


async def test_chat_sends_a_chat_completion_and_reads_the_answer() -> None:
    with model_server() as server:
        endpoint = ModelEndpoint(url=server.url, model="tiny", api_key="sekret")
        async with httpx.AsyncClient() as http:
            answer = await chat(http, endpoint, [{"role": "system", "content": "plan it"},
                                                 {"role": "user", "content": "doc"}])
        assert answer.startswith("PLAN-NOTE")
        (sent,) = server.requests
        assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer sekret"
        assert sent["body"]["model"] == "tiny" and sent["body"]["temperature"] == 0
        assert sent["body"]["messages"][1] == {"role": "user", "content": "doc"}


async def test_chat_faults_are_model_errors() -> None:
    with model_server() as server:
        endpoint = ModelEndpoint(url=server.url, timeout_s=5)
        async with httpx.AsyncClient() as http:
            server.fail_with = 503
            with pytest.raises(ModelError, match="503"):
                await chat(http, endpoint, [{"role": "user", "content": "x"}])
            server.fail_with = None
            for raw in (b"not json", b'{"choices": []}', b'{"choices": [{"message": {"content": 7}}]}'):
                server.raw_answer = raw
                with pytest.raises(ModelError):
                    await chat(http, endpoint, [{"role": "user", "content": "x"}])
        closed = ModelEndpoint(url=server.url, timeout_s=5)
    async with httpx.AsyncClient() as http:  # the server is gone: unreachable
        with pytest.raises(ModelError, match="unreachable"):
            await chat(http, closed, [{"role": "user", "content": "x"}])
