"""The agent state bridge (pool/agent_bridge.py, ADR 015) on real Docker and Redis: a deployed agent
reads and writes its own workflow's state, and every attack on it from inside the container fails.

Each scenario runs a Python program inside a deployed agent's container with ``docker exec`` (which
gets the container's environment, so ``FLOW_STATE_SOCKET``/``FLOW_STATE_TOKEN``) and reads the JSON
line it prints. Programs use the examples' client library (``examples/agents/steps/flow_state.py``) or
talk raw frames, as an attacker would.
"""

# ruff: noqa: F811  (pytest fixtures imported from tests.pool_fixtures are parameters here)

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from flowcore.keyspace import Keyspace
from pool.agent_bridge import LABEL_STATE_TOKEN, SOCKET_NAME
from pool.agent_bridge_protocol import BridgeLimits
from pool.agents import AgentSpec
from pool.services import PoolServices
from tests.pool_fixtures import docker_cli, pool, pool_settings, service_containers, work_dir  # noqa: F401

CLIENT = (Path(__file__).resolve().parents[2] / "examples/agents/steps/flow_state.py").read_text()
KEYS = Keyspace("flow")
SLEEPER = ["python3", "-c", "import time\nwhile True: time.sleep(60)"]

RAW = r'''
import json, os, socket
PATH, TOKEN = os.environ["FLOW_STATE_SOCKET"], os.environ["FLOW_STATE_TOKEN"]
def conn(hello=True, token=None):
    s = socket.socket(socket.AF_UNIX); s.settimeout(20); s.connect(PATH)
    f = s.makefile("rb")
    if hello:
        s.sendall(json.dumps({"t": "hello", "token": token or TOKEN}).encode() + b"\n")
        return s, f, json.loads(f.readline())
    return s, f, None
def ask(s, f, frame):
    s.sendall(frame if isinstance(frame, bytes) else json.dumps(frame).encode() + b"\n")
    line = f.readline()
    return json.loads(line) if line else None
'''


async def _workflow(redis_url: str, wf_id: str, status: str = "running", **state: Any) -> None:
    async with aioredis.Redis.from_url(redis_url) as r:
        await r.hset(KEYS.workflow(wf_id), mapping={"status": status})
        if state:
            await r.hset(KEYS.state(wf_id), mapping={k: json.dumps(v) for k, v in state.items()})


async def _state(redis_url: str, wf_id: str) -> dict[str, Any]:
    async with aioredis.Redis.from_url(redis_url) as r:
        raw = await r.hgetall(KEYS.state(wf_id))
    return {k.decode(): json.loads(v) for k, v in raw.items()}


async def _run_inside(docker_host: str, container_id: str, program: str) -> Any:
    # In a thread: the bridge answering the program runs on this event loop.
    out = await asyncio.to_thread(docker_cli, docker_host, "exec", container_id, "python3", "-c", program)
    return json.loads(out.strip().splitlines()[-1])


async def _deploy(pool: PoolServices, image: str, workflow_id: str | None, name: str = "a1") -> tuple[str, str]:
    record = await pool.agents.deploy(AgentSpec(name=name, image=image, command=SLEEPER, workflow_id=workflow_id))
    assert record.container_id
    return record.id, record.container_id


async def test_agent_reads_and_writes_its_workflow_state(pool: PoolServices, base_image: str, docker_host: str) -> None:
    url = pool.settings.redis.url
    await _workflow(url, "wf-mine", greeting="hello")
    await _workflow(url, "wf-other", secret="do not touch")
    agent_id, container = await _deploy(pool, base_image, "wf-mine")
    program = CLIENT + r'''
import json
with StateClient.from_env() as st:
    out = {"wf": st.workflow_id, "agent": st.agent_id, "greeting": st.get("greeting"), "none": st.get("nope", "dflt")}
    st.set("reply", {"from": st.agent_id})
    out["n"] = [st.increment("n") for _ in range(3)][-1]
    out["list"] = st.append("log", "a") and st.append("log", "b")
    out["cas"] = [st.cas("claim", "me", missing=True), st.cas("claim", "you", missing=True), st.cas("claim", "x", expected="me")]
    out["deleted"] = [st.delete("reply"), st.delete("reply")]
    out["wait_timeout"] = st.wait("greeting", seen="hello", timeout_s=0.2)
    out["wait_new"] = st.wait("never", timeout_s=0.2)
print(json.dumps(out))
'''
    out = await _run_inside(docker_host, container, program)
    assert out["wf"] == "wf-mine" and out["agent"] == agent_id
    assert out["greeting"] == "hello" and out["none"] == "dflt"
    assert out["n"] == 3 and out["list"] == ["a", "b"]
    assert out["cas"] == [True, False, True]
    assert out["deleted"] == [True, False]
    assert out["wait_timeout"] == [True, "hello"] and out["wait_new"] == [False, None]
    assert await _state(url, "wf-mine") == {"greeting": "hello", "n": 3, "log": ["a", "b"], "claim": "x"}
    assert await _state(url, "wf-other") == {"secret": "do not touch"}
    inspect = json.loads(docker_cli(docker_host, "inspect", container))[0]
    assert inspect["HostConfig"]["NetworkMode"] == "none"
    assert inspect["Config"]["Labels"][LABEL_STATE_TOKEN]  # only the digest: the token is in the env alone
    record = await pool.agents.get(agent_id)
    assert "FLOW_STATE_TOKEN" not in record.env  # the record never holds it


async def test_wait_returns_when_the_key_changes(pool: PoolServices, base_image: str, docker_host: str) -> None:
    url = pool.settings.redis.url
    await _workflow(url, "wf-wait")
    _, container = await _deploy(pool, base_image, "wf-wait")
    program = CLIENT + r'''
import json, threading, time
with StateClient.from_env() as st, StateClient.from_env() as other:
    threading.Timer(0.3, lambda: other.set("go", 7)).start()
    print(json.dumps(st.wait("go", timeout_s=20)))
'''
    assert await _run_inside(docker_host, container, program) == [True, 7]


async def test_attacks_from_inside_the_agent_container_fail(
    pool: PoolServices, base_image: str, docker_host: str, redis_server: Any
) -> None:
    url = pool.settings.redis.url
    await _workflow(url, "wf-a")
    await _workflow(url, "wf-b", secret=1)
    decoy = socket.socket()  # stands for the pool API on the host's loopback
    decoy.bind(("127.0.0.1", 0))
    decoy.listen()
    agent_id, container = await _deploy(pool, base_image, "wf-a")
    program = RAW + f'''
out = {{}}
s, f, w = conn(token="stolen-or-guessed"); out["wrong_token"] = w; out["after_wrong"] = f.readline()
s, f, _ = conn(hello=False); out["no_hello"] = ask(s, f, {{"t": "get", "rid": 1, "key": "k"}})
s, f, w = conn(); out["welcome"] = w["t"]
out["other_wf"] = ask(s, f, {{"t": "set", "rid": 2, "key": "secret", "value": 2, "workflow_id": "wf-b"}})
out["junk"] = ask(s, f, b"\\x00\\xff not json\\n")
out["array"] = ask(s, f, b"[1, 2]\\n")
out["deep"] = ask(s, f, b'{{"t": "set", "rid": 9, "key": "d", "value": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}\\n")
out["bad_op"] = ask(s, f, {{"t": "flushall", "rid": 3, "key": "k"}})
out["bool_rid"] = ask(s, f, {{"t": "get", "rid": True, "key": "k"}})
out["long_key"] = ask(s, f, {{"t": "get", "rid": 4, "key": "k" * 600}})
out["big_value"] = ask(s, f, {{"t": "set", "rid": 5, "key": "big", "value": "x" * 1_500_000}})
out["big_cas"] = ask(s, f, {{"t": "cas", "rid": 6, "key": "big", "value": "x" * 1_500_000, "missing": True}})
out["still_ok"] = ask(s, f, {{"t": "set", "rid": 7, "key": "mine", "value": "ok"}})
try:  # the bridge answers and closes before it has read the whole frame: the send may break
    out["oversize_frame"] = ask(s, f, b'{{"t": "set", "rid": 8, "key": "huge", "value": "' + b"y" * 3_000_000 + b'"}}\\n')
    out["after_oversize"] = f.readline()
except OSError as exc:
    out["oversize_frame"] = out["after_oversize"] = type(exc).__name__
conns = []
for _ in range(8):
    c, g, w = conn(); conns.append((c, g)); out.setdefault("flood", []).append(w["t"])
for target in [("127.0.0.1", {redis_server.port}), ("127.0.0.1", {decoy.getsockname()[1]})]:
    t = socket.socket(); t.settimeout(2)
    try:
        t.connect(target); out.setdefault("reach", []).append("connected")
    except OSError as exc:
        out.setdefault("reach", []).append(type(exc).__name__)
try:
    os.symlink("/etc/passwd", "/flow/state/evil"); out["symlink"] = "made"
except OSError as exc:
    out["symlink"] = exc.errno
out["listing"] = sorted(os.listdir("/flow/state"))
print(json.dumps(out, default=str))
'''
    try:
        out = await _run_inside(docker_host, container, program)
    finally:
        decoy.close()
    assert out["wrong_token"] == {"t": "error", "error": "wrong token"} and out["after_wrong"] == "b''"
    assert out["no_hello"]["t"] == "error" and "hello" in out["no_hello"]["error"]
    assert out["welcome"] == "welcome"
    assert not out["other_wf"]["ok"] and "workflow_id" in out["other_wf"]["error"]
    assert not out["junk"]["ok"] and "JSON" in out["junk"]["error"]
    assert not out["array"]["ok"]
    assert not out["deep"]["ok"] and "nests too deeply" in out["deep"]["error"]
    assert not out["bad_op"]["ok"] and "unknown request" in out["bad_op"]["error"]
    assert not out["bool_rid"]["ok"] and out["bool_rid"]["rid"] is None
    assert not out["long_key"]["ok"] and out["long_key"]["rid"] == 4
    assert not out["big_value"]["ok"] and "limit" in out["big_value"]["error"]
    assert not out["big_cas"]["ok"] and "limit" in out["big_cas"]["error"]
    assert out["still_ok"]["ok"]  # a bad request never costs the connection
    # An oversize frame closes the connection: an error frame then EOF, or a broken send.
    if isinstance(out["oversize_frame"], dict):
        assert out["oversize_frame"]["t"] == "error" and "at most" in out["oversize_frame"]["error"]
        assert out["after_oversize"] == "b''"
    else:
        assert out["oversize_frame"] in ("BrokenPipeError", "ConnectionResetError")
    assert out["flood"].count("welcome") == 4 and out["flood"].count("error") == 4
    assert out["reach"] == ["ConnectionRefusedError", "ConnectionRefusedError"]  # network none: not the host's
    assert out["symlink"] == 30  # EROFS: the socket's directory is read-only in the container
    assert out["listing"] == [SOCKET_NAME]
    assert await _state(url, "wf-b") == {"secret": 1}
    assert await _state(url, "wf-a") == {"mine": "ok"}
    assert pool.agents.bridge is not None and pool.agents.bridge.refused(agent_id)[0] >= 6


async def test_a_flood_of_requests_is_refused_past_the_rate(
    pool: PoolServices, base_image: str, docker_host: str
) -> None:
    url = pool.settings.redis.url
    await _workflow(url, "wf-flood")
    assert pool.agents.bridge is not None
    pool.agents.bridge.limits = BridgeLimits(rate_per_s=1, burst=5)
    agent_id, container = await _deploy(pool, base_image, "wf-flood")
    program = RAW + r'''
s, f, _ = conn()
replies = [ask(s, f, {"t": "increment", "rid": i, "key": "hits"}) for i in range(60)]
print(json.dumps({"ok": sum(1 for r in replies if r["ok"]), "errors": sorted({r.get("error", "") for r in replies if not r["ok"]})}))
'''
    out = await _run_inside(docker_host, container, program)
    assert 5 <= out["ok"] <= 20 and out["errors"] == ["too many requests: at most 1 per second"]
    assert (await _state(url, "wf-flood"))["hits"] == out["ok"]  # a refused request did nothing
    assert pool.agents.bridge.refused(agent_id)[1] == 60 - out["ok"]


async def test_finished_workflow_is_read_only_and_a_missing_one_is_refused(
    pool: PoolServices, base_image: str, docker_host: str
) -> None:
    url = pool.settings.redis.url
    await _workflow(url, "wf-done", status="completed", result=42)
    _, done = await _deploy(pool, base_image, "wf-done", name="done")
    _, ghost = await _deploy(pool, base_image, "wf-never-created", name="ghost")
    program = RAW + r'''
s, f, _ = conn()
print(json.dumps([ask(s, f, {"t": "get", "rid": 1, "key": "result"}), ask(s, f, {"t": "set", "rid": 2, "key": "result", "value": 0})]))
'''
    read, write = await _run_inside(docker_host, done, program)
    assert read["ok"] and read["value"] == 42
    assert not write["ok"] and "finished" in write["error"]
    assert (await _state(url, "wf-done")) == {"result": 42}
    missing = await _run_inside(docker_host, ghost, program)
    assert all(not r["ok"] and "not found" in r["error"] for r in missing)


async def test_agents_without_a_workflow_get_no_socket_and_deleting_removes_it(
    pool: PoolServices, base_image: str, docker_host: str
) -> None:
    assert pool.agents.bridge is not None
    agent_id, container = await _deploy(pool, base_image, None, name="loner")
    probe = 'import json, os; print(json.dumps([os.environ.get("FLOW_STATE_SOCKET"), os.path.exists("/flow/state")]))'
    assert await _run_inside(docker_host, container, probe) == [None, False]
    assert not pool.agents.bridge.is_open(agent_id)
    await _workflow(pool.settings.redis.url, "wf-del")
    agent_id, _ = await _deploy(pool, base_image, "wf-del", name="tied")
    directory = pool.agents.bridge.directory(agent_id)
    assert (directory / SOCKET_NAME).exists() and pool.agents.bridge.is_open(agent_id)
    await pool.agents.delete(agent_id)
    assert not directory.exists() and not pool.agents.bridge.is_open(agent_id)


async def test_links_and_junk_where_the_socket_goes_do_nothing_to_the_host(pool: PoolServices, tmp_path: Path) -> None:
    bridge = pool.agents.bridge
    assert bridge is not None
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("keep")
    bridge.agents_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The agent's directory is a link to a host directory; then the socket path is a link to a host file.
    linked = bridge.directory("agent-aaaaaaaaaaaa")
    linked.symlink_to(precious)
    path = await bridge.open("agent-aaaaaaaaaaaa", "wf-x", "0" * 64)
    assert not linked.is_symlink() and path.is_socket()
    assert sorted(os.listdir(precious)) == ["keep.txt"] and (precious / "keep.txt").read_text() == "keep"
    await bridge.close("agent-aaaaaaaaaaaa")
    junk = bridge.directory("agent-bbbbbbbbbbbb")
    junk.mkdir()
    (junk / SOCKET_NAME).symlink_to(precious / "keep.txt")
    (junk / "junk.bin").write_bytes(b"\x00" * 100)
    path = await bridge.open("agent-bbbbbbbbbbbb", "wf-x", "0" * 64)
    assert path.is_socket() and sorted(os.listdir(junk)) == [SOCKET_NAME]
    assert (precious / "keep.txt").read_text() == "keep"
    await bridge.close("agent-bbbbbbbbbbbb")
    assert not junk.exists() and precious.is_dir()


async def test_a_restarted_pool_service_listens_again_for_its_agents(
    pool_settings: Any, base_image: str, docker_host: str
) -> None:
    keep = pool_settings.model_copy(update={"keep_containers_on_shutdown": True})
    await _workflow(pool_settings.redis.url, "wf-r")
    first = await PoolServices.open(keep)
    try:
        agent_id, container = await _deploy(first, base_image, "wf-r", name="survivor")
    finally:
        await first.close()
    program = CLIENT + 'import json\nwith StateClient.from_env() as st: print(json.dumps(st.increment("n")))'
    second = await PoolServices.open(pool_settings)
    try:
        assert second.agents.bridge is not None and second.agents.bridge.is_open(agent_id)
        assert await _run_inside(docker_host, container, program) == 1
    finally:
        await second.close()
    assert service_containers(docker_host, pool_settings.service_id) == []


async def test_the_docs_example_runs_in_an_agent_container(
    pool: PoolServices, base_image: str, docker_host: str
) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs/pool.md").read_text()
    block = re.search(r"```python\n(from flow_state import StateClient\n.*?)```\n<!-- bridge-example -->", doc, re.S)
    assert block is not None
    await _workflow(pool.settings.redis.url, "wf-doc")
    agent_id, container = await _deploy(pool, base_image, "wf-doc", name="doc")
    # The image of an example carries flow_state.py; here the client is put in front of the block.
    program = CLIENT + block.group(1).replace("from flow_state import StateClient\n", "")
    out = await asyncio.to_thread(docker_cli, docker_host, "exec", container, "python3", "-c", program)
    assert out.split() == ["wf-doc", "1", "True", "False"]
    state = await _state(pool.settings.redis.url, "wf-doc")
    assert state == {"status": {"ready": True}, "visits": 1, "claim.job-1": agent_id}


async def test_a_stopped_and_restarted_agent_reaches_its_state_again(
    pool: PoolServices, base_image: str, docker_host: str
) -> None:
    await _workflow(pool.settings.redis.url, "wf-again")
    agent_id, container = await _deploy(pool, base_image, "wf-again", name="again")
    program = CLIENT + 'import json\nwith StateClient.from_env() as st: print(json.dumps(st.increment("n")))'
    assert await _run_inside(docker_host, container, program) == 1
    assert (await pool.agents.stop(agent_id)).status == "stopped"
    assert (await pool.agents.start(agent_id)).status == "running"  # the same container, the same mount
    assert await _run_inside(docker_host, container, program) == 2
