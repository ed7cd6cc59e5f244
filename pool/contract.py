"""The step contract: what a task sees inside its container, the same in every dispatch mode.

The task's input, output and state updates cross the container boundary over the agent protocol
(or, for images without python3, the engine's exec/attach streams): the host never reads or writes
a file a container can write. Inside the container each task has a directory of its own::

    /flow/task/{n}/input.json   the task's input as JSON; also the task's stdin
    /flow/task/{n}/output.json  the step may write its output here (JSON); wins over stdout
    /flow/task/{n}/state.json   the step may write a JSON list of StateOp objects here
    /flow/task/{n}/work/        the task's working directory and HOME (unless the step names a workdir)
    /flow/task/{n}/tmp/         TMPDIR

``output.json`` and ``state.json`` need the agent (images with python3): the agent reads them without
following links, regular files only, at most the output limit (``FLOW_LIMITS__MAX_OUTPUT_MIB``). Images without python3 take
their input from stdin (and ``input.json``, at most :data:`MAX_ENV_INPUT_BYTES`: it travels in the
environment) and give their output on stdout.

After the task, :func:`build_outcome` turns what came back (exit code, stdout, the files' contents)
into the fields of a :class:`~flowcore.pool_api.TaskResult`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from flowcore import limits
from flowcore.pool_api import ErrorKind, StateOp, TaskError, TaskRequest

LOG_TAIL_BYTES = 4096
MAX_ENV_INPUT_BYTES = 100_000  # under Linux's 128 KiB limit of one environment string
_STATE_OPS = TypeAdapter(list[StateOp])


def task_env(request: TaskRequest) -> dict[str, str]:
    """The request's env plus the FLOW_* variables of the contract (the FLOW_* ones win; the agent
    adds the paths of the task's own directory)."""
    env = dict(request.env)
    env.update(
        {
            "FLOW_WORKFLOW_ID": request.workflow_id,
            "FLOW_STEP_ID": request.step_id,
            "FLOW_TASK_ID": request.task_id,
            "FLOW_INDEX": str(request.index),
            "FLOW_ATTEMPT": str(request.attempt),
        }
    )
    if request.traceparent:
        env["TRACEPARENT"] = request.traceparent
    if request.tracestate:
        env["TRACESTATE"] = request.tracestate
    return env


def command_argv(command: list[str] | str) -> list[str]:
    """A string runs through ``/bin/sh -c``; a list runs as it is."""
    return ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)


# For images without python3 (exec and one-shot runs): a shell, as the task's uid, makes the task's
# directory on the container's tmpfs, writes the input there from the environment and feeds it to
# the command. Only the shell and mkdir are needed.
_WRAPPER_SH = """d=/flow/task/$1; shift
mkdir -p "$d/work" "$d/tmp" 2>/dev/null || { d=/tmp/flow-task-$$; mkdir -p "$d/work" "$d/tmp"; }
printf '%s' "$FLOW_INPUT" > "$d/input.json"
unset FLOW_INPUT
export FLOW_INPUT_PATH="$d/input.json" FLOW_OUTPUT_PATH="$d/output.json" FLOW_STATE_PATH="$d/state.json"
export TMPDIR="$d/tmp" HOME="$d/work"
if [ -z "$FLOW_WORKDIR_SET" ]; then cd "$d/work"; fi
unset FLOW_WORKDIR_SET
exec "$@" < "$d/input.json"
"""

# After an exec task, as its uid: kill everything of that uid (kill(-1) spares the caller and PID 1)
# and remove what it left on the scratch mounts.
_CLEANUP_SH = """kill -9 -1 2>/dev/null
rm -rf "/flow/task/$1" /tmp/* /tmp/.[!.]* /dev/shm/* 2>/dev/null
exit 0"""


def task_wrapped(argv: list[str], name: str) -> list[str]:
    """The command wrapped for an image without the agent (see :data:`_WRAPPER_SH`)."""
    return ["/bin/sh", "-c", _WRAPPER_SH, "flow-task", name, *argv]


def cleanup_argv(name: str) -> list[str]:
    return ["/bin/sh", "-c", _CLEANUP_SH, "flow-cleanup", name]


def wrapped_env(request: TaskRequest) -> dict[str, str]:
    """The environment of a wrapped task: the contract's plus the input (bounded: see the module doc)."""
    env = task_env(request)
    env["FLOW_INPUT"] = json.dumps(request.input, separators=(",", ":"))
    if request.workdir:
        env["FLOW_WORKDIR_SET"] = "1"
    return env


def input_too_large(request: TaskRequest) -> str | None:
    """Why a wrapped task cannot take this input, or None (pure)."""
    size = len(json.dumps(request.input, separators=(",", ":")).encode())
    if size > MAX_ENV_INPUT_BYTES:
        return (
            f"the task's input is {size} bytes; images without python3 take at most {MAX_ENV_INPUT_BYTES} "
            "(use an image with python3: its agent takes inputs of any size)"
        )
    return None


@dataclass
class RawOutcome:
    """What a dispatch mode reports, before the contract interprets it."""

    exit_code: int | None
    stdout: str = ""
    log_tail: str = ""
    timed_out: bool = False
    oom: bool = False
    cancelled: bool = False
    lost: str | None = None  # why the container was lost
    output_file: str | None = None
    state_file: str | None = None
    function: bool = False
    function_error: str | None = None
    function_output: Any = None
    has_function_output: bool = False
    output_error: str | None = None
    stdout_truncated: bool = False
    cpu_time_s: float | None = None
    peak_memory_bytes: int | None = None


@dataclass
class Outcome:
    ok: bool
    exit_code: int | None
    output: Any = None
    state_updates: list[StateOp] = field(default_factory=list)
    error: TaskError | None = None
    log_tail: str = ""
    output_truncated: bool = False


def tail(text: str, limit: int = LOG_TAIL_BYTES) -> str:
    data = text.encode(errors="replace")
    return data[-limit:].decode(errors="replace") if len(data) > limit else text


def _fail(kind: ErrorKind, message: str, raw: RawOutcome) -> Outcome:
    return Outcome(
        ok=False,
        exit_code=raw.exit_code,
        error=TaskError(kind=kind, message=message),
        log_tail=tail(raw.log_tail),
    )


def build_outcome(request: TaskRequest, raw: RawOutcome, timeout_s: float | None) -> Outcome:
    """Interpret a task's raw outcome by the step contract (pure)."""
    if raw.cancelled:
        return _fail(ErrorKind.CANCELLED, "the task was cancelled", raw)
    if raw.timed_out:
        return _fail(ErrorKind.TIMEOUT, f"timed out after {timeout_s:g} s" if timeout_s else "timed out", raw)
    if raw.oom:
        return _fail(ErrorKind.OOM, "killed: out of memory (container memory limit)", raw)
    if raw.lost is not None:
        return _fail(ErrorKind.CONTAINER_LOST, f"container lost: {raw.lost}", raw)
    if raw.function and raw.function_error is not None:
        return _fail(ErrorKind.FUNCTION_ERROR, raw.function_error, raw)
    if raw.exit_code != 0:
        return _fail(ErrorKind.EXIT_CODE, f"exited with code {raw.exit_code}", raw)
    if raw.output_error is not None:
        return _fail(ErrorKind.INVALID_OUTPUT, raw.output_error, raw)
    # Never silent: stdout cut at its cap fails the step, unless a text step chose to keep the start.
    truncated = raw.stdout_truncated and raw.output_file is None and not raw.function
    if truncated and not (request.output == "text" and request.output_overflow == "truncate"):
        return _fail(
            ErrorKind.INVALID_OUTPUT,
            f"the step's stdout went past {limits.current().max_output_mib} MiB and was cut, so its output is"
            " incomplete (write less to stdout; a text step may set output_overflow: truncate to keep the start)",
            raw,
        )
    try:
        output = _output(request, raw)
        updates = _state_updates(raw.state_file)
    except ValueError as exc:
        return _fail(ErrorKind.INVALID_OUTPUT, str(exc), raw)
    return Outcome(
        ok=True,
        exit_code=raw.exit_code,
        output=output,
        state_updates=updates,
        log_tail=tail(raw.log_tail),
        output_truncated=truncated,
    )


def _output(request: TaskRequest, raw: RawOutcome) -> Any:
    if raw.output_file is not None:
        try:
            return json.loads(raw.output_file)
        except ValueError as exc:
            raise ValueError(f"step output is not valid JSON: {exc}") from None
    if raw.function:
        return raw.function_output
    if request.output == "text":
        return raw.stdout
    text = raw.stdout.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"step output is not valid JSON: {exc}") from None


def _state_updates(text: str | None) -> list[StateOp]:
    if text is None or not text.strip():
        return []
    try:
        return _STATE_OPS.validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ValueError(
            f"state updates are not a valid list of operations: {where}: {first.get('msg')}"
        ) from None
