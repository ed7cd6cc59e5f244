"""Live task logs and per-task resource usage, on the real engine and Redis, in every dispatch mode."""

# ruff: noqa: F811  (pytest fixtures imported from tests.pool_fixtures are parameters here)

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from flowcore.keyspace import Keyspace
from flowcore.logstream import LogLine
from flowcore.pool_api import DispatchMode, TaskResult
from flowcore.settings import PoolSettings
from pool.services import PoolServices
from pool.tasklogs import FINAL_MAX_LINES
from tests.pool_fixtures import make_task, nopython_image, pool, pool_settings, work_dir  # noqa: F401

MIB = 1024 * 1024


async def log_lines(redis_url: str, wf_id: str) -> list[LogLine]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        entries = await client.xrange(Keyspace("flow").logs(wf_id))
    finally:
        await client.aclose()
    return [LogLine.from_fields(fields) for _, fields in entries]


async def all_lines(redis_url: str, wf_id: str, result: TaskResult) -> list[tuple[str, str]]:
    """What the workflow's stream ends up with: the lines the pool appended, then those the worker
    appends with the task's completion (``result.logs``)."""
    appended = [(e.stream, e.line) for e in await log_lines(redis_url, wf_id)]
    return appended + [(x.stream, x.line) for x in result.logs]


async def wait_for_line(redis_url: str, wf_id: str, text: str) -> list[LogLine]:
    for _ in range(400):
        lines = await log_lines(redis_url, wf_id)
        if any(line.line == text for line in lines):
            return lines
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} never reached the log stream")


async def test_agent_command_lines_are_live_tagged_and_complete(
    pool: PoolServices, pool_settings: PoolSettings, base_image: str
) -> None:
    # The command blocks after its first line until the test creates /tmp/go in its container (the
    # host cannot reach the task's files): the first line must be readable in Redis while it runs.
    script = (
        'echo first; echo "warning 1" >&2; '
        'while [ ! -e /tmp/go ]; do sleep 0.02; done; printf "second\\nno newline"'
    )
    request = make_task(
        base_image, workflow_id="wf-live", step_id="talk", index=2, attempt=3, command=script,
        mode=DispatchMode.AGENT, output="text",
    )
    running = asyncio.create_task(pool.dispatcher.execute(request))
    early = await wait_for_line(pool_settings.redis.url, "wf-live", "first")
    assert not running.done()
    assert [(e.step_id, e.index, e.attempt, e.stream) for e in early[:1]] == [("talk", 2, 3, "stdout")]
    busy = [c for p in pool.manager.pools.values() for c in p.containers.values() if c.busy]
    assert len(busy) == 1
    await pool.runtime.exec(busy[0].container_id, ["touch", "/tmp/go"], {}, "/", 10.0, user="65534:65534")
    result = await asyncio.wait_for(running, 60)
    assert result.ok, result
    # Every line is either in Redis or in the result, the unterminated last one included, in order.
    assert await all_lines(pool_settings.redis.url, "wf-live", result) == [
        ("stdout", "first"),
        ("stderr", "warning 1"),
        ("stdout", "second"),
        ("stdout", "no newline"),
    ]
    assert all(e.ts > 0 for e in await log_lines(pool_settings.redis.url, "wf-live"))
    assert all(x.ts > 0 for x in result.logs)
    assert result.log_tail.endswith("no newline")  # the tail is still there as well


async def test_agent_command_usage_from_wait4(pool: PoolServices, base_image: str) -> None:
    code = "b = bytearray(96 * 1024 * 1024); x = sum(range(3_000_000)); print(len(b))"
    result = await pool.dispatcher.execute(
        make_task(base_image, command=["python3", "-c", code], mode=DispatchMode.AGENT, resources={"memory_mb": 512})
    )
    assert result.ok and result.output == 96 * MIB
    assert result.cpu_time_s is not None and result.cpu_time_s > 0
    assert result.peak_memory_bytes is not None and result.peak_memory_bytes >= 96 * MIB
    # The next task in the same warm container is measured on its own, not with the first one's peak.
    small = await pool.dispatcher.execute(
        make_task(base_image, command=["true"], mode=DispatchMode.AGENT, resources={"memory_mb": 512})
    )
    assert small.ok and small.container_id == result.container_id
    # (ru_maxrss never goes below the agent's own RSS at the spawn, some 20 MB)
    assert small.peak_memory_bytes is not None and small.peak_memory_bytes < 64 * MIB


FUNCTIONS = """
import sys

def chatty(ctx):
    print("hello from", ctx.step_id)
    print("to stderr", file=sys.stderr)
    ctx.log.info("logged %d", 7)
    block = bytearray(80 * 1024 * 1024)
    return sum(range(2_000_000)) and len(block)
"""


async def test_function_lines_and_usage(pool: PoolServices, pool_settings: PoolSettings, base_image: str) -> None:
    function = {"module": "chatty_steps", "qualname": "chatty", "source": FUNCTIONS}
    result = await pool.dispatcher.execute(
        make_task(base_image, workflow_id="wf-fn", step_id="fn", function=function, resources={"memory_mb": 512})
    )
    assert result.ok and result.output == 80 * MIB, result
    assert await all_lines(pool_settings.redis.url, "wf-fn", result) == [
        ("stdout", "hello from fn"),
        ("stderr", "to stderr"),
        ("stderr", "INFO flow.step: logged 7"),
    ]
    assert result.cpu_time_s is not None and result.cpu_time_s > 0
    assert result.peak_memory_bytes is not None and result.peak_memory_bytes >= 80 * MIB


async def test_exec_mode_lines_and_cpu(
    pool: PoolServices, pool_settings: PoolSettings, nopython_image: str
) -> None:
    request = make_task(
        nopython_image, workflow_id="wf-exec", command='echo one; echo two >&2; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done',
        mode=DispatchMode.EXEC, output="text",
    )
    result = await pool.dispatcher.execute(request)
    assert result.ok and result.mode == DispatchMode.EXEC, result
    lines = await all_lines(pool_settings.redis.url, "wf-exec", result)
    assert sorted(lines) == [("stderr", "two"), ("stdout", "one")]
    # Without the agent, nothing in the container measures the task (the host reads no file it wrote).
    assert result.cpu_time_s is None and result.peak_memory_bytes is None


async def test_cold_mode_lines_and_usage(pool: PoolServices, pool_settings: PoolSettings, base_image: str) -> None:
    code = "import sys; b = bytearray(48 * 1024 * 1024); print('cold out'); print('cold err', file=sys.stderr)"
    result = await pool.dispatcher.execute(
        make_task(base_image, workflow_id="wf-cold", command=["python3", "-c", code], mode=DispatchMode.COLD,
                  output="text")
    )
    assert result.ok and result.mode == DispatchMode.COLD, result
    lines = await all_lines(pool_settings.redis.url, "wf-cold", result)
    assert sorted(lines) == [("stderr", "cold err"), ("stdout", "cold out")]
    assert result.cpu_time_s is not None and result.cpu_time_s > 0
    assert result.peak_memory_bytes is not None and result.peak_memory_bytes >= 48 * MIB


async def test_a_chatty_task_appends_its_own_lines(pool: PoolServices, pool_settings: PoolSettings, base_image: str) -> None:
    # More lines than a result carries: the pool appends what the result cannot carry before it answers.
    result = await pool.dispatcher.execute(
        make_task(base_image, workflow_id="wf-chatty", command="seq 1 3000", mode=DispatchMode.AGENT, output="text")
    )
    assert result.ok and len(result.logs) <= FINAL_MAX_LINES < 3000
    lines = await all_lines(pool_settings.redis.url, "wf-chatty", result)
    assert [line for _, line in lines] == [str(i) for i in range(1, 3001)]
