"""``flow``: argument handling, output and exit codes, against a fake gateway (httpx.MockTransport)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from agentainer_flow.cli import build_parser, main


class FakeGateway:
    """Enough of the API for the CLI: workflows that run on the first GET and finish on the second."""

    def __init__(self) -> None:
        self.workflows: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.state: dict[str, Any] = {"k": 1}
        self.requests: list[httpx.Request] = []
        self.live = True  # serve /events (False: a gateway without the live stream)
        self.logs_route = True  # serve /logs (False: a gateway older than the logs route)

    def view(self, wf_id: str) -> dict[str, Any]:
        d = self.workflows[wf_id]
        polls = self.polls.get(wf_id, 0)
        failing = "fail" in d["name"]
        done = polls >= 2
        status = ("failed" if failing else "completed") if done else "running"
        steps = [{"id": s["id"], "type": s.get("type", "sequential"), "status":
                  ("failed" if failing else "succeeded") if done else "running", "attempts": 1,
                  "duration_s": 0.5 if done else None, "error": "exit 3" if failing and done else None,
                  "total": 4 if s.get("type") == "map" else None, "succeeded": 4 if done and s.get("type") == "map" else 0,
                  "tasks": [{"index": 0, "status": "succeeded", "pooled": True, "log_tail": f"log of {s['id']}\n"}]}
                 for s in d.get("steps", [])]
        return {"id": wf_id, "name": d["name"], "status": status, "duration_s": 1.0 if done else None,
                "input": d.get("input"), "steps": steps, "created_at": "2026-01-01T00:00:00Z"}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, method = request.url.path, request.method
        if request.headers.get("authorization") != "Bearer default-token":
            return httpx.Response(401, json={"error": "unauthorized", "message": "invalid token"})
        if path == "/healthz":
            return httpx.Response(200, json={"status": "ok", "redis": "ok"})
        if path == "/v1/workflows" and method == "POST":
            body = yaml.safe_load(request.content)
            if not body.get("steps"):
                return httpx.Response(422, json={"error": "invalid_input", "message": "steps: too short", "field": "steps"})
            wf_id = f"wf-{len(self.workflows) + 1}"
            self.workflows[wf_id] = body
            return httpx.Response(201, json=self.view(wf_id))
        if path == "/v1/workflows":
            items = [self.view(i) for i in self.workflows]
            if "status" in request.url.params:
                items = [w for w in items if w["status"] == request.url.params["status"]]
            return httpx.Response(200, json={"items": items, "total": len(items)})
        parts = path.split("/")
        wf_id = parts[3]
        if wf_id not in self.workflows:
            return httpx.Response(404, json={"error": "not_found", "message": f"workflow {wf_id!r} not found"})
        if path.endswith("/cancel"):
            self.workflows[wf_id]["name"] += "-fail"
            self.polls[wf_id] = 2
            return httpx.Response(202, json=self.view(wf_id))
        if "/state" in path:
            if len(parts) == 5:
                return httpx.Response(200, json={"state": self.state})
            if method == "PUT":
                self.state[parts[5]] = json.loads(request.content)["value"]
            return httpx.Response(200, json={"key": parts[5], "value": self.state[parts[5]]})
        if path.endswith("/logs"):
            return self.logs(wf_id, request)
        if path.endswith("/events"):
            if not self.live:
                return httpx.Response(404, json={"error": "not_found", "message": f"no route GET {path}"})
            events = [("snapshot", None, {"status": "running"}), ("step", "1-0,0-0", {"step_id": "a", "status": "running"}),
                      ("log", "1-0,2-0", {"step_id": "a", "line": "hi"}), ("end", "3-0,2-0", {"status": "completed"})]
            body = "retry: 2000\n\n: keep-alive\n\n" + "".join(
                (f"id: {i}\n" if i else "") + f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, i, d in events)
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, text=body)
        self.polls[wf_id] = self.polls.get(wf_id, 0) + 1
        return httpx.Response(200, json=self.view(wf_id))


    def logs(self, wf_id: str, request: httpx.Request) -> httpx.Response:
        if not self.logs_route:
            return httpx.Response(404, json={"error": "not_found", "message": f"no route GET {request.url.path}"})
        step = request.url.params.get("step")
        ids = [s["id"] for s in self.workflows[wf_id].get("steps", [])]
        if step is not None and step not in ids:
            return httpx.Response(422, json={"error": "invalid_input", "message": f"no step {step!r}", "field": "step"})
        items = [{"id": f"{n}-0", "step_id": i, "index": 0, "attempt": 1, "stream": "stdout", "line": f"line of {i}",
                  "ts": 1.0, "source": i} for n, i in enumerate(ids, 1) if step in (None, i)]
        if request.url.params.get("follow") == "true":
            return httpx.Response(200, text="".join(f"[{i['source']}] {i['line']}\n" for i in items))
        return httpx.Response(200, json={"items": items, "next": items[-1]["id"] if items else "0-0"})


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


def flow(gateway: FakeGateway, *argv: str) -> int:
    return main(list(argv), transport=httpx.MockTransport(gateway))


DEFINITION = "name: demo\nsteps:\n  - id: a\n    image: i\n    command: [true]\n  - id: b\n    type: map\n    items: input.x\n    image: i\n    command: [true]\n"


def write(tmp_path: Path, text: str, name: str = "wf.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_run_and_wait_prints_progress_and_a_table(gateway: FakeGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert flow(gateway, "run", write(tmp_path, DEFINITION), "--wait") == 0
    out = capsys.readouterr().out
    assert "workflow wf-1 (demo) started" in out and "[####################] 4/4" in out
    assert "STEP" in out and "POOLED" in out and "workflow wf-1 completed in 1.00s" in out
    assert gateway.requests[0].headers["content-type"] == "application/yaml"  # YAML sent as it is
    assert gateway.requests[1].url.path == "/v1/workflows/wf-1/events"  # followed over the live stream


def test_run_wait_polls_when_the_gateway_has_no_event_stream(gateway: FakeGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gateway.live = False
    assert flow(gateway, "run", write(tmp_path, DEFINITION), "--wait") == 0
    out = capsys.readouterr().out
    assert "[####################] 4/4" in out and "workflow wf-1 completed in 1.00s" in out
    assert sum(r.url.path.endswith("/events") for r in gateway.requests) == 1


def test_failed_workflow_exits_1_and_names_the_failed_steps(gateway: FakeGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = DEFINITION.replace("name: demo", "name: will-fail")
    assert flow(gateway, "run", write(tmp_path, text), "--wait", "--input", '{"x": [1]}') == 1
    out = capsys.readouterr().out
    assert "failed" in out and "a: exit 3" in out
    assert gateway.workflows["wf-1"]["input"] == {"x": [1]}


def test_run_without_wait_prints_the_id_and_json_prints_the_record(gateway: FakeGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, json.dumps(yaml.safe_load(DEFINITION)), "wf.json")
    assert flow(gateway, "run", path) == 0
    assert capsys.readouterr().out.strip() == "wf-1"
    assert flow(gateway, "--json", "run", path, "--wait") == 0
    assert json.loads(capsys.readouterr().out)["status"] == "completed"


def test_usage_and_api_errors_exit_2(gateway: FakeGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert flow(gateway) == 2
    assert flow(gateway, "run") == 2
    assert flow(gateway, "list", "--status", "sleeping") == 2
    assert flow(gateway, "run", str(tmp_path / "missing.yaml")) == 2
    assert "cannot read" in capsys.readouterr().err
    assert flow(gateway, "run", write(tmp_path, DEFINITION), "--input", "{not json") == 2
    assert "--input must be JSON" in capsys.readouterr().err
    assert flow(gateway, "run", write(tmp_path, "name: empty\nsteps: []\n")) == 2
    assert "422 invalid_input: steps: too short" in capsys.readouterr().err
    assert flow(gateway, "get", "wf-404") == 2
    assert "404 not_found: workflow 'wf-404' not found" in capsys.readouterr().err
    assert flow(gateway, "--token", "wrong", "list") == 2
    assert "401 unauthorized: invalid token" in capsys.readouterr().err
    assert main(["--url", "http://127.0.0.1:9", "--timeout", "2", "list"]) == 2
    assert "cannot reach" in capsys.readouterr().err
    assert flow(gateway, "--help") == 0


def test_list_get_logs_cancel_and_state(gateway: FakeGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flow(gateway, "run", write(tmp_path, DEFINITION))
    capsys.readouterr()
    assert flow(gateway, "list") == 0
    assert "wf-1" in capsys.readouterr().out
    assert flow(gateway, "--json", "list", "--status", "running") == 0
    assert [w["id"] for w in json.loads(capsys.readouterr().out)] == ["wf-1"]
    assert flow(gateway, "get", "wf-1") == 0
    assert "wf-1  demo" in capsys.readouterr().out
    assert flow(gateway, "logs", "wf-1", "a") == 0
    assert capsys.readouterr().out == "[a] line of a\n"
    assert flow(gateway, "logs", "wf-1", "zzz") == 2
    assert "no step 'zzz'" in capsys.readouterr().err
    assert flow(gateway, "logs", "wf-1", "--follow") == 0
    assert capsys.readouterr().out == "[a] line of a\n[b] line of b\n"
    assert [r.url.params.get("follow") for r in gateway.requests if r.url.path.endswith("/logs")] == [None, None, "true"]
    gateway.logs_route = False  # an older gateway: the tails of the task records
    assert flow(gateway, "logs", "wf-1", "a") == 0
    assert capsys.readouterr().out == "[a] log of a\n"
    assert flow(gateway, "logs", "wf-1", "zzz") == 2
    assert flow(gateway, "logs", "wf-1", "--follow") == 0
    assert "[b] log of b" in capsys.readouterr().out
    assert flow(gateway, "state", "wf-1") == 0
    assert json.loads(capsys.readouterr().out) == {"k": 1}
    assert flow(gateway, "state", "wf-1", "mode", "--set", "fast") == 0
    assert capsys.readouterr().out.strip() == "fast"
    assert flow(gateway, "state", "wf-1", "n", "--set", "[1, 2]") == 0 and gateway.state["n"] == [1, 2]
    assert flow(gateway, "state", "wf-1", "--set", "x") == 2
    assert flow(gateway, "cancel", "wf-1") == 0
    capsys.readouterr()
    assert flow(gateway, "--json", "status") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["health"]["status"] == "ok" and set(status["workflows"]) >= {"running", "failed"}


def test_parser_knows_every_command() -> None:
    parser = build_parser()
    for argv in (["up"], ["down"], ["status"], ["trigger", "list", "wf"], ["trigger", "schedule", "wf", "0 * * * *"],
                 ["trigger", "fire", "wf", "--input", "{}"], ["trigger", "disable", "tr"], ["agents", "list"],
                 ["agents", "deploy", "n", "img", "--env", "A=1"], ["agents", "logs", "ag", "-f"]):
        assert parser.parse_args(argv).command == argv[0]


def test_up_outside_a_checkout_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["up"]) == 2
    assert "inside the checkout" in capsys.readouterr().err
