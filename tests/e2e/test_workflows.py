"""Workflows through the real processes (gateway, worker, pool) on real Redis and Docker."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.e2e.conftest import Proc, Stack
from tests.e2e.flowhttp import brief, step, steps_by_id, submit, wait


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, headers=stack.headers(), timeout=30) as c:
        yield c


def test_map_reduce_and_branch_dag(client: httpx.Client) -> None:
    definition = {
        "name": "wordcount-mini",
        "input": {"docs": ["a b a", "b c", "a"]},
        "config": {"max_parallel": 4},
        "steps": [
            step("list", "print(json.dumps({'docs': doc['input']['docs']}))"),
            step(
                "count",
                "print(json.dumps({w: doc['item'].split().count(w) for w in set(doc['item'].split())}))",
                type="map",
                items="steps.list.output.docs",
                depends_on=["list"],
            ),
            step(
                "total",
                "t={}\nfor d in doc['items']:\n    [t.__setitem__(k, t.get(k,0)+v) for k,v in d.items()]\nprint(json.dumps(t))",
                type="reduce",
                depends_on=["count"],
            ),
            {
                "id": "check",
                "type": "branch",
                "depends_on": ["total"],
                "condition": {"field": "steps.total.output.a", "op": ">=", "value": 3},
                "then": ["many"],
                "else": ["few"],
            },
            step("many", "print(json.dumps('many'))"),
            step("few", "print(json.dumps('few'))"),
        ],
    }
    body = wait(client, submit(client, definition))
    assert body["status"] == "completed", brief(body)
    s = steps_by_id(body)
    assert s["count"]["output"] == [{"a": 2, "b": 1}, {"b": 1, "c": 1}, {"a": 1}]
    assert s["total"]["output"] == {"a": 3, "b": 2, "c": 1}
    assert s["many"]["status"] == "succeeded" and s["few"]["status"] == "skipped"
    assert all(t["container_id"] for t in s["count"]["tasks"])


def test_parallel_and_decision(client: httpx.Client) -> None:
    definition = {
        "name": "par-dec",
        "input": {"kind": "b"},
        "steps": [
            step("fan", "print(json.dumps(doc['item'] * 10))", type="parallel", replicas=3),
            {
                "id": "route",
                "type": "decision",
                "depends_on": ["fan"],
                "cases": [
                    {"condition": {"field": "input.kind", "op": "==", "value": "a"}, "targets": ["A"]},
                    {"condition": {"field": "steps.fan.output", "op": "contains", "value": 20}, "targets": ["B"]},
                ],
                "default": ["D"],
            },
            step("A", "print(1)"),
            step("B", "print(2)"),
            step("D", "print(3)"),
        ],
    }
    body = wait(client, submit(client, definition))
    s = steps_by_id(body)
    assert body["status"] == "completed"
    assert s["fan"]["output"] == [0, 10, 20]
    assert [k for k in "ABD" if s[k]["status"] == "succeeded"] == ["B"]
    assert s["A"]["status"] == "skipped" and s["D"]["status"] == "skipped"


def test_fail_fast_kills_the_running_sibling(client: httpx.Client) -> None:
    definition = {
        "name": "ff",
        "steps": [
            step("bad", "time.sleep(0.5); sys.exit(3)"),
            step("slow", "time.sleep(60)"),
            step("after", "print(1)", depends_on=["bad"]),
        ],
    }
    started = time.monotonic()
    body = wait(client, submit(client, definition), timeout_s=40)
    s = steps_by_id(body)
    assert body["status"] == "failed"
    assert s["bad"]["status"] == "failed" and "exited with code 3" in s["bad"]["error"]
    assert s["bad"]["tasks"][0]["exit_code"] == 3
    assert s["slow"]["status"] == "cancelled" and s["after"]["status"] == "skipped"
    assert time.monotonic() - started < 40


def test_continue_strategy_and_continue_on_error(client: httpx.Client) -> None:
    definition = {
        "name": "cont",
        "config": {"failure_strategy": "continue"},
        "steps": [
            step("bad", "print('boom', file=sys.stderr); sys.exit(1)"),
            step("child", "print(1)", depends_on=["bad"]),
            step("soft", "sys.exit(2)", continue_on_error=True),
            step("after_soft", "print(json.dumps(doc['deps']))", depends_on=["soft"]),
            step("other", "print(json.dumps('ok'))"),
        ],
    }
    body = wait(client, submit(client, definition))
    s = steps_by_id(body)
    assert body["status"] == "failed"
    assert s["child"]["status"] == "skipped" and s["other"]["status"] == "succeeded"
    assert "boom" in s["bad"]["tasks"][0]["log_tail"]
    assert s["soft"]["status"] == "failed" and s["after_soft"]["status"] == "succeeded"
    assert s["after_soft"]["output"] == {"soft": None}


def test_retries_until_success_with_backoff(client: httpx.Client) -> None:
    definition = {
        "name": "retry",
        "steps": [
            step(
                "flaky",
                "sys.exit(1) if doc['attempt'] < 3 else print(json.dumps(doc['attempt']))",
                retry={"max_attempts": 4, "backoff": "exponential", "initial_delay_s": 0.2, "jitter": 0.5},
            )
        ],
    }
    body = wait(client, submit(client, definition))
    s = steps_by_id(body)["flaky"]
    assert body["status"] == "completed" and s["output"] == 3 and s["attempts"] == 3
    assert [a["attempt"] for a in s["tasks"][0]["attempts"]] == [1, 2]


def test_step_timeout_kills_the_task(client: httpx.Client) -> None:
    body = wait(client, submit(client, {"name": "to", "steps": [step("sleepy", "time.sleep(60)", timeout=1)]}))
    s = steps_by_id(body)["sleepy"]
    assert body["status"] == "failed" and s["tasks"][0]["error"]["kind"] == "timeout"


def test_workflow_timeout(client: httpx.Client) -> None:
    definition = {"name": "wto", "config": {"timeout": "2s"}, "steps": [step("sleepy", "time.sleep(60)")]}
    body = wait(client, submit(client, definition), timeout_s=40)
    assert body["status"] == "failed" and "timed out" in body["error"]


def test_cancel_a_running_workflow(client: httpx.Client, stack: Stack) -> None:
    wf_id = submit(client, {"name": "cancel-me", "steps": [step("long", "time.sleep(60)"), step("next", "print(1)", depends_on=["long"])]})
    wait(client, wf_id, until={"running"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        s = steps_by_id(client.get(f"/v1/workflows/{wf_id}").json())
        if s["long"]["tasks"] and s["long"]["tasks"][0]["status"] == "running":
            break
        time.sleep(0.1)
    r = client.post(f"/v1/workflows/{wf_id}/cancel")
    assert r.status_code == 202
    body = wait(client, wf_id)
    assert body["status"] == "cancelled"
    assert steps_by_id(body)["next"]["status"] == "cancelled"


@pytest.mark.parametrize(
    ("label", "definition", "needle"),
    [
        ("image missing", {"name": "img", "steps": [{"id": "s", "image": "no/such-image:0", "command": "true"}]}, "image not found"),
        ("not json", {"name": "nj", "steps": [step("s", "print('hello world')")]}, "not valid JSON"),
        (
            "map source not array",
            {"name": "ms", "input": {"x": 5}, "steps": [step("m", "print(1)", type="map", items="input.x")]},
            "not an array",
        ),
    ],
)
def test_step_failures_end_the_workflow_cleanly(client: httpx.Client, label: str, definition: dict, needle: str) -> None:
    body = wait(client, submit(client, definition))
    assert body["status"] == "failed", body
    assert needle in str(body["steps"][0]["error"]), body["steps"][0]


def test_state_updates_from_a_step_and_text_output(client: httpx.Client) -> None:
    code = (
        "ops=[{'op':'set','key':'seen','value':doc['input']},{'op':'increment','key':'n','value':2}]\n"
        "open(os.environ['FLOW_STATE_PATH'],'w').write(json.dumps(ops))\n"
        "print('plain text')"
    )
    body = wait(client, submit(client, {"name": "st", "input": {"k": 1}, "steps": [step("s", code, output="text")]}))
    assert body["status"] == "completed"
    assert body["steps"][0]["output"].strip() == "plain text"
    state = client.get(f"/v1/workflows/{body['id']}/state").json()["state"]
    assert state == {"seen": {"k": 1}, "n": 2}
    jobs = client.get(f"/v1/workflows/{body['id']}/jobs").json()
    assert jobs["total"] >= 1 and jobs["items"][0]["container_id"]


def test_bad_requests_leave_running_workflows_alone(client: httpx.Client) -> None:
    wf_id = submit(client, {"name": "survivor", "steps": [step("s", "time.sleep(1); print(json.dumps('alive'))")]})
    for bad in [b"{", b"[]", b'{"name": "x", "steps": [{"id": "a", "depends_on": ["a"], "image": "i", "command": "x"}]}']:
        r = client.post("/v1/workflows", content=bad, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500
    assert client.post(f"/v1/workflows/{wf_id}/start").status_code == 409
    assert client.get("/v1/workflows/wf-missing").status_code == 404
    body = wait(client, wf_id)
    assert body["status"] == "completed" and body["steps"][0]["output"] == "alive"


def _run_on_victim(client: httpx.Client, stack: Stack, stop_victim: Callable[[Proc], None]) -> tuple[dict, float]:
    """Run a 3 s step on a fresh worker alone, stop that worker mid-step, return the outcome."""
    main_worker = next(p for p in stack.procs if p.name == "worker")
    victim = stack.start_worker(f"victim-{len(stack.procs)}")
    time.sleep(1.0)  # let the victim start polling
    main_worker.popen.send_signal(signal.SIGSTOP)  # only the victim takes the job
    try:
        wf_id = submit(client, {"name": "takeover", "steps": [step("s", "time.sleep(3); print(json.dumps(doc['attempt']))")]})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            task = steps_by_id(client.get(f"/v1/workflows/{wf_id}").json())["s"]["tasks"]
            if task and task[0]["status"] == "running":
                break
            time.sleep(0.05)
        stop_victim(victim)
        stopped_at = time.monotonic()
    finally:
        main_worker.popen.send_signal(signal.SIGCONT)
    body = wait(client, wf_id, timeout_s=60)
    return body, time.monotonic() - stopped_at


def test_a_killed_worker_is_taken_over(client: httpx.Client, stack: Stack) -> None:
    body, took_s = _run_on_victim(client, stack, lambda p: p.popen.kill())  # SIGKILL mid-step
    task = steps_by_id(body)["s"]["tasks"][0]
    assert body["status"] == "completed", stack.logs()
    assert task["takeovers"] == 1 and task["attempt"] == 1
    print(f"takeover after SIGKILL: workflow completed {took_s:.1f}s after the kill")


def test_a_stopping_worker_hands_its_task_over(client: httpx.Client, stack: Stack) -> None:
    body, took_s = _run_on_victim(client, stack, lambda p: p.stop(signal.SIGTERM))
    task = steps_by_id(body)["s"]["tasks"][0]
    assert body["status"] == "completed", stack.logs()
    assert task["takeovers"] == 1 and task["attempt"] == 1
    print(f"hand-over after SIGTERM: workflow completed {took_s:.1f}s after the signal")


def test_no_task_container_outlives_its_workflow(stack: Stack, client: httpx.Client) -> None:
    body = wait(client, submit(client, {"name": "leak-check", "steps": [step("s", "print(1)", mode="cold")]}))
    assert body["status"] == "completed"
    assert steps_by_id(body)["s"]["tasks"][0]["mode"] == "cold"
    out = subprocess.run(
        [
            "docker", "ps", "-aq",
            "--filter", f"label=io.agentainer.flow.service={stack.service_id}",
            "--filter", "label=io.agentainer.flow.kind=oneshot",
        ],
        env={"DOCKER_HOST": stack.docker_host, "PATH": "/usr/local/bin:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == []  # one-shot containers are removed with their task; pooled ones are reaped at shutdown
