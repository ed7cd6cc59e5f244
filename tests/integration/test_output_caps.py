"""Oversized outputs and log floods on the real engine, in every dispatch mode (issue 12, items 7-8).

A step's stdout is kept up to 16 MiB by whoever reads it (the agent, ``docker exec``, a one-shot
container's log): past it the step fails with the reason, or, for a text step that chose
``output_overflow: truncate``, completes with the start of it marked ``output_truncated``. A flood of
log lines never costs the container: it answers the next task.
"""

# ruff: noqa: F811  (pytest fixtures imported from tests.pool_fixtures are parameters here)

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from flowcore import limits
from flowcore.limits import LimitsSection
from flowcore.pool_api import DispatchMode, ErrorKind
from pool.runtime import MAX_STDOUT_BYTES
from pool.services import PoolServices
from tests.pool_fixtures import make_task, nopython_image, pool, pool_settings, work_dir  # noqa: F401

FLOOD_MB = 20
FLOOD = f"head -c {FLOOD_MB * 1024 * 1024} /dev/zero | tr '\\0' 'a'"


@pytest.mark.parametrize("mode", [DispatchMode.AGENT, DispatchMode.EXEC, DispatchMode.COLD])
async def test_stdout_past_the_cap_fails_or_is_marked_never_silent(
    pool: PoolServices, base_image: str, nopython_image: str, mode: DispatchMode
) -> None:
    # exec and cold of an image without python3 go through docker exec / the container's own log.
    image = base_image if mode == DispatchMode.AGENT else nopython_image
    failed = await pool.dispatcher.execute(make_task(image, command=FLOOD, mode=mode, output="text", timeout_s=120))
    assert not failed.ok and failed.error is not None, failed.error
    assert failed.error.kind == ErrorKind.INVALID_OUTPUT and "went past 16 MiB" in failed.error.message
    kept = await pool.dispatcher.execute(
        make_task(image, command=FLOOD, mode=mode, output="text", output_overflow="truncate", timeout_s=120)
    )
    assert kept.ok, kept.error
    assert kept.output_truncated and isinstance(kept.output, str) and len(kept.output) == MAX_STDOUT_BYTES
    small = await pool.dispatcher.execute(make_task(image, command="echo 5", mode=mode))
    assert small.ok and small.output == 5 and not small.output_truncated


async def test_a_log_flood_is_capped_and_the_container_serves_on(pool: PoolServices, base_image: str) -> None:
    flood = f"head -c {64 * 1024 * 1024} /dev/zero | tr '\\0' 'a' | fold -w 200 >&2; echo 7"
    result = await pool.dispatcher.execute(make_task(base_image, command=flood, mode=DispatchMode.AGENT, timeout_s=120))
    assert result.ok and result.output == 7, result.error
    again = await pool.dispatcher.execute(make_task(base_image, command="echo 8", mode=DispatchMode.AGENT))
    assert again.ok and again.output == 8 and again.container_id == result.container_id


async def test_a_function_result_past_the_cap_fails_with_the_reason(pool: PoolServices, base_image: str) -> None:
    source = "def big(ctx):\n    return 'x' * (17 * 1024 * 1024)\n"
    result = await pool.dispatcher.execute(
        make_task(base_image, function={"module": "m", "qualname": "big", "source": source}, mode=DispatchMode.AGENT)
    )
    assert not result.ok and result.error is not None
    assert result.error.kind == ErrorKind.INVALID_OUTPUT and "larger than the limit" in result.error.message


async def test_a_function_that_answers_past_its_own_check_is_bounded_by_the_agent(
    pool: PoolServices, base_image: str
) -> None:
    """Hostile step code skips the child's size check and writes a huge answer to its task socket."""
    source = (
        "def sneak(ctx):\n"
        "    import gc, os\n"
        "    channel = next(o for o in gc.get_objects() if type(o).__name__ == 'ChildChannel')\n"
        "    channel.send({'t': 'done', 'exit_code': 0, 'has_output': True, 'output': 'x' * (30 * 1024 * 1024)})\n"
        "    os._exit(0)\n"
    )
    result = await pool.dispatcher.execute(
        make_task(base_image, function={"module": "m", "qualname": "sneak", "source": source}, mode=DispatchMode.AGENT)
    )
    assert not result.ok and result.error is not None and result.output is None
    assert result.error.kind == ErrorKind.INVALID_OUTPUT and "larger than the limit" in result.error.message


async def test_a_state_value_past_the_limit_is_refused_to_step_code(
    pool: PoolServices, base_image: str, redis_url: str
) -> None:
    import redis.asyncio as aioredis

    from flowcore.keyspace import Keyspace

    client = aioredis.from_url(redis_url)
    try:
        await client.hset(Keyspace("flow").workflow("wf-state-cap"), mapping={"status": "running"})
        source = (
            "def hoard(ctx):\n"
            "    ctx.state.set('small', 1)\n"
            "    ctx.state.set('big', 'x' * (2 * 1024 * 1024))\n"
        )
        result = await pool.dispatcher.execute(
            make_task(
                base_image,
                workflow_id="wf-state-cap",
                function={"module": "m", "qualname": "hoard", "source": source},
                mode=DispatchMode.AGENT,
            )
        )
        assert not result.ok and result.error is not None and result.error.kind == ErrorKind.FUNCTION_ERROR
        assert "the limit is 1048576 bytes per key" in result.error.message
        assert await client.hget(Keyspace("flow").state("wf-state-cap"), "big") is None
        assert await client.hget(Keyspace("flow").state("wf-state-cap"), "small") == b"1"
    finally:
        await client.aclose()


@pytest.fixture
def small_limits() -> Iterator[LimitsSection]:
    """This process's limits lowered, as FLOW_LIMITS__* would set them at a pool's start."""
    before = limits.current()
    small = LimitsSection(max_output_mib=1, max_log_mib_per_task=1)
    limits.configure(small)
    yield small
    limits.configure(before)


@pytest.mark.parametrize("mode", [DispatchMode.AGENT, DispatchMode.COLD])
async def test_the_configured_output_limit_holds_in_the_agent_and_the_pool(
    small_limits: LimitsSection, pool: PoolServices, base_image: str, nopython_image: str, mode: DispatchMode
) -> None:
    """FLOW_LIMITS__MAX_OUTPUT_MIB=1: 2 MiB of stdout fails naming 1 MiB, in the agent (which gets the
    limit with the task) and in a one-shot container's log reader (the pool's)."""
    image = base_image if mode == DispatchMode.AGENT else nopython_image
    two_mib = "head -c 2097152 /dev/zero | tr '\\0' 'a'"
    failed = await pool.dispatcher.execute(make_task(image, command=two_mib, mode=mode, output="text", timeout_s=60))
    assert not failed.ok and failed.error is not None
    assert failed.error.kind == ErrorKind.INVALID_OUTPUT and "went past 1 MiB" in failed.error.message
    kept = await pool.dispatcher.execute(
        make_task(image, command=two_mib, mode=mode, output="text", output_overflow="truncate", timeout_s=60)
    )
    assert kept.ok and kept.output_truncated and isinstance(kept.output, str)
    assert len(kept.output) == small_limits.max_output_bytes


async def test_the_configured_log_limit_stops_the_live_log(
    small_limits: LimitsSection, pool: PoolServices, base_image: str, redis_url: str
) -> None:
    """FLOW_LIMITS__MAX_LOG_MIB_PER_TASK=1: the live log of a 3 MiB flood stops at 1 MiB, saying so."""
    import redis.asyncio as aioredis

    from flowcore.keyspace import Keyspace

    flood = "head -c 3145728 /dev/zero | tr '\\0' 'a' | fold -w 200 >&2; echo 3"
    task = make_task(base_image, command=flood, mode=DispatchMode.AGENT, timeout_s=60,
                     workflow_id=f"wf-logcap-{uuid.uuid4().hex[:8]}")
    result = await pool.dispatcher.execute(task)
    assert result.ok and result.output == 3, result.error
    await pool.logs.flush()
    client = aioredis.from_url(redis_url)
    try:
        entries = await client.xrange(Keyspace("flow").logs(task.workflow_id))
    finally:
        await client.aclose()
    text = b"\n".join(fields.get(b"line", b"") for _, fields in entries)
    assert b"over 1 MiB of output; the live log stops here" in text
    assert len(text) < 2 * small_limits.max_log_bytes
