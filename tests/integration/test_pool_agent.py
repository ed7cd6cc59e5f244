"""Agent mode against the real engine: warm hits, commands and functions, isolation, latency."""

# ruff: noqa: F811  (pytest fixtures imported from tests.pool_fixtures are parameters here)

from __future__ import annotations

import asyncio
import json
import statistics

import redis.asyncio as aioredis

from flowcore.keyspace import Keyspace
from flowcore.pool_api import DispatchMode, ErrorKind
from pool.services import PoolServices
from tests.pool_fixtures import make_task, pool, pool_settings, work_dir  # noqa: F401

AGENT = DispatchMode.AGENT

STEPS = """
def count(ctx):
    n = ctx.state.increment("visits")
    ctx.state.append("items", ctx.item)
    ctx.log.info("visit %s", n)
    return {"n": n, "item": ctx.item, "seen": ctx.state.get("items"), "none": ctx.state.get("missing")}

async def double(ctx):
    return ctx.input["x"] * 2

def fail(ctx):
    raise RuntimeError("step broke")

def forever(ctx):
    import time
    time.sleep(60)

def oom_score(ctx):
    with open("/proc/self/oom_score_adj") as handle:
        return int(handle.read())
"""


def fn(qualname: str) -> dict[str, str]:
    return {"module": "my_steps", "qualname": qualname, "source": STEPS}


async def test_warm_hit_after_first_use_and_latency(pool: PoolServices, base_image: str) -> None:
    first = await pool.dispatcher.execute(make_task(base_image, command=["echo", "1"], mode=AGENT))
    assert first.ok and first.output == 1 and first.pooled and first.mode == AGENT
    assert first.pool_key is not None
    totals = []
    for i in range(30):
        result = await pool.dispatcher.execute(make_task(base_image, command=["echo", str(i)], mode=AGENT))
        assert result.ok and result.output == i
        assert result.container_id == first.container_id  # the same warm container
        totals.append(result.timings.total_ms)
    stats = pool.manager.get(first.pool_key).report()
    assert stats["warm_hits"] == 30 and stats["cold_starts"] == 1
    totals.sort()
    print(
        f"\nagent dispatch total_ms p50={statistics.median(totals):.2f} p95={totals[int(len(totals) * 0.95) - 1]:.2f}"
    )


async def test_auto_uses_the_agent_for_python_images(pool: PoolServices, base_image: str) -> None:
    result = await pool.dispatcher.execute(make_task(base_image, command="echo '\"hi\"'"))
    assert result.ok and result.output == "hi" and result.mode == AGENT


async def test_isolation_between_tasks(pool: PoolServices, base_image: str) -> None:
    one = await pool.dispatcher.execute(
        make_task(
            base_image,
            command="echo data > mine.txt; echo tmp > $TMPDIR/t; export X=1; echo $SECRET",
            env={"SECRET": "s3cr3t"},
            mode=AGENT,
            output="text",
        )
    )
    assert one.ok and one.output.strip() == "s3cr3t"
    two = await pool.dispatcher.execute(
        make_task(
            base_image,
            command='echo "[$SECRET][$X]"; ls mine.txt $TMPDIR/t 2>/dev/null | wc -l',
            mode=AGENT,
            output="text",
        )
    )
    assert two.ok and two.container_id == one.container_id
    assert two.output.splitlines() == ["[][]", "0"]


async def test_failures_in_agent_mode(pool: PoolServices, base_image: str) -> None:
    code = await pool.dispatcher.execute(make_task(base_image, command="echo oops >&2; exit 4", mode=AGENT))
    assert code.error is not None and code.error.kind == ErrorKind.EXIT_CODE and "oops" in code.log_tail
    slow = await pool.dispatcher.execute(make_task(base_image, command="sleep 30", timeout_s=0.5, mode=AGENT))
    assert slow.error is not None and slow.error.kind == ErrorKind.TIMEOUT
    bad = await pool.dispatcher.execute(make_task(base_image, command="echo nope", mode=AGENT))
    assert bad.error is not None and bad.error.kind == ErrorKind.INVALID_OUTPUT
    # The container survived all of that: none was lost; each failed task's container was removed by
    # the default cleanup policy (failures are removed, ADR 014), so the next task has a fresh one.
    ok = await pool.dispatcher.execute(make_task(base_image, command="echo 7", mode=AGENT))
    assert ok.ok and ok.output == 7 and ok.container_id not in (code.container_id, slow.container_id)
    assert pool.manager.get(ok.pool_key or "").stats.replaced == 0


async def test_oom_in_agent_mode(pool: PoolServices, base_image: str) -> None:
    result = await pool.dispatcher.execute(
        make_task(
            base_image,
            command=["python3", "-c", "x = bytearray(200 * 1024 * 1024)"],
            resources={"memory_mb": 48},
            mode=AGENT,
        )
    )
    assert result.error is not None and result.error.kind == ErrorKind.OOM, result
    assert "out of memory" in result.error.message


async def test_the_memory_limit_picks_the_task_not_the_agent(pool: PoolServices, base_image: str) -> None:
    """A task's processes carry the highest OOM score, the agent its own: the task is the victim.

    Were the agent killed instead, the channel would close and the task would be reported lost
    (and retried) instead of ``oom``: what a busy CI machine once showed. The agent raises the score
    right after the exec (a window of microseconds, before any program has allocated much): the
    command reads it after a pause.
    """
    raw = await pool.dispatcher.execute(
        make_task(base_image, command="sleep 0.2; cat /proc/self/oom_score_adj", mode=AGENT)
    )
    assert raw.ok and raw.output == 1000, raw
    agent = await pool.dispatcher.execute(make_task(base_image, command="cat /proc/1/oom_score_adj", mode=AGENT))
    assert agent.ok and agent.output == 0, agent
    function = await pool.dispatcher.execute(make_task(base_image, function=fn("oom_score"), mode=AGENT))
    assert function.ok and function.output == 1000, function


async def test_function_steps_with_state_from_a_network_none_container(
    pool: PoolServices,
    base_image: str,
    redis_url: str,
) -> None:
    keys = Keyspace("flow")
    client = aioredis.from_url(redis_url)
    try:
        await client.hset(keys.workflow("wf-state"), mapping={"status": "running"})
        outputs = []
        for item in ("a", "b"):
            result = await pool.dispatcher.execute(
                make_task(
                    base_image,
                    function=fn("count"),
                    input={"item": item},
                    workflow_id="wf-state",
                    network="none",
                    mode=AGENT,
                )
            )
            assert result.ok, result
            outputs.append(result.output)
            assert "visit" in result.log_tail
        assert outputs == [
            {"n": 1, "item": "a", "seen": ["a"], "none": None},
            {"n": 2, "item": "b", "seen": ["a", "b"], "none": None},
        ]
        assert json.loads(await client.hget(keys.state("wf-state"), "visits")) == 2
        await pool.recorder.flush()
        record = json.loads((await client.hgetall(keys.containers("wf-state")))[result.container_id.encode()])
        assert record["pooled"] is True and record["mode"] == "agent" and record["status"] == "succeeded"
    finally:
        await client.aclose()


async def test_function_kinds(pool: PoolServices, base_image: str) -> None:
    doubled = await pool.dispatcher.execute(make_task(base_image, function=fn("double"), input={"x": 21}))
    assert doubled.ok and doubled.output == 42
    failed = await pool.dispatcher.execute(make_task(base_image, function=fn("fail")))
    assert failed.error is not None and failed.error.kind == ErrorKind.FUNCTION_ERROR
    assert "RuntimeError: step broke" in failed.error.message and "Traceback" in failed.log_tail
    slow = await pool.dispatcher.execute(make_task(base_image, function=fn("forever"), timeout_s=0.5))
    assert slow.error is not None and slow.error.kind == ErrorKind.TIMEOUT
    # Only the function's own process was killed (it runs outside the agent): no container was lost
    # (the failed tasks' containers were removed by the default cleanup policy, ADR 014).
    after = await pool.dispatcher.execute(make_task(base_image, function=fn("double"), input={"x": 1}))
    assert after.ok and after.output == 2 and after.container_id != slow.container_id
    assert pool.manager.get(after.pool_key or "").stats.replaced == 0


async def test_cancel_a_running_task(pool: PoolServices, base_image: str) -> None:
    request = make_task(base_image, command="sleep 30", mode=AGENT)
    running = asyncio.create_task(pool.dispatcher.execute(request))
    for _ in range(200):
        if request.task_id in pool.dispatcher.running and pool.dispatcher.running[request.task_id].container:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    await pool.dispatcher.cancel(request.task_id)
    result = await asyncio.wait_for(running, 10)
    assert result.error is not None and result.error.kind == ErrorKind.CANCELLED
