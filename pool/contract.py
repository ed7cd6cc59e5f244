"""The step contract: what a task sees inside its container, the same in every dispatch mode.

Before a task the pool writes its input to a per-task directory on the host that the container sees
through a bind mount (so it works with network ``none``)::

    {task dir}/input.json   the task's input as JSON; also the task's stdin
    {task dir}/output.json  the step may write its output here (JSON); wins over stdout
    {task dir}/state.json   the step may write a JSON list of StateOp objects here
    {task dir}/work/        the task's working directory (unless the request names a workdir)
    {task dir}/tmp/         TMPDIR
    {task dir}/usage        (exec and cold runs) the container cgroup's CPU and peak memory counters
                            before and after the command, written by the wrapping shell

After the task, :func:`build_outcome` turns what came back (exit code, stdout, the files) into the
fields of a :class:`~flowcore.pool_api.TaskResult`; the directory is then removed, so nothing of one
task's files reaches the next.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from flowcore.pool_api import ErrorKind, StateOp, TaskError, TaskRequest

LOG_TAIL_BYTES = 4096
_STATE_OPS = TypeAdapter(list[StateOp])
_counter = itertools.count()


@dataclass(frozen=True)
class TaskDir:
    host: Path
    container: str  # the same directory as the container sees it

    def c(self, name: str) -> str:
        return f"{self.container}/{name}"

    @property
    def input_path(self) -> str:
        return self.c("input.json")

    @property
    def output_path(self) -> str:
        return self.c("output.json")

    @property
    def state_path(self) -> str:
        return self.c("state.json")

    @property
    def work_path(self) -> str:
        return self.c("work")

    @property
    def tmp_path(self) -> str:
        return self.c("tmp")

    @property
    def usage_path(self) -> str:
        return self.c("usage")


def prepare_task_dir(host_root: Path, container_root: str, request: TaskRequest) -> TaskDir:
    """Create the per-task directory and write the input (world-writable: images may not run as root)."""
    digest = hashlib.sha1(request.task_id.encode()).hexdigest()[:12]
    name = f"{digest}-{next(_counter)}"
    host = host_root / name
    (host / "work").mkdir(parents=True)
    (host / "tmp").mkdir()
    (host / "input.json").write_text(json.dumps(request.input))
    for path in (host, host / "work", host / "tmp"):
        os.chmod(path, 0o777)
    return TaskDir(host=host, container=f"{container_root}/{name}")


def remove_task_dir(task_dir: TaskDir) -> None:
    shutil.rmtree(task_dir.host, ignore_errors=True)


def read_optional(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return None


def task_env(request: TaskRequest, task_dir: TaskDir) -> dict[str, str]:
    """The request's env plus the FLOW_* variables of the contract (the FLOW_* ones win)."""
    env = dict(request.env)
    env.update(
        {
            "FLOW_WORKFLOW_ID": request.workflow_id,
            "FLOW_STEP_ID": request.step_id,
            "FLOW_TASK_ID": request.task_id,
            "FLOW_INDEX": str(request.index),
            "FLOW_ATTEMPT": str(request.attempt),
            "FLOW_INPUT_PATH": task_dir.input_path,
            "FLOW_OUTPUT_PATH": task_dir.output_path,
            "FLOW_STATE_PATH": task_dir.state_path,
            "TMPDIR": task_dir.tmp_path,
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


# Shell builtins only (no fork, no `cat`: images without python3 may have little else): one line
# "<when> <cpu ns or -> <peak memory bytes or ->" from the container's cgroup, v2 or v1.
_USAGE_SH = """u() {
  c=; m=
  if [ -r /sys/fs/cgroup/cpu.stat ]; then
    while read -r k v; do if [ "$k" = usage_usec ]; then c=${v}000; fi; done < /sys/fs/cgroup/cpu.stat
    if [ -r /sys/fs/cgroup/memory.peak ]; then read -r m < /sys/fs/cgroup/memory.peak; fi
  else
    if [ -r /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then read -r c < /sys/fs/cgroup/cpuacct/cpuacct.usage; fi
    f=/sys/fs/cgroup/memory/memory.max_usage_in_bytes
    if [ -r "$f" ]; then read -r m < "$f"; fi
  fi
  echo "$1 ${c:--} ${m:--}" >> "$p"
}
p=$1; shift
u start 2>/dev/null
"$@" < "$FLOW_INPUT_PATH"
r=$?
u end 2>/dev/null
exit $r"""


def task_wrapped(argv: list[str], usage_path: str) -> list[str]:
    """For exec and one-shot runs (no attached stdin): a shell feeds the input file to the command
    and notes the container's CPU and memory counters around it in ``usage_path``."""
    return ["/bin/sh", "-c", _USAGE_SH, "flow-task", usage_path, *argv]


@dataclass(frozen=True)
class Usage:
    cpu_time_s: float | None = None
    peak_memory_bytes: int | None = None


def parse_usage(text: str | None, *, with_peak: bool) -> Usage:
    """Read what :func:`task_wrapped` wrote: the CPU time between ``start`` and ``end``, and (for a
    one-shot container, whose cgroup served this task alone) the cgroup's peak memory (pure)."""
    if not text:
        return Usage()
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows[parts[0]] = parts[1:]
    start, end = rows.get("start"), rows.get("end")
    if end is None:
        return Usage()
    cpu = None
    if start is not None and start[0].isdigit() and end[0].isdigit():
        cpu = round(max(int(end[0]) - int(start[0]), 0) / 1e9, 6)
    peak = int(end[1]) if with_peak and end[1].isdigit() and int(end[1]) > 0 else None
    return Usage(cpu_time_s=cpu, peak_memory_bytes=peak)


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
    try:
        output = _output(request, raw)
        updates = _state_updates(raw.state_file)
    except ValueError as exc:
        return _fail(ErrorKind.INVALID_OUTPUT, str(exc), raw)
    return Outcome(
        ok=True, exit_code=raw.exit_code, output=output, state_updates=updates, log_tail=tail(raw.log_tail)
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
