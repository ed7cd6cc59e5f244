"""scripts/build_example_images.sh on the real engine: the image it built is skipped the next time, it
carries its labels, and its programs run with no network."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from examples import images
from examples.wordcount import wordcount

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "build_example_images.sh"


def docker(docker_host: str, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["docker", *args], env={**os.environ, "DOCKER_HOST": docker_host}, input=stdin, capture_output=True,
        text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_unchanged_image_is_not_rebuilt(example_images: list[str], base_image: str, docker_host: str) -> None:
    every = [ref for _, _, ref, _ in images.images()]  # wordcount's and the agents example's three
    assert example_images == every and wordcount.IMAGE in every
    again = subprocess.run(
        [str(SCRIPT)], env={**os.environ, "DOCKER_HOST": docker_host}, capture_output=True, text=True, timeout=300,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == every
    assert f"{wordcount.IMAGE} up to date" in again.stderr and "building" not in again.stderr
    labels = json.loads(docker(docker_host, "image", "inspect", "-f", "{{json .Config.Labels}}", wordcount.IMAGE))
    base_id = docker(docker_host, "image", "inspect", "-f", "{{.Id}}", base_image).strip()
    assert labels["io.agentainer.flow.example.base"] == base_id
    assert labels["io.agentainer.flow.example.content"] == images.content_tag(REPO / "examples" / "wordcount")
    ids = {docker(docker_host, "image", "inspect", "-f", "{{.Id}}", ref).strip()
           for ref in (wordcount.IMAGE, "agentainer-flow/wordcount:latest")}
    assert len(ids) == 1


def test_the_programs_run_in_the_image_without_network(
    example_images: list[str], docker_host: str, test_labels: dict[str, str]
) -> None:
    labels = [arg for k, v in test_labels.items() for arg in ("--label", f"{k}={v}")]
    doc = {"workflow_input": {"documents": [{"name": "a.txt", "text": "x"}]}}
    out = docker(
        docker_host, "run", "--rm", "-i", "--network", "none", *labels, wordcount.IMAGE,
        "python3", "/app/list_documents.py", stdin=json.dumps(doc),
    )
    assert json.loads(out) == [{"name": "a.txt", "text": "x"}]
