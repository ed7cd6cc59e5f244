"""Cold (one-shot container) dispatch against the real engine: the step contract's baseline."""

# ruff: noqa: F811  (pytest fixtures imported from tests.pool_fixtures are parameters here)

from __future__ import annotations

import time

from flowcore.pool_api import DispatchMode, ErrorKind, StateOp
from pool.services import PoolServices
from tests.pool_fixtures import make_task, pool, pool_settings, work_dir  # noqa: F401

COLD = DispatchMode.COLD


async def test_output_env_and_input(pool: PoolServices, base_image: str) -> None:
    script = (
        'import json,os,sys; d=json.load(sys.stdin); f=json.load(open(os.environ["FLOW_INPUT_PATH"]));'
        'print(json.dumps({"stdin": d, "file": f, "step": os.environ["FLOW_STEP_ID"], "idx": os.environ["FLOW_INDEX"],'
        '"att": os.environ["FLOW_ATTEMPT"], "tp": os.environ.get("TRACEPARENT"), "mine": os.environ["MINE"]}))'
    )
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    result = await pool.dispatcher.execute(
        make_task(
            base_image,
            command=["python3", "-c", script],
            input={"a": [1, 2]},
            env={"MINE": "x"},
            mode=COLD,
            index=3,
            attempt=2,
            traceparent=tp,
        )
    )
    assert result.ok, result
    assert result.output == {
        "stdin": {"a": [1, 2]},
        "file": {"a": [1, 2]},
        "step": "step",
        "idx": "3",
        "att": "2",
        "tp": tp,
        "mine": "x",
    }
    assert result.mode == COLD and result.pooled is False and result.container_id
    assert result.pool_service == pool.settings.service_id
    assert result.timings.total_ms > 0


async def test_text_output_and_empty_json(pool: PoolServices, base_image: str) -> None:
    text = await pool.dispatcher.execute(
        make_task(base_image, command="echo hello world", output="text", mode=COLD)
    )
    assert text.ok and text.output == "hello world\n"
    empty = await pool.dispatcher.execute(make_task(base_image, command="true", mode=COLD))
    assert empty.ok and empty.output is None


async def test_exit_code_and_log_tail(pool: PoolServices, base_image: str) -> None:
    result = await pool.dispatcher.execute(
        make_task(base_image, command="echo out; echo err >&2; exit 3", mode=COLD)
    )
    assert not result.ok and result.exit_code == 3
    assert result.error is not None and result.error.kind == ErrorKind.EXIT_CODE
    assert result.error.message == "exited with code 3"
    assert "out" in result.log_tail and "err" in result.log_tail


async def test_timeout_kills(pool: PoolServices, base_image: str) -> None:
    started = time.monotonic()
    result = await pool.dispatcher.execute(make_task(base_image, command="sleep 30", timeout_s=1, mode=COLD))
    assert result.error is not None and result.error.kind == ErrorKind.TIMEOUT
    assert time.monotonic() - started < 25


async def test_oom(pool: PoolServices, base_image: str) -> None:
    result = await pool.dispatcher.execute(
        make_task(
            base_image,
            command=["python3", "-c", "x = bytearray(200 * 1024 * 1024); print(len(x))"],
            resources={"memory_mb": 32},
            mode=COLD,
        )
    )
    assert result.error is not None and result.error.kind == ErrorKind.OOM, result
    assert "out of memory" in result.error.message


async def test_image_not_found(pool: PoolServices) -> None:
    result = await pool.dispatcher.execute(
        make_task("agentainer-flow/does-not-exist:1", command="true", mode=COLD)
    )
    assert result.error is not None and result.error.kind == ErrorKind.IMAGE_NOT_FOUND
    assert result.error.message == "image not found: agentainer-flow/does-not-exist:1"


async def test_invalid_json_output(pool: PoolServices, base_image: str) -> None:
    stdout = await pool.dispatcher.execute(make_task(base_image, command="echo not-json", mode=COLD))
    assert stdout.error is not None and stdout.error.kind == ErrorKind.INVALID_OUTPUT
    assert stdout.error.message.startswith("step output is not valid JSON")
    file = await pool.dispatcher.execute(
        make_task(base_image, command='echo "{broken" > "$FLOW_OUTPUT_PATH"', mode=COLD)
    )
    assert file.error is not None and file.error.kind == ErrorKind.INVALID_OUTPUT


async def test_output_file_and_state_updates(pool: PoolServices, base_image: str) -> None:
    command = (
        'echo \'{"from": "file"}\' > "$FLOW_OUTPUT_PATH"; echo ignored-stdout; '
        'echo \'[{"op": "increment", "key": "n", "value": 2}, {"op": "set", "key": "k", "value": [1]}]\' > "$FLOW_STATE_PATH"'
    )
    result = await pool.dispatcher.execute(make_task(base_image, command=command, mode=COLD))
    assert result.ok, result
    assert result.output == {"from": "file"}
    assert result.state_updates == [
        StateOp(op="increment", key="n", value=2),
        StateOp(op="set", key="k", value=[1]),
    ]
    bad = await pool.dispatcher.execute(
        make_task(
            base_image, command='echo \'[{"op": "explode", "key": "n"}]\' > "$FLOW_STATE_PATH"', mode=COLD
        )
    )
    assert bad.error is not None and bad.error.kind == ErrorKind.INVALID_OUTPUT
