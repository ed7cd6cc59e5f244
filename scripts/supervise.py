"""Run the Procfile's processes and keep them running: a small supervisor, standard library only.

    python scripts/supervise.py [-f Procfile] [-e .flow/stack.env] [-c worker=2] [NAME ...]

honcho (foreman semantics) stops every process as soon as one exits: a worker that died took the
gateway, the pool and the scheduler with it. Here one process exiting is restarted, with backoff,
while the others keep running:

- each Procfile line ``name: command`` runs as ``/bin/sh -c "exec command"`` with the environment
  of this process plus the ``-e`` file's ``KEY=VALUE`` lines (the file wins);
- ``-c name=N`` runs N instances (``worker.1``, ``worker.2``); NAMEs restrict to those processes;
- every output line is relayed with a ``HH:MM:SS name.1 | `` prefix;
- a process that exits is started again after a delay that doubles from 0.5 s up to 30 s, and goes
  back to 0.5 s once an instance has run for 30 s;
- SIGTERM or SIGINT stops them all: SIGTERM to each, SIGKILL to those still running after
  ``--stop-timeout-s`` (15 s), then exit 0. A second signal kills at once.

The children stay in this process's process group, so a SIGKILL to the group (``scripts/stack.sh
down`` as a last resort) reaches them too.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

INITIAL_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 30.0
TICK_S = 0.2


def parse_procfile(text: str) -> dict[str, str]:
    """``name: command`` lines, in order; blank lines and ``#`` comments skipped."""
    entries: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        name, command = name.strip(), command.strip()
        if not sep or not name or not command or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"Procfile line {number}: expected 'name: command', got {raw!r}")
        if name in entries:
            raise ValueError(f"Procfile line {number}: process {name!r} defined twice")
        entries[name] = command
    return entries


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines (optionally ``export KEY=VALUE``, values optionally quoted); ``#`` comments."""
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


@dataclass
class Child:
    """One instance of one Procfile process, restarted as often as it exits."""

    name: str
    command: str
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff_s: float = INITIAL_BACKOFF_S
    restart_at: float | None = None
    relay: threading.Thread | None = None
    restarts: int = field(default=0)


class Supervisor:
    def __init__(self, children: list[Child], out: IO[bytes], stop_timeout_s: float = 15.0) -> None:
        self.children = children
        self.out = out
        self.stop_timeout_s = stop_timeout_s
        self.width = max((len(c.name) for c in children), default=0)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.signals = 0

    # ---- output ------------------------------------------------------------------------------
    def emit(self, name: str, line: bytes) -> None:
        prefix = f"{time.strftime('%H:%M:%S')} {name.ljust(self.width)} | ".encode()
        with self.lock:
            self.out.write(prefix + line.rstrip(b"\n") + b"\n")
            self.out.flush()

    def note(self, message: str) -> None:
        self.emit("supervise".ljust(self.width), message.encode())

    def _relay(self, child: Child, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            self.emit(child.name, line)
        stream.close()

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self, child: Child) -> None:
        try:
            popen = subprocess.Popen(
                ["/bin/sh", "-c", f"exec {child.command}"],
                env=child.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            self.note(f"{child.name}: cannot start ({exc}); retrying in {child.backoff_s:.1f}s")
            self._schedule_restart(child)
            return
        child.popen, child.started_at, child.restart_at = popen, time.monotonic(), None
        assert popen.stdout is not None
        child.relay = threading.Thread(target=self._relay, args=(child, popen.stdout), daemon=True)
        child.relay.start()
        self.note(f"{child.name} started (pid {popen.pid}): {child.command}")

    def _schedule_restart(self, child: Child) -> None:
        child.restart_at = time.monotonic() + child.backoff_s
        child.backoff_s = min(child.backoff_s * 2, MAX_BACKOFF_S)

    def check(self, child: Child) -> None:
        """Notice an exit and schedule the restart; start a child whose delay is over."""
        now = time.monotonic()
        if child.popen is not None:
            code = child.popen.poll()
            if code is None:
                if now - child.started_at >= STABLE_AFTER_S:
                    child.backoff_s = INITIAL_BACKOFF_S
                return
            if child.relay is not None:
                child.relay.join(timeout=1.0)  # its last lines first
            child.popen = None
            if now - child.started_at >= STABLE_AFTER_S:
                child.backoff_s = INITIAL_BACKOFF_S
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            self.note(f"{child.name} {how}; restarting in {child.backoff_s:.1f}s")
            self._schedule_restart(child)
            return
        if child.restart_at is not None and now >= child.restart_at:
            child.restarts += 1
            self.start(child)

    def run(self) -> int:
        for child in self.children:
            self.start(child)
        while not self.stopping.wait(TICK_S):
            for child in self.children:
                self.check(child)
        self.stop_all()
        return 0

    def stop_all(self) -> None:
        running = [c for c in self.children if c.popen is not None and c.popen.poll() is None]
        self.note(f"stopping {len(running)} process(es) (SIGTERM)")
        for child in running:
            self._signal(child, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        while time.monotonic() < deadline and self.signals < 2:
            if all(c.popen is None or c.popen.poll() is not None for c in running):
                break
            time.sleep(0.05)
        for child in running:
            if child.popen is not None and child.popen.poll() is None:
                self.note(f"{child.name} still running: SIGKILL")
                self._signal(child, signal.SIGKILL)
                child.popen.wait()
        for child in running:
            if child.relay is not None:
                child.relay.join(timeout=1.0)
        self.note("all processes stopped")

    @staticmethod
    def _signal(child: Child, sig: signal.Signals) -> None:
        if child.popen is not None:
            try:
                child.popen.send_signal(sig)
            except ProcessLookupError:
                pass

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        self.stopping.set()


def build_children(
    procfile: dict[str, str], env: dict[str, str], names: list[str], concurrency: dict[str, int]
) -> list[Child]:
    unknown = [n for n in [*names, *concurrency] if n not in procfile]
    if unknown:
        raise ValueError(f"no process {unknown[0]!r} in the Procfile (it has {', '.join(procfile)})")
    children = []
    for name, command in procfile.items():
        if names and name not in names:
            continue
        for i in range(1, concurrency.get(name, 1) + 1):
            children.append(Child(name=f"{name}.{i}", command=command, env=env))
    return children


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the Procfile's processes; restart one that exits.")
    parser.add_argument("-f", "--procfile", default="Procfile", type=Path)
    parser.add_argument("-e", "--env", action="append", default=[], type=Path, help="KEY=VALUE file (repeatable)")
    parser.add_argument("-c", "--concurrency", action="append", default=[], help="name=N instances (repeatable)")
    parser.add_argument("--stop-timeout-s", type=float, default=15.0, help="SIGTERM to SIGKILL on stop")
    parser.add_argument("names", nargs="*", help="run only these processes")
    args = parser.parse_args(argv)
    try:
        procfile = parse_procfile(args.procfile.read_text())
        env = dict(os.environ)
        for path in args.env:
            env.update(parse_env_file(path.read_text()))
        concurrency = {}
        for spec in args.concurrency:
            name, _, count = spec.partition("=")
            concurrency[name] = int(count)
        children = build_children(procfile, env, args.names, concurrency)
    except (OSError, ValueError) as exc:
        print(f"supervise: {exc}", file=sys.stderr)
        return 2
    supervisor = Supervisor(children, sys.stdout.buffer, stop_timeout_s=args.stop_timeout_s)
    signal.signal(signal.SIGTERM, supervisor.on_signal)
    signal.signal(signal.SIGINT, supervisor.on_signal)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
