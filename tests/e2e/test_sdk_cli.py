"""``flow run --wait`` and friends against the real stack, with the YAML example of docs/cli.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agentainer_flow.cli import main
from tests.e2e.conftest import Stack

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def hello_yaml() -> str:
    match = re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert match, "docs/cli.md lost its YAML example"
    return match.group(1)


def test_run_wait_logs_and_state(stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hello.yaml"
    path.write_text(hello_yaml())
    base = ["--url", stack.url, "--token", stack.token]
    assert main([*base, "run", str(path), "--wait"]) == 0
    out = capsys.readouterr().out
    assert "greet" in out and "succeeded" in out and re.search(r"workflow (wf-\S+) completed", out)
    wf_id = re.search(r"workflow (wf-\S+) completed", out).group(1)  # type: ignore[union-attr]
    assert main([*base, "state", wf_id, "answer", "--set", "42"]) == 0
    assert main([*base, "--json", "state", wf_id]) == 0
    assert '"answer": 42' in capsys.readouterr().out
    assert main([*base, "get", wf_id]) == 0 and "completed" in capsys.readouterr().out

    failing = tmp_path / "fail.yaml"
    failing.write_text(hello_yaml().replace("print('\\\"hello\\\"')", "import sys; print('oops'); sys.exit(3)"))
    assert "sys.exit(3)" in failing.read_text()
    assert main([*base, "run", str(failing), "--wait"]) == 1
    out = capsys.readouterr().out
    failed_id = re.search(r"workflow (wf-\S+) failed", out).group(1)  # type: ignore[union-attr]
    assert main([*base, "logs", failed_id]) == 0
    assert "[greet] oops" in capsys.readouterr().out
