"""Hostile step code against the real engine: each attack of issue 10 performed, and shown to fail.

Every step here runs in a pooled (or one-shot) container on the project's Docker engine with
network ``none``, exactly as a user's step would. The host-side canaries live in this test's own
temporary directories; nothing outside them is touched even if an attack succeeded.
"""

# ruff: noqa: F811  (pytest fixtures imported from tests.pool_fixtures are parameters here)

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from flowcore.keyspace import Keyspace
from flowcore.pool_api import DispatchMode, ErrorKind
from flowcore.settings import PoolSettings
from pool.channel import AgentListener, token_digest
from pool.errors import AgentStartFailed
from pool.services import PoolServices
from tests.pool_fixtures import make_task, nopython_image, pool, pool_settings, work_dir  # noqa: F401

AGENT = DispatchMode.AGENT


@pytest.fixture
def canary() -> Iterator[Path]:
    """A host directory with a root-only secret in it: what a container must never reach."""
    path = Path(tempfile.mkdtemp(prefix="canary", dir="/tmp"))
    (path / "secret").write_text("host-secret-" + secrets.token_hex(8))
    os.chmod(path / "secret", 0o600)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def py(code: str) -> list[str]:
    return ["python3", "-c", code]


async def test_hardening_defaults_read_from_inside_a_running_task(pool: PoolServices, base_image: str) -> None:
    code = (
        "import json, os\n"
        "status = dict(l.split(':', 1) for l in open('/proc/self/status') if ':' in l)\n"
        "def read(*paths):\n"
        "    for p in paths:\n"
        "        try:\n"
        "            return open(p).read().strip()\n"
        "        except OSError:\n"
        "            pass\n"
        "    return 'unreadable'\n"
        "try:\n"
        "    open('/usr/flow-write-test', 'w'); root_rw = True\n"
        "except OSError:\n"
        "    root_rw = False\n"
        "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'groups': os.getgroups(),\n"
        "  'cap_eff': status['CapEff'].strip(), 'cap_prm': status['CapPrm'].strip(),\n"
        "  'no_new_privs': status['NoNewPrivs'].strip(), 'seccomp': status['Seccomp'].strip(),\n"
        "  'root_writable': root_rw,\n"
        "  'pids_max': read('/sys/fs/cgroup/pids.max', '/sys/fs/cgroup/pids/pids.max'),\n"
        "  'memory_max': read('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes'),\n"
        "  'cpu_max': read('/sys/fs/cgroup/cpu.max', '/sys/fs/cgroup/cpu/cpu.cfs_quota_us'),\n"
        "  'tmp_writable': os.access('/tmp', os.W_OK), 'cwd': os.getcwd()}))\n"
    )
    result = await pool.dispatcher.execute(make_task(base_image, command=py(code), mode=AGENT))
    assert result.ok, result
    seen = result.output
    assert seen["uid"] != 0 and seen["gid"] != 0 and seen["groups"] == []
    assert int(seen["cap_eff"], 16) == 0 and int(seen["cap_prm"], 16) == 0
    assert seen["no_new_privs"] == "1"
    assert seen["seccomp"] == "2"  # the engine's default seccomp profile (filter mode)
    assert seen["root_writable"] is False and seen["tmp_writable"] is True
    # Limits from the pool's defaults (cgroup v2 or v1 names): a number, not "unlimited".
    assert seen["pids_max"].isdigit()
    assert seen["memory_max"].isdigit() and int(seen["memory_max"]) < 1 << 50
    assert not seen["cpu_max"].startswith(("max", "-1", "unreadable"))
    assert seen["cwd"].startswith("/flow/task/")


async def test_output_and_task_dir_links_reach_nothing_on_the_host(
    pool: PoolServices, base_image: str, canary: Path
) -> None:
    target = canary / "target"
    target.mkdir()
    script = (
        f'ln -sf {canary}/secret "$FLOW_OUTPUT_PATH" 2>/dev/null; '
        f'ln -sf /etc/shadow "$FLOW_STATE_PATH" 2>/dev/null; '
        f'd=$(dirname "$FLOW_OUTPUT_PATH"); rm -rf "$d" 2>/dev/null; ln -s {target} "$d" 2>/dev/null; '
        'ln -s / /flow/ctl/evil 2>/dev/null; touch /flow/ctl/x 2>/dev/null; echo \'"done"\''
    )
    for mode in (AGENT, DispatchMode.COLD):
        result = await pool.dispatcher.execute(make_task(base_image, command=script, mode=mode))
        assert result.ok and result.output == "done", result
        assert "host-secret" not in json.dumps(result.model_dump(mode="json"))
    assert list(target.iterdir()) == []
    # The directory the container sees at /flow/ctl is the pool's, read-only to it.
    for path in Path(pool.settings.work_dir).rglob("*"):
        assert path.name not in ("evil", "x"), path


async def test_a_task_cannot_reach_the_pool_socket_or_the_agent(pool: PoolServices, base_image: str) -> None:
    code = (
        "import json, os, signal, socket\n"
        "out = {}\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "for name, attempt in [\n"
        "    ('connect', lambda: s.connect('/flow/ctl/pool.sock')),\n"
        "    ('list', lambda: os.listdir('/flow/ctl')),\n"
        "    ('environ', lambda: open('/proc/1/environ').read()),\n"
        "    ('mem', lambda: open('/proc/1/mem', 'rb').read(1)),\n"
        "    ('kill', lambda: os.kill(1, signal.SIGKILL)),\n"
        "    ('agent_code', lambda: open('/flow/agent/flow_agent.py', 'a').write('#')),\n"
        "]:\n"
        "    try:\n"
        "        attempt(); out[name] = 'allowed'\n"
        "    except OSError as e:\n"
        "        out[name] = type(e).__name__\n"
        "print(json.dumps(out))\n"
    )
    result = await pool.dispatcher.execute(make_task(base_image, command=py(code), mode=AGENT))
    assert result.ok, result
    assert "allowed" not in result.output.values(), result.output
    after = await pool.dispatcher.execute(make_task(base_image, command="echo 1", mode=AGENT))
    assert after.ok and after.container_id == result.container_id  # the agent lived on


BACKGROUND = """
import json, os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        # A detached grandchild: outside the task's process group and session.
        deadline = time.time() + 20
        while time.time() < deadline:
            for pid in os.listdir('/proc'):
                try:
                    env = open(f'/proc/{pid}/environ', 'rb').read()
                except OSError:
                    continue
                if b'NEXT_SECRET' in env:
                    open('/tmp/stolen', 'wb').write(env)
            for path in ('/flow/task',):
                for root, _, files in os.walk(path):
                    for f in files:
                        if f == 'output.json':
                            try:
                                open(os.path.join(root, f), 'w').write('"hijacked"')
                            except OSError:
                                pass
            time.sleep(0.01)
    os._exit(0)
print(json.dumps(os.getpid()))
"""


async def test_a_detached_background_process_does_not_survive_its_task(pool: PoolServices, base_image: str) -> None:
    first = await pool.dispatcher.execute(
        make_task(base_image, workflow_id="wf-bg", command=py(BACKGROUND), mode=AGENT)
    )
    assert first.ok, first
    second = await pool.dispatcher.execute(
        make_task(
            base_image,
            workflow_id="wf-bg",
            command="sleep 0.5; echo '\"mine\"' > \"$FLOW_OUTPUT_PATH\"; ls /tmp; echo '\"stdout\"'",
            env={"NEXT_SECRET": "s3cret"},
            mode=AGENT,
        )
    )
    assert second.ok and second.container_id == first.container_id
    assert second.output == "mine"
    assert "stolen" not in second.log_tail
    # Nothing of the task's uid runs in the container any more.
    code = (
        "import os\n"
        "me = os.getpid()\n"
        "print(sorted(p for p in os.listdir('/proc') if p.isdigit() and int(p) not in (1, me)"
        " and os.stat('/proc/' + p).st_uid != 0))"
    )
    res = await pool.runtime.exec(first.container_id or "", py(code), {}, "/", 10.0)
    assert res.stdout.decode().strip() == "[]", res


FUNCTIONS = """
import json, os, sys

def attack(ctx):
    seen = {}
    # Forge a state write for another task and workflow over the channel the step was given.
    channel = ctx.state._channel
    channel.send({"t": "state", "rid": 999, "id": "other-task", "workflow_id": "wf-victim",
                  "op": "set", "key": "owned", "value": True})
    for name, attempt in [
        ("kill_agent", lambda: os.kill(1, 9)),
        ("kill_zygote_as_other", lambda: os.kill(os.getppid(), 0) if os.getuid() == 0 else (_ for _ in ()).throw(PermissionError())),
        ("zygote_mem", lambda: open(f"/proc/{os.getppid()}/mem", "rb").read(1)),
        ("agent_mem", lambda: open("/proc/1/mem", "rb").read(1)),
        ("agent_environ", lambda: open("/proc/1/environ").read()),
    ]:
        try:
            attempt()
            seen[name] = "allowed"
        except Exception as exc:
            seen[name] = type(exc).__name__
    ctx.state.set("mine", 1)
    seen["pid_is_agent"] = "allowed" if os.getpid() == 1 else "no"
    return seen

def victim(ctx):
    return ctx.state.get("owned", "untouched")
"""


async def test_a_function_step_cannot_patch_the_agent_or_write_another_workflow(
    pool: PoolServices, pool_settings: PoolSettings, base_image: str
) -> None:
    fn = {"module": "attack_steps", "qualname": "attack", "source": FUNCTIONS}
    keys = Keyspace(pool_settings.redis.prefix)
    setup = aioredis.from_url(pool_settings.redis.url)
    try:
        for wf in ("wf-victim", "wf-attacker"):
            await setup.hset(keys.workflow(wf), mapping={"status": "running"})
    finally:
        await setup.aclose()
    result = await pool.dispatcher.execute(
        make_task(base_image, workflow_id="wf-attacker", function=fn, mode=AGENT)
    )
    assert result.ok, result
    assert "allowed" not in result.output.values(), result.output
    keys = Keyspace(pool_settings.redis.prefix)
    client = aioredis.from_url(pool_settings.redis.url)
    try:
        victim_state = await client.hgetall(keys.state("wf-victim"))
        attacker_state = await client.hgetall(keys.state("wf-attacker"))
    finally:
        await client.aclose()
    assert victim_state == {}
    # The forged write was attributed to the attacker's own task (its own workflow), if to anything.
    assert {k.decode() for k in attacker_state} <= {"mine", "owned"} and b"mine" in attacker_state


async def test_output_file_tricks_fail_the_step_without_blocking(pool: PoolServices, base_image: str) -> None:
    # The task cannot replace its output file (its directory is the agent's); a fifo or a link it
    # makes elsewhere and a huge file are refused by the reader, which never blocks.
    script = (
        'mkfifo "$HOME/fifo"; rm -f "$FLOW_OUTPUT_PATH" 2>/dev/null; mkfifo "$FLOW_OUTPUT_PATH" 2>/dev/null; '
        'python3 -c "import os; f=open(os.environ[\'FLOW_OUTPUT_PATH\'], \'w\'); f.truncate(64 * 1024 * 1024)"'
    )
    result = await pool.dispatcher.execute(make_task(base_image, command=script, mode=AGENT, timeout_s=30))
    assert not result.ok and result.error is not None
    assert result.error.kind == ErrorKind.INVALID_OUTPUT and "larger than the limit" in result.error.message
    health = await pool.dispatcher.execute(make_task(base_image, command="echo 2", mode=AGENT))
    assert health.ok and health.output == 2


async def test_the_next_task_finds_a_clean_directory_whatever_the_last_one_left(
    pool: PoolServices, base_image: str
) -> None:
    """Task directories are recycled between tasks (no directory churn): only a clean one is kept."""
    plants = [
        # Left as made, but with loosened modes and content: recycled, emptied, modes reset.
        'chmod 666 "$FLOW_OUTPUT_PATH" "$FLOW_STATE_PATH"; chmod 777 "$HOME" "$TMPDIR"; '
        'echo \'{"planted": 1}\' > "$FLOW_OUTPUT_PATH"; echo \'[{"op": "set", "key": "k", "value": 1}]\' > "$FLOW_STATE_PATH"; '
        "echo 1",
        # Files in work/ and tmp/, a second link to the output file: a new directory.
        'echo secret > "$HOME/left"; echo secret > "$TMPDIR/left"; ln "$FLOW_OUTPUT_PATH" /tmp/kept; echo 2',
    ]
    report = (
        'd=$(dirname "$FLOW_OUTPUT_PATH"); '
        'printf \'{"entries": "%s", "work": "%s", "tmp": "%s", "out": "%s", "modes": "%s", "kept": "%s"}\' '
        '"$(ls -A "$d" | tr "\\n" " ")" "$(ls -A "$HOME")" "$(ls -A "$TMPDIR")" '
        '"$(cat "$FLOW_OUTPUT_PATH" "$FLOW_STATE_PATH")" '
        '"$(stat -c %a "$FLOW_OUTPUT_PATH" "$FLOW_STATE_PATH" "$HOME" "$TMPDIR" | tr "\\n" " ")" '
        '"$(ls -A /tmp)"'
    )
    first = None
    for plant in plants:
        planted = await pool.dispatcher.execute(make_task(base_image, command=plant, mode=AGENT))
        assert planted.ok, planted.error
        first = first or planted.container_id
        seen = await pool.dispatcher.execute(make_task(base_image, command=report, mode=AGENT))
        assert seen.ok and seen.container_id == first, seen
        assert seen.output == {
            "entries": "input.json output.json state.json tmp work ",
            "work": "",
            "tmp": "",
            "out": "",
            "modes": "600 600 700 700 ",
            "kept": "",
        }, (plant, seen.output)


async def test_exec_mode_runs_unprivileged_and_cleans_up(pool: PoolServices, nopython_image: str) -> None:
    first = await pool.dispatcher.execute(
        make_task(
            nopython_image,
            command="id -u; (sleep 60 &) ; touch /tmp/left-behind; cat /proc/self/status | grep -E 'CapEff|NoNewPrivs'",
            mode=DispatchMode.EXEC,
            output="text",
        )
    )
    assert first.ok, first
    lines = first.output.splitlines()
    assert lines[0] != "0"
    status = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
    assert int(status["CapEff"].strip(), 16) == 0 and status["NoNewPrivs"].strip() == "1"
    second = await pool.dispatcher.execute(
        make_task(
            nopython_image,
            command="ls /tmp; for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null | tr '\\0' ' '; echo; done",
            mode=DispatchMode.EXEC,
            output="text",
        )
    )
    assert second.ok and second.container_id == first.container_id
    assert "left-behind" not in second.output and "sleep 60" not in second.output


async def test_adoption_after_a_hostile_task_touches_nothing_on_the_host(
    pool_settings: PoolSettings, base_image: str, canary: Path
) -> None:
    # The step plants every link it can where the old adoption deleted recursively; the restarted
    # pool adopts the container (its agent reconnects with its token) and the canary is intact.
    plant = (
        f'for d in /flow/ctl /flow/task /flow/ctl/tasks "$HOME/.."; do ln -s {canary} "$d/tasks" 2>/dev/null; '
        f'ln -s / "$d/root" 2>/dev/null; done; echo 1'
    )
    keep = pool_settings.model_copy(update={"keep_containers_on_shutdown": True})
    first = await PoolServices.open(keep)
    try:
        planted = await first.dispatcher.execute(make_task(base_image, command=plant, mode=AGENT))
        assert planted.ok, planted.error
    finally:
        await first.close()
    second = await PoolServices.open(pool_settings)
    try:
        assert planted.pool_key in second.manager.pools
        again = await second.dispatcher.execute(make_task(base_image, command="echo 2", mode=AGENT))
        assert again.ok and again.container_id == planted.container_id
    finally:
        await second.close()
    assert (canary / "secret").read_text().startswith("host-secret-")
    assert sorted(p.name for p in canary.iterdir()) == ["secret"]


async def test_a_forged_agent_without_the_token_is_refused() -> None:
    sock_dir = Path(tempfile.mkdtemp(prefix="fl", dir="/tmp"))
    try:
        listener = await AgentListener.open(str(sock_dir / "pool.sock"))

        async def impostor() -> None:
            reader, writer = await asyncio.open_unix_connection(str(sock_dir / "pool.sock"))
            writer.write(b'{"t": "hello", "v": 2, "token": "guess", "pid": 7, "busy": 0}\n')
            await writer.drain()
            await reader.read()  # the pool hangs up
            writer.close()

        attempt = asyncio.create_task(impostor())
        with pytest.raises(AgentStartFailed, match="refused"):
            await listener.accept(token_sha256=token_digest("the-real-one"), timeout_s=1.0)
        await asyncio.wait_for(attempt, 5)
        assert not (sock_dir / "pool.sock").exists()  # no longer listening
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)
