"""Stored secrets on the real stack (gateway, worker, pool, Docker): the value reaches the container and
nowhere else. The steps below are the attacker: each tries to echo the secret back through every channel
a step has (stdout lines, stderr, its output, its error, state writes over the agent, state.json, a Python
function's return value), and the test reads all of them back through the API and Redis."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.e2e.conftest import Stack
from tests.e2e.flowhttp import brief, step, steps_by_id, submit, wait

MASK = "********"


def ref(name: str) -> str:
    return "${{ secrets." + name + " }}"

LEAKY = """
value = os.environ["DB_URL"]
print("connecting to", value, flush=True)
print("stderr too:", value, file=sys.stderr, flush=True)
with open(os.environ["FLOW_STATE_PATH"], "w") as f:
    json.dump([{"op": "set", "key": "leaked", "value": {"url": value, value: "as a key"}}], f)
import hashlib
with open(os.environ["FLOW_OUTPUT_PATH"], "w") as f:
    json.dump({"echo": value, "nested": [[{"deep": "x" + value + "y"}]],
               "sha": hashlib.sha256(value.encode()).hexdigest(), "embedded": os.environ["DSN"]}, f)
"""
FAILING = """
value = os.environ["DB_URL"]
raise SystemExit("could not connect to " + value)
"""


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, headers=stack.headers(), timeout=60) as c:
        yield c


@pytest.fixture
def secret(client: httpx.Client) -> Iterator[tuple[str, str]]:
    name = f"db-url-{uuid.uuid4().hex[:8]}"
    value = f"postgres://app:{uuid.uuid4().hex}@db/app"
    r = client.put(f"/v1/secrets/{name}", json={"value": value})
    assert r.status_code == 200, r.text
    assert value not in r.text and r.json()["name"] == name
    yield name, value
    client.delete(f"/v1/secrets/{name}")


def everything_about(client: httpx.Client, stack: Stack, wf_id: str) -> str:
    """Every answer a user or the dashboard can get about the workflow, and its raw Redis keys."""
    parts = [client.get(f"/v1/workflows/{wf_id}").text]
    for path in ("logs", "state", "metrics", "spans", "jobs"):
        parts.append(client.get(f"/v1/workflows/{wf_id}/{path}").text)
    parts.append(client.get("/v1/secrets").text)
    raw = redis.Redis.from_url(stack.redis_url)
    try:
        for key in raw.scan_iter(match="*"):
            kind = raw.type(key)
            if kind == b"string":
                parts.append(repr(raw.get(key)))
            elif kind == b"hash":
                parts.append(repr(raw.hgetall(key)))
            elif kind == b"stream":
                parts.append(repr(raw.xrange(key)))
            elif kind == b"list":
                parts.append(repr(raw.lrange(key, 0, -1)))
    finally:
        raw.close()
    return "\n".join(parts)


def test_a_secret_reaches_the_container_and_is_masked_everywhere_else(
    client: httpx.Client, stack: Stack, secret: tuple[str, str]
) -> None:
    name, value = secret
    env = {"DB_URL": ref(name), "DSN": f"host=db password={ref(name)} port=5432"}
    definition = {
        "name": "secret-leaker",
        "steps": [
            step("leak", LEAKY, env=env),
            step("fail", FAILING, env={"DB_URL": env["DB_URL"]}, retry={"max_attempts": 1}, depends_on=["leak"],
                 continue_on_error=True),
        ],
    }
    wf_id = submit(client, definition)
    result = wait(client, wf_id)
    steps = steps_by_id(result)
    leak = steps["leak"]
    assert leak["status"] == "succeeded", brief(result)
    # It arrived: the container saw the real value (its digest matches), in both env entries.
    assert leak["output"]["sha"] == hashlib.sha256(value.encode()).hexdigest()
    assert leak["output"]["echo"] == MASK
    assert leak["output"]["nested"] == [[{"deep": f"x{MASK}y"}]]
    assert leak["output"]["embedded"] == f"host=db password={MASK} port=5432"
    state = client.get(f"/v1/workflows/{wf_id}/state").json()
    assert state["state"]["leaked"] == {"url": MASK, MASK: "as a key"}
    assert steps["fail"]["status"] == "failed"
    assert MASK in (steps["fail"]["error"] or "") + str(steps["fail"]["tasks"])
    logs = client.get(f"/v1/workflows/{wf_id}/logs").text
    assert f"connecting to {MASK}" in logs and f"stderr too: {MASK}" in logs
    # ...and the value itself is nowhere: API answers, the dashboard's data, Redis.
    seen = everything_about(client, stack, wf_id)
    assert value not in seen
    assert ref(name) in client.get(f"/v1/workflows/{wf_id}").text  # only the reference


def test_a_python_function_step_returning_the_secret_gets_it_masked(
    client: httpx.Client, stack: Stack, secret: tuple[str, str]
) -> None:
    name, value = secret
    source = (
        "import os\n"
        "def leak(ctx):\n"
        "    ctx.state.set('from_function', os.environ['TOKEN'])\n"
        "    print('token', os.environ['TOKEN'])\n"
        "    return {'token': os.environ['TOKEN'], 'length': len(os.environ['TOKEN'])}\n"
    )
    definition = {
        "name": "secret-function",
        "steps": [{"id": "f", "image": "agentainer-flow/python:3.11", "env": {"TOKEN": ref(name)},
                   "function": {"module": "leaky_mod", "qualname": "leak", "source": source}}],
    }
    wf_id = submit(client, definition)
    result = wait(client, wf_id)
    f = steps_by_id(result)["f"]
    assert f["status"] == "succeeded", brief(result)
    assert f["output"] == {"token": MASK, "length": len(value)}
    assert client.get(f"/v1/workflows/{wf_id}/state/from_function").json()["value"] == MASK
    assert value not in everything_about(client, stack, wf_id)


def test_a_missing_secret_fails_the_step_once_with_a_clear_error(client: httpx.Client) -> None:
    definition: dict[str, Any] = {
        "name": "secret-missing",
        "steps": [step("s", "print(1)", env={"X": "${{ secrets.never-set }}"}, retry={"max_attempts": 3})],
    }
    result = wait(client, submit(client, definition))
    s = steps_by_id(result)["s"]
    assert result["status"] == "failed" and s["attempts"] == 1, brief(result)  # an input error is not retried
    assert "secret 'never-set' is not set" in (s["error"] or ""), brief(result)


def test_only_env_is_substituted(client: httpx.Client, secret: tuple[str, str]) -> None:
    """A reference in the input (or the command) stays text: secrets go into the environment only."""
    name, _ = secret
    definition = {"name": "secret-input", "input": {"x": ref(name)},
                  "steps": [step("s", "print(json.dumps(doc['input']))")]}
    result = wait(client, submit(client, definition))
    assert steps_by_id(result)["s"]["output"] == {"x": ref(name)}


def test_a_secret_limited_to_a_template_reaches_its_runs_and_no_other(client: httpx.Client) -> None:
    """The attack: a `write` token that may submit workflows refers to a secret an admin limited to one
    template. Its own new run is refused at submission; a run started from another stored definition
    fails its step without the value; the template's fires and their retries get the value."""
    name, value = f"limited-{uuid.uuid4().hex[:8]}", f"sk-{uuid.uuid4().hex}"
    reader = step("s", "import hashlib\nprint(json.dumps(hashlib.sha256(os.environ['K'].encode()).hexdigest()))",
                  env={"K": ref(name)}, retry={"max_attempts": 2})
    definition = {"name": "limited-secret", "steps": [reader]}
    template = submit(client, definition, start=False)
    other = submit(client, definition, start=False)  # the same code, but not the listed template
    r = client.put(f"/v1/secrets/{name}", json={"value": value, "workflows": [template]})
    assert r.status_code == 200 and r.json()["workflows"] == [template], r.text
    try:
        refused = client.post("/v1/workflows", params={"start": "true"}, json=definition)
        assert refused.status_code == 403 and f"{name!r} is limited" in refused.json()["message"], refused.text
        assert client.post(f"/v1/workflows/{other}/start").status_code in (200, 202)
        failed = wait(client, other)
        s = steps_by_id(failed)["s"]
        assert failed["status"] == "failed" and s["attempts"] == 1, brief(failed)  # input_error: not retried
        assert f"{name!r} is limited to some workflows" in (s["error"] or ""), brief(failed)
        fired = client.post(f"/v1/workflows/{template}/trigger", json={})
        assert fired.status_code == 201, fired.text
        run = wait(client, fired.json()["workflow_id"])
        digest = hashlib.sha256(value.encode()).hexdigest()
        assert run["status"] == "completed" and steps_by_id(run)["s"]["output"] == digest, brief(run)
        retried = client.post(f"/v1/workflows/{run['id']}/retry")
        assert retried.status_code == 201, retried.text
        again = wait(client, retried.json()["workflow_id"])
        assert again["status"] == "completed" and steps_by_id(again)["s"]["output"] == digest, brief(again)
        assert again["origin"]["root_id"] == template
    finally:
        client.delete(f"/v1/secrets/{name}")
