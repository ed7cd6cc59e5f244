"""scripts/supervise.py, the supervisor `make up` runs the Procfile under: a process that exits is
restarted while the others keep running (honcho stopped them all), and SIGTERM stops every one."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUPERVISE = REPO / "scripts" / "supervise.py"
CHILD = "import os, sys, time; print(sys.argv[1], 'pid', os.getpid(), os.environ.get('GREETING'), flush=True); time.sleep(600)"


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill 0: read its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Run:
    def __init__(self, tmp_path: Path, procfile: str, *args: str) -> None:
        (tmp_path / "Procfile").write_text(procfile)
        (tmp_path / "stack.env").write_text("# comment\nGREETING='hello there'\n")
        self.log = tmp_path / "out.log"
        self.handle = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [sys.executable, str(SUPERVISE), "-f", str(tmp_path / "Procfile"), "-e", str(tmp_path / "stack.env"),
             "--stop-timeout-s", "5", *args],
            cwd=tmp_path,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def pids(self, name: str) -> list[int]:
        """Pids the child ``name`` printed, one per start, in order."""
        return [int(m) for m in re.findall(rf"\| {name} pid (\d+)", self.text())]

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.handle.close()
        return self.popen.returncode


@pytest.fixture
def procfile() -> str:
    py = sys.executable
    return (
        "# two long-running processes\n"
        f'flaky: {py} -c "{CHILD}" flaky\n'
        f'steady: {py} -c "{CHILD}" steady\n'
    )


@pytest.fixture
def run(tmp_path: Path, procfile: str) -> Iterator[Run]:
    r = Run(tmp_path, procfile)
    try:
        yield r
    finally:
        r.stop()


def test_a_killed_process_is_restarted_and_the_others_keep_running(run: Run) -> None:
    wait_for(lambda: run.pids("flaky") and run.pids("steady"), "both processes to start")
    flaky, steady = run.pids("flaky")[0], run.pids("steady")[0]

    os.kill(flaky, signal.SIGKILL)
    wait_for(lambda: len(run.pids("flaky")) >= 2, "the killed process to be started again")

    restarted = run.pids("flaky")[-1]
    assert restarted != flaky and alive(restarted)
    assert alive(steady) and run.pids("steady") == [steady], "the other process was touched"
    assert run.popen.poll() is None, "the supervisor stopped"
    text = run.text()
    assert "flaky.1 killed by SIGKILL; restarting in" in text
    assert re.search(r"\d\d:\d\d:\d\d steady\.1 +\| steady pid \d+ hello there", text), text  # prefix, env file


def test_sigterm_stops_every_process_and_exits_zero(run: Run) -> None:
    wait_for(lambda: run.pids("flaky") and run.pids("steady"), "both processes to start")
    pids = [run.pids("flaky")[0], run.pids("steady")[0]]
    assert run.stop() == 0
    wait_for(lambda: not any(alive(p) for p in pids), "the children to exit", timeout_s=10)
    assert "all processes stopped" in run.text()


def test_a_process_that_keeps_exiting_is_restarted_with_backoff(tmp_path: Path) -> None:
    r = Run(tmp_path, f'oneshot: {sys.executable} -c "print(\'ran\', flush=True)"\n')
    try:
        wait_for(lambda: r.text().count("exited with code 0; restarting in") >= 3, "three exits")
        delays = [float(d) for d in re.findall(r"exited with code 0; restarting in ([\d.]+)s", r.text())]
        assert delays[:3] == [0.5, 1.0, 2.0]
    finally:
        assert r.stop() == 0


def test_bad_procfile_is_refused(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("no colon here\n")
    result = subprocess.run(
        [sys.executable, str(SUPERVISE), "-f", str(tmp_path / "Procfile")], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and "expected 'name: command'" in result.stderr
