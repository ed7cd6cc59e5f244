"""The programs of the fake container engine (:mod:`tests.fakes.runtime`): a tiny shell, no processes.

:func:`interpret` turns an argv into a :class:`FakeProcess`: what it prints, its exit code, or that it
runs until stopped. It knows ``echo [>&2]`` (with ``$VAR`` from the env), ``true``, ``false``,
``exit N``, ``env``, ``sleep N`` (a hang), ``python3 -c ...`` (ends at once, silently), and
``sh -c`` scripts of those joined by ``;`` (``trap ... TERM`` and loops make a process that runs until
stopped). An executable the image lacks gives 126 and Docker's message, as ``docker exec`` does.
None means "not a finite program this shell understands": the caller decides (a main process then
runs until stopped). What this shell must agree with is checked against the real engine by
``tests/integration/test_runtime_contract.py``.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

BASE_PROGRAMS = frozenset({"sh", "/bin/sh", "echo", "sleep", "true", "false", "cat", "env", "id"})
PYTHON_PROGRAMS = BASE_PROGRAMS | {"python3", "/usr/bin/python3"}
KILLED = 137
NOT_EXECUTABLE = 126


@dataclass
class FakeProcess:
    """What a program does: its output, its exit code, or a hang (until a timeout or the container dies).

    ``kills_container`` ends the container too (with 137; ``oom`` sets its OOMKilled flag), as a task
    that runs PID 1 out of memory does.
    """

    exit_code: int = 0
    stdout: bytes = b""
    stderr: bytes = b""
    hang: bool = False
    kills_container: bool = False
    oom: bool = False
    traps_term: bool = False



def _expand(word: str, env: Mapping[str, str]) -> str:
    if word.startswith("$") and len(word) > 1:
        return env.get(word[1:].strip("{}"), "")
    return word


def interpret(argv: Sequence[str], env: Mapping[str, str], programs: frozenset[str]) -> FakeProcess | None:
    """The built-in programs; None when the command is not a finite one this shell understands."""
    if not argv:
        return FakeProcess(exit_code=NOT_EXECUTABLE)
    name = argv[0]
    if name not in programs:
        message = f'exec: "{name}": executable file not found in $PATH: unknown\r\n'
        return FakeProcess(exit_code=NOT_EXECUTABLE, stdout=f"OCI runtime exec failed: {message}".encode())
    base = name.rsplit("/", 1)[-1]
    if base == "sh" and len(argv) >= 3 and argv[1] == "-c":
        return _script(argv[2], env)
    return _statement([base, *argv[1:]], env)


def _statement(words: list[str], env: Mapping[str, str]) -> FakeProcess | None:
    head, args = words[0], words[1:]
    if head == "echo":
        to_err = bool(args) and args[-1] == ">&2"
        text = (" ".join(_expand(a, env) for a in (args[:-1] if to_err else args)) + "\n").encode()
        return FakeProcess(stderr=text) if to_err else FakeProcess(stdout=text)
    if head == "true":
        return FakeProcess()
    if head == "false":
        return FakeProcess(exit_code=1)
    if head == "exit":
        return FakeProcess(exit_code=int(args[0]) if args else 0)
    if head == "sleep":
        return FakeProcess(hang=True)
    if head == "env":
        return FakeProcess(stdout="".join(f"{k}={v}\n" for k, v in env.items()).encode())
    if head == "python3":
        return FakeProcess() if args[:1] == ["-c"] else None  # a script ran; a long-lived program did not end
    return None


def _script(script: str, env: Mapping[str, str]) -> FakeProcess | None:
    """``a; b; exit 3``: output concatenated, the exit code of the last statement (or of ``exit``)."""
    result = FakeProcess()
    traps = False
    for part in script.split(";"):
        words = shlex.split(part.strip())
        if not words:
            continue
        if words[0] == "trap":
            traps = traps or "TERM" in words
            continue
        if words[0] in ("while", "do", "done", "wait"):
            return FakeProcess(hang=True, traps_term=traps)  # a loop: runs until stopped
        step = _statement(words, env)
        if step is None:
            return None
        result.stdout += step.stdout
        result.stderr += step.stderr
        result.exit_code = step.exit_code
        if step.hang:
            result.hang = True
            result.traps_term = traps
            return result
        if words[0] == "exit":
            return result
    return result
