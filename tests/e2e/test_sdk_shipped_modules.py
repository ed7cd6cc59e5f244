"""A decorated SDK workflow of 200 Python-function steps through the real stack: the gateway accepts it
(its module source is shipped once, not once per step), the stored definition holds that source once,
and every step runs in a container from it. The inline form of ``function.source`` still runs, and a
step referring to a module the definition does not ship is a 422."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as redis

from agentainer_flow import ClientError, WorkflowClient, WorkflowStatus, definition_of
from flowcore.keyspace import Keyspace
from flowcore.settings import GatewaySettings
from tests.e2e.conftest import Stack
from tests.sdk_chain import IMAGE, LENGTH, Chain, step_id

BODY_LIMIT = GatewaySettings.model_fields["max_body_bytes"].default  # the stack runs with the default


async def stored_definition(stack: Stack, wf_id: str) -> str:
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    try:
        raw = await client.hget(Keyspace().workflow(wf_id), "definition")
    finally:
        await client.aclose()
    assert isinstance(raw, str)
    return raw


async def test_a_workflow_of_200_function_steps_ships_its_module_once_and_runs(stack: Stack) -> None:
    definition = definition_of(Chain)
    (source,) = definition["modules"].values()
    inline_size = len(json.dumps(definition)) + LENGTH * len(json.dumps(source))
    assert inline_size > BODY_LIMIT  # shipped once per step, the stack's gateway would answer 413

    async with WorkflowClient(stack.url, stack.token, timeout=60) as client:
        execution = await client.run_workflow(Chain())
        wf = await execution.wait_for_completion(timeout=600)
        stored = await stored_definition(stack, wf.id)

    assert wf.status == WorkflowStatus.COMPLETED
    assert len(wf.steps) == LENGTH and all(s.status == "succeeded" for s in wf.steps)
    assert wf.step(step_id(LENGTH - 1)).output == LENGTH  # each step ran after its predecessor, from the source
    marker = "# ---- entry points (generated) ----"  # once per shipped copy of the module
    assert stored.count(marker) == 1 and json.loads(stored)["modules"] == definition["modules"]
    assert wf.definition is not None and json.dumps(wf.definition).count(marker) == 1
    assert len(repr(wf)) < 200  # printing the run does not dump the definition


async def test_the_inline_form_runs_and_an_unknown_module_is_422(stack: Stack) -> None:
    source = "def hello(ctx):\n    return 'hello ' + ctx.input['input']['who']\n"
    inline = {
        "name": "inline-function",
        "input": {"who": "ada"},
        "steps": [{"id": "hello", "image": IMAGE,
                   "function": {"module": "greet_inline", "qualname": "hello", "source": source}}],
    }
    dangling = {
        "name": "dangling-module",
        "modules": {"greet": source},
        "steps": [{"id": "hello", "image": IMAGE,
                   "function": {"module": "greet", "qualname": "hello", "source_ref": "gret"}}],
    }
    async with WorkflowClient(stack.url, stack.token, timeout=60) as client:
        execution = await client.run_workflow(inline)
        wf = await execution.wait_for_completion(timeout=120)
        with pytest.raises(ClientError) as info:
            await client.submit(dangling)
    assert wf.step("hello").output == "hello ada"
    assert info.value.status_code == 422 and info.value.code == "invalid_input"
    assert "steps[0].function.source_ref: step 'hello' refers to module 'gret'" in info.value.message
