"""The README's quick start, run as written (with the test stack's address)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, Stack

README = (REPO / "README.md").read_text()


def test_readme_yaml_is_the_example_file() -> None:
    block = re.search(r"```yaml\n# examples/hello.yaml\n(.*?)```", README, re.S)
    assert block is not None
    example = Path(REPO / "examples/hello.yaml").read_text()
    assert block.group(1).strip() in example


def test_readme_curl_commands_run_a_workflow(stack: Stack) -> None:
    block = re.search(r"```bash\n(curl .*?)```", README, re.S)
    assert block is not None
    commands = block.group(1).replace("http://127.0.0.1:8081", stack.url).strip().split("\ncurl")
    create, get = commands[0], "curl" + commands[1]
    out = subprocess.run(["bash", "-c", create], cwd=REPO, capture_output=True, text=True, check=True).stdout
    wf_id = json.loads(out)["id"]
    deadline = time.monotonic() + 60
    body: dict = {}
    while time.monotonic() < deadline:
        out = subprocess.run(["bash", "-c", get.replace("WF_ID", wf_id)], capture_output=True, text=True, check=True)
        body = json.loads(out.stdout)
        if body["status"] in ("completed", "failed"):
            break
        time.sleep(0.2)
    assert body["status"] == "completed", body
    assert body["steps"][0]["output"] == "hello world"


@pytest.mark.usefixtures("example_images")  # the quick start runs the word counter in its image
def test_readme_python_quick_start(stack: Stack) -> None:
    block = re.search(r"```python\n(.*?)```", README, re.S)
    assert block is not None
    env = {**os.environ, "FLOW_URL": stack.url, "FLOW_TOKEN": stack.token}
    done = subprocess.run(
        [sys.executable, "-c", block.group(1)], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert "wordcount-dag: 5 documents mapped, branch took" in done.stdout
