"""The workload of a chaos run: chains and maps whose steps each commit one state increment.

Each step writes ``[{"op": "increment", "key": "done", "value": 1}]`` to ``$FLOW_STATE_PATH``: the
engine applies it with the step's completion, exactly once per committed task. A workflow's final
``done`` therefore counts its commits; the definition records how many there must be.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

IMAGE = "agentainer-flow/python:3.11"
INCREMENT = """echo '[{"op": "increment", "key": "done", "value": 1}]' > "$FLOW_STATE_PATH"; """


def chain(n: int, pause_s: float) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for i in range(n):
        step: dict[str, Any] = {
            "id": f"s{i}",
            "image": IMAGE,
            "command": f"{INCREMENT}sleep {pause_s}; echo {i}",
            "retry": {"max_attempts": 3},
        }
        if i:
            step["depends_on"] = [f"s{i - 1}"]
        steps.append(step)
    return {"name": "chaos-chain", "steps": steps}


def fan(items: int, pause_s: float) -> dict[str, Any]:
    return {
        "name": "chaos-map",
        "input": {"items": list(range(items))},
        "steps": [
            {
                "id": "each",
                "type": "map",
                "items": "input.items",
                "max_concurrency": 4,
                "image": IMAGE,
                "command": f"{INCREMENT}sleep {pause_s}; echo 1",
                "retry": {"max_attempts": 3},
            },
            {
                "id": "sum",
                "type": "reduce",
                "depends_on": ["each"],
                "image": IMAGE,
                "command": f"{INCREMENT}echo 0",
            },
        ],
    }


@dataclass
class Submitted:
    wf_id: str
    expected: int


@dataclass
class Submitter:
    """Submits a workflow every ``interval_s`` until stopped; a refused or unanswered submission is
    tried again (counted), and only an acknowledged one (201 with an id) is expected to finish."""

    url: str
    headers: dict[str, str]
    interval_s: float
    rng: random.Random
    acknowledged: list[Submitted] = field(default_factory=list)
    unanswered: int = 0
    refused: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=10) as client:
            while not self._stop.is_set():
                if self.rng.random() < 0.6:
                    definition, expected = chain(4, 0.2), 4
                else:
                    items = self.rng.randint(5, 12)
                    definition, expected = fan(items, 0.1), items + 1
                while not self._stop.is_set():
                    try:
                        response = client.post("/v1/workflows", params={"start": "true"}, json=definition)
                    except httpx.HTTPError:
                        self.unanswered += 1
                        time.sleep(0.5)
                        continue
                    if response.status_code == 201:
                        self.acknowledged.append(Submitted(response.json()["id"], expected))
                        break
                    self.refused += 1  # 503 while Redis is away: try again
                    time.sleep(0.5)
                self._stop.wait(self.interval_s)


def observe(client: httpx.Client, wf_id: str) -> tuple[str | None, int | None]:
    """(status, done) of one workflow; (None, None) when the gateway does not know it."""
    response = client.get(f"/v1/workflows/{wf_id}")
    if response.status_code == 404:
        return None, None
    response.raise_for_status()
    status = str(response.json()["status"])
    state = client.get(f"/v1/workflows/{wf_id}/state")
    done = state.json().get("state", {}).get("done") if state.status_code == 200 else None
    return status, int(done) if isinstance(done, int | float) else None
