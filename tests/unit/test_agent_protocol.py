"""The in-container agent's protocol and task contract, with the agent running on the host python.

The agent is started as a subprocess that connects to a pool listener on a temporary unix socket;
the pool's own :class:`pool.channel.AgentChannel` talks to it. No Docker needed (tasks run as the
agent's own uid here; the uid switch and the clean-up of a container are tested on the engine).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from pool.agent.flow_agent import decode_message, encode_message
from pool.channel import AgentChannel, AgentListener, token_digest
from pool.containers import AGENT_DIR

STATE: dict[str, Any] = {}


async def state_handler(workflow_id: str, op: str, key: str, value: Any) -> dict[str, Any]:
    """An in-memory stand-in for the pool's StateBridge (what the agent asks for is the subject here)."""
    store = STATE.setdefault(workflow_id, {})
    if op == "get":
        return {"ok": True, "found": key in store, "value": store.get(key)}
    if op == "set":
        store[key] = value
    elif op == "increment":
        store[key] = store.get(key, 0) + (1 if value is None else value)
    elif op == "append":
        store[key] = [*store.get(key, []), value]
    elif op == "delete":
        store.pop(key, None)
    return {"ok": True, "found": op != "delete", "value": store.get(key)}


@pytest.fixture
def agent_dir() -> Iterator[Path]:
    # Short: unix socket paths hold 108 bytes.
    path = Path(tempfile.mkdtemp(prefix="fa", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


TOKEN = "agent-test-token"


@pytest.fixture
async def agent(agent_dir: Path) -> AsyncIterator[tuple[AgentChannel, subprocess.Popen[bytes], Path]]:
    sock = agent_dir / "pool.sock"
    listener = await AgentListener.open(str(sock))
    proc = subprocess.Popen(
        [
            sys.executable,
            str(AGENT_DIR / "flow_agent.py"),
            "--connect",
            str(sock),
            "--task-root",
            str(agent_dir / "tasks"),
        ],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "IMAGE_VAR": "from-image", "FLOW_AGENT_TOKEN": TOKEN},
    )
    channel = await listener.accept(token_sha256=token_digest(TOKEN), timeout_s=10, state_handler=state_handler)
    try:
        yield channel, proc, agent_dir
    finally:
        await channel.close()
        proc.kill()
        proc.wait()


def command(
    root: Path,
    name: str,
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    payload: Any = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    return {
        "id": name,
        "kind": "command",
        "argv": argv,
        "env": env or {},
        "input": payload,
        "timeout_s": timeout_s,
    }


def test_framing_roundtrip() -> None:
    message = {"t": "run", "argv": ["echo", "a\nb"], "input": {"x": [1, 2]}}
    frame = encode_message(message)
    assert frame.endswith(b"\n") and frame.count(b"\n") == 1
    assert decode_message(frame) == message
    with pytest.raises(ValueError):
        decode_message(b"[1, 2]")
    with pytest.raises(ValueError):
        decode_message(b'{"no_type": 1}')


async def test_hello_and_ping(agent: tuple[AgentChannel, Any, Path]) -> None:
    channel, proc, _ = agent
    assert channel.hello["t"] == "hello" and channel.hello["pid"] == proc.pid and channel.hello["busy"] == 0
    pong = await channel.ping(5)
    assert pong["t"] == "pong" and pong["busy"] == 0


async def test_command_stdin_env_and_exit_code(agent: tuple[AgentChannel, Any, Path]) -> None:
    channel, _, root = agent
    script = 'import json,os,sys; d=json.load(sys.stdin); print(json.dumps({"in": d, "v": os.environ.get("V"), "img": os.environ.get("IMAGE_VAR")})); sys.stderr.write("warn\\n")'
    result = await channel.run(
        command(root, "t1", [sys.executable, "-c", script], env={"V": "1"}, payload={"a": 1}), "wf"
    )
    assert result["exit_code"] == 0
    assert json.loads(result["stdout"]) == {"in": {"a": 1}, "v": "1", "img": "from-image"}
    assert "warn" in result["log_tail"]
    failed = await channel.run(command(root, "t2", ["/bin/sh", "-c", "echo boom; exit 3"]), "wf")
    assert failed["exit_code"] == 3 and "boom" in failed["log_tail"]


async def test_isolation_between_tasks(agent: tuple[AgentChannel, Any, Path]) -> None:
    channel, _, root = agent
    first = await channel.run(
        command(
            root, "a", ["/bin/sh", "-c", "export LEAK=1; echo x > f.txt; echo $SECRET"], env={"SECRET": "s1"}
        ),
        "wf",
    )
    assert first["stdout"].strip() == "s1"
    second = await channel.run(
        command(root, "b", ["/bin/sh", "-c", 'echo "[$SECRET][$LEAK]"; ls f.txt 2>&1 || true']), "wf"
    )
    assert second["stdout"].splitlines()[0] == "[][]"
    assert "No such file" in second["stdout"] or "cannot access" in second["stdout"]


async def test_timeout_kills_the_process_group(agent: tuple[AgentChannel, Any, Path]) -> None:
    channel, _, root = agent
    marker = root / "survivor"
    # A background grandchild that would write the marker after the timeout.
    script = f"(sleep 1.5; touch {marker}) & sleep 30"
    result = await channel.run(command(root, "slow", ["/bin/sh", "-c", script], timeout_s=0.3), "wf")
    assert result["timed_out"] is True
    assert result["exit_code"] == 137
    await asyncio.sleep(1.8)
    assert not marker.exists()
    assert (await channel.ping(5))["busy"] == 0


async def test_cancel(agent: tuple[AgentChannel, Any, Path]) -> None:
    channel, _, root = agent
    run = asyncio.create_task(channel.run(command(root, "c", ["/bin/sh", "-c", "sleep 30"]), "wf"))
    await asyncio.sleep(0.2)
    channel.cancel("c")
    result = await asyncio.wait_for(run, 5)
    assert result["cancelled"] is True


async def test_missing_executable(agent: tuple[AgentChannel, Any, Path]) -> None:
    channel, _, root = agent
    result = await channel.run(command(root, "m", ["/nonexistent/bin"]), "wf")
    assert result["exit_code"] == 127 and "cannot start" in result["log_tail"]


SOURCE = """
import asyncio

def handler(ctx):
    ctx.log.info("item=%s", ctx.item)
    print("printed")
    n = ctx.state.increment("count", 2)
    ctx.state.set("last", ctx.step_id)
    ctx.state.append("seen", ctx.index)
    return {"item": ctx.item, "deps": ctx.deps, "n": n, "missing": ctx.state.get("nope", "dflt"),
            "wf": ctx.workflow_id, "attempt": ctx.attempt}

async def async_handler(ctx):
    await asyncio.sleep(0.01)
    return ctx.input["x"] * 2

def boom(ctx):
    raise ValueError("bad item")

def not_json(ctx):
    return {1, 2}

def slow(ctx):
    import time
    time.sleep(30)

def reads_file(ctx):
    import json, os
    return json.load(open(os.environ["FLOW_INPUT_PATH"]))

def vanishes(ctx):
    import os
    os._exit(3)

def where_am_i(ctx):
    return ctx.index

def my_zygote(ctx):
    import os
    return os.getppid()

def my_zygote_too(ctx):
    import os
    return os.getppid()
"""


def function_run(
    root: Path, name: str, qualname: str, payload: Any, timeout_s: float | None = None
) -> dict[str, Any]:
    return {
        "id": name,
        "kind": "function",
        "env": {},
        "timeout_s": timeout_s,
        "function": {"module": "steps_mod", "qualname": qualname, "source": SOURCE},
        "ctx": {
            "workflow_id": "wf-1",
            "step_id": "s",
            "task_id": name,
            "index": 4,
            "attempt": 2,
            "input": payload,
        },
    }


async def test_function_with_state(agent: tuple[AgentChannel, Any, Path]) -> None:
    channel, _, root = agent
    STATE.clear()
    result = await channel.run(function_run(root, "f1", "handler", {"item": "x", "deps": {"a": 1}}), "wf-1")
    assert result["exit_code"] == 0 and result["has_output"] is True
    assert result["output"] == {
        "item": "x",
        "deps": {"a": 1},
        "n": 2,
        "missing": "dflt",
        "wf": "wf-1",
        "attempt": 2,
    }
    assert "item=x" in result["log_tail"] and "printed" in result["log_tail"]
    assert STATE["wf-1"] == {"count": 2, "last": "s", "seen": [4]}
    again = await channel.run(function_run(root, "f2", "async_handler", {"x": 21}), "wf-1")
    assert again["output"] == 42


async def test_a_function_finds_its_input_in_the_input_file_too(agent: tuple[AgentChannel, Any, Path]) -> None:
    channel, _, root = agent
    result = await channel.run(function_run(root, "in1", "reads_file", {"x": [1, 2]}), "wf")
    assert result["output"] == {"x": [1, 2]}


async def test_function_errors(agent: tuple[AgentChannel, Any, Path]) -> None:
    channel, _, root = agent
    raised = await channel.run(function_run(root, "e1", "boom", None), "wf")
    assert raised["error"] == "ValueError: bad item" and "Traceback" in raised["log_tail"]
    bad = await channel.run(function_run(root, "e2", "not_json", None), "wf")
    assert "not JSON" in bad["output_error"]
    missing = await channel.run(function_run(root, "e3", "nope", None), "wf")
    assert missing["error"].startswith("AttributeError")
    # A child that dies without an answer is reported as such, at once (not as a timeout).
    gone = await channel.run(function_run(root, "e4", "vanishes", None, timeout_s=30), "wf")
    assert gone["error"] == "the function's process died without an answer", gone
    assert gone["timed_out"] is False and gone["cancelled"] is False
    # A step outside a map has no index: the context says 0.
    plain = function_run(root, "e5", "where_am_i", None)
    plain["ctx"]["index"] = None
    assert (await channel.run(plain, "wf"))["output"] == 0


async def test_the_functions_of_one_module_share_its_zygote(agent: tuple[AgentChannel, Any, Path]) -> None:
    """The module is imported once (a 200-step SDK workflow is one module): each task's child comes
    from the same zygote, whichever function of the module it calls."""
    channel, _, root = agent
    first = await channel.run(function_run(root, "z1", "my_zygote", None), "wf")
    second = await channel.run(function_run(root, "z2", "my_zygote_too", None), "wf")
    third = await channel.run(function_run(root, "z3", "my_zygote", None), "wf")
    assert first["output"] == second["output"] == third["output"] and isinstance(first["output"], int)


async def test_function_timeout_kills_only_its_child(agent: tuple[AgentChannel, subprocess.Popen[bytes], Path]) -> None:
    channel, proc, root = agent
    result = await channel.run(function_run(root, "slow", "slow", None, timeout_s=0.3), "wf")
    assert result["timed_out"] is True and result.get("fatal") is None
    # The function ran in a child of its zygote: the agent lives on and serves the next task.
    assert proc.poll() is None
    again = await channel.run(function_run(root, "f3", "async_handler", {"x": 2}), "wf")
    assert again["output"] == 4


async def test_log_lines_arrive_before_the_result_with_usage(agent: tuple[AgentChannel, Any, Path]) -> None:
    channel, _, root = agent
    batches: list[list[list[Any]]] = []
    script = "import sys; print('out 1'); sys.stdout.flush(); print('err 1', file=sys.stderr); print('out 2', end='')"
    result = await channel.run(command(root, "logs", [sys.executable, "-c", script]), "wf", batches.append)
    lines = [(stream, line) for batch in batches for stream, line, _ in batch]
    assert sorted(lines) == [("stderr", "err 1"), ("stdout", "out 1"), ("stdout", "out 2")]
    assert lines.index(("stdout", "out 1")) < lines.index(("stdout", "out 2"))
    assert all(isinstance(ts, float) for batch in batches for _, _, ts in batch)
    assert result["exit_code"] == 0 and result["stdout"] == "out 1\nout 2"
    assert result["cpu_time_s"] > 0 and result["peak_memory_bytes"] > 1024 * 1024

    quiet: list[list[list[Any]]] = []
    assert (await channel.run(command(root, "quiet", ["true"]), "wf", quiet.append))["exit_code"] == 0
    assert quiet == []  # nothing printed, nothing sent
