"""Durable waits on the real stack (ADR 012): sleep, wait_for_event, approval and workflow steps end to
end; an event in the gap before its wait begins; an event arriving while the worker is replaced; the
restart of a worker and of the gateway while runs wait; cancelling a waiting run and a parent."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Proc, Stack, _wait_healthy
from tests.e2e.flowhttp import brief, step, steps_by_id, submit, wait


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, headers=stack.headers(), timeout=30) as c:
        yield c


def _kind() -> str:
    return f"paid.{uuid.uuid4().hex[:8]}"  # an event type of this test alone


def _until_step(client: httpx.Client, wf_id: str, step_id: str, status: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get(f"/v1/workflows/{wf_id}").json()
        if steps_by_id(body)[step_id]["status"] == status:
            return body
        time.sleep(0.05)
    raise AssertionError(f"step {step_id} never became {status}: {brief(body)}")


def _publish(client: httpx.Client, kind: str, payload: Any, event_id: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": kind, "payload": payload}
    if event_id:
        doc["id"] = event_id
    r = client.post("/v1/events", json=doc)
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


def _payment_flow(kind: str, *, first: dict[str, Any] | None = None, **wait_opts: Any) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    deps: list[str] = []
    if first is not None:
        steps.append(first)
        deps = [first["id"]]
    steps.append({"id": "paid", "type": "wait_for_event", "event_type": kind, "depends_on": deps,
                  "filter": {"order": {"$path": "input.order"}}, **wait_opts})
    steps.append(step("ship", "print(json.dumps({'shipped': doc['deps']['paid']['payload']['amount']}))",
                      depends_on=["paid"]))
    return {"name": "pay-then-ship", "input": {"order": "o-42"}, "steps": steps}


def _shipped_once(body: dict[str, Any], amount: int) -> None:
    steps = steps_by_id(body)
    assert body["status"] == "completed", brief(body)
    ship = steps["ship"]
    assert ship["output"] == {"shipped": amount}
    assert len(ship["tasks"]) == 1 and ship["tasks"][0]["attempt"] == 1 and ship["tasks"][0]["takeovers"] == 0


def test_sleep_parks_the_run_and_the_next_step_runs_after_it(client: httpx.Client) -> None:
    wf = submit(client, {"name": "nap", "steps": [
        {"id": "nap", "type": "sleep", "duration": "1s"},
        step("after", "print(json.dumps(doc['deps']['nap']['woke_at'] >= doc['deps']['nap']['slept_until']))",
             depends_on=["nap"]),
    ]})
    body = _until_step(client, wf, "nap", "running")
    nap = steps_by_id(body)["nap"]
    assert nap["tasks"] == [] and nap["wait"]["kind"] == "sleep" and "due_at" in nap["wait"]  # no container
    body = wait(client, wf, timeout_s=60)
    assert body["status"] == "completed", brief(body)
    assert steps_by_id(body)["after"]["output"] is True


def test_an_event_wakes_exactly_the_matching_run(client: httpx.Client) -> None:
    kind = _kind()
    wf = submit(client, _payment_flow(kind))
    other = submit(client, {**_payment_flow(kind), "input": {"order": "o-43"}})
    _until_step(client, wf, "paid", "running")
    _until_step(client, other, "paid", "running")
    assert _publish(client, kind, {"order": "o-99", "amount": 1})["woke"] == 0
    published = _publish(client, kind, {"order": "o-42", "amount": 30})
    assert published["woke"] == 1
    body = wait(client, wf, timeout_s=60)
    _shipped_once(body, 30)
    assert steps_by_id(body)["paid"]["output"]["event_id"] == published["event_id"]
    assert steps_by_id(client.get(f"/v1/workflows/{other}").json())["paid"]["status"] == "running"
    client.post(f"/v1/workflows/{other}/cancel")


def test_an_event_published_before_the_wait_began_is_not_lost(client: httpx.Client) -> None:
    kind = _kind()
    first = step("quote", "time.sleep(1.5); print(json.dumps({'total': 5}))")
    wf = submit(client, _payment_flow(kind, first=first))
    _publish(client, kind, {"order": "o-42", "amount": 7})  # while 'quote' runs: nobody waits yet
    assert steps_by_id(client.get(f"/v1/workflows/{wf}").json())["paid"]["status"] == "pending"
    _shipped_once(wait(client, wf, timeout_s=60), 7)


def test_a_wait_times_out_with_its_default_output(client: httpx.Client) -> None:
    kind = _kind()
    definition = _payment_flow(kind, timeout="1s", on_timeout="succeed", default_output={"order": "o-42", "amount": 0})
    definition["steps"][-1] = step("ship", "print(json.dumps(doc['deps']['paid']))", depends_on=["paid"])
    body = wait(client, submit(client, definition), timeout_s=60)
    assert body["status"] == "completed", brief(body)
    assert steps_by_id(body)["ship"]["output"] == {"timed_out": True, "payload": {"order": "o-42", "amount": 0}}


def test_cancel_of_a_waiting_run_releases_its_wait(client: httpx.Client) -> None:
    kind = _kind()
    wf = submit(client, _payment_flow(kind))
    _until_step(client, wf, "paid", "running")
    assert client.post(f"/v1/workflows/{wf}/cancel").status_code == 202
    body = wait(client, wf)
    assert body["status"] == "cancelled" and steps_by_id(body)["paid"]["status"] == "cancelled"
    assert _publish(client, kind, {"order": "o-42", "amount": 1})["woke"] == 0
    assert steps_by_id(client.get(f"/v1/workflows/{wf}").json())["ship"]["status"] == "cancelled"


def _isolated_worker(stack: Stack, name: str) -> tuple[Proc, Proc]:
    """A fresh worker alone: the main one is stopped (SIGSTOP) until the caller resumes it."""
    main = next(p for p in stack.procs if p.name == "worker")
    victim = stack.start_worker(f"{name}-{len(stack.procs)}")
    time.sleep(1.0)
    main.popen.send_signal(signal.SIGSTOP)
    return main, victim


def test_an_event_arriving_while_the_worker_is_replaced_resumes_the_run_once(client: httpx.Client, stack: Stack) -> None:
    kind = _kind()
    main, victim = _isolated_worker(stack, "victim")
    try:
        wf = submit(client, _payment_flow(kind))
        _until_step(client, wf, "paid", "running")
        time.sleep(0.5)  # its check job ran on the victim
        victim.popen.kill()  # SIGKILL while the run waits
        victim.popen.wait()
        assert _publish(client, kind, {"order": "o-42", "amount": 11})["woke"] == 1  # no worker at all now
        time.sleep(0.5)
        assert steps_by_id(client.get(f"/v1/workflows/{wf}").json())["paid"]["status"] == "running"
        replacement = stack.start_worker(f"replacement-{len(stack.procs)}")
        body = wait(client, wf, timeout_s=60)
    finally:
        main.popen.send_signal(signal.SIGCONT)
    _shipped_once(body, 11)
    replacement.stop()


def test_a_worker_restart_while_a_run_sleeps(client: httpx.Client, stack: Stack) -> None:
    main, victim = _isolated_worker(stack, "sleeper")
    try:
        wf = submit(client, {"name": "nap", "steps": [{"id": "nap", "type": "sleep", "duration": "2s"},
                                                      step("after", "print(1)", depends_on=["nap"])]})
        _until_step(client, wf, "nap", "running")
        victim.stop(signal.SIGTERM)
        again = stack.start_worker(f"sleeper-again-{len(stack.procs)}")
        body = wait(client, wf, timeout_s=60)
    finally:
        main.popen.send_signal(signal.SIGCONT)
    assert body["status"] == "completed", brief(body)
    again.stop()


def test_a_gateway_restart_while_a_run_waits(client: httpx.Client, stack: Stack) -> None:
    kind = _kind()
    wf = submit(client, _payment_flow(kind))
    _until_step(client, wf, "paid", "running")
    gateway = next(p for p in stack.procs if p.name == "gateway" and p.popen.poll() is None)
    gateway.stop(signal.SIGTERM)
    new = stack.spawn("gateway", "gateway")
    stack.procs.remove(gateway)
    _wait_healthy(f"{stack.url}/healthz", [new])
    with httpx.Client(base_url=stack.url, headers=stack.headers(), timeout=30) as fresh:
        assert _publish(fresh, kind, {"order": "o-42", "amount": 3})["woke"] == 1
        _shipped_once(wait(fresh, wf, timeout_s=60), 3)


def test_an_approval_through_the_api_lets_the_run_go_on(client: httpx.Client) -> None:
    wf = submit(client, {"name": "release", "steps": [
        {"id": "ok", "type": "approval", "message": "deploy?"},
        step("deploy", "print(json.dumps(doc['deps']['ok']['comment']))", depends_on=["ok"]),
    ]})
    _until_step(client, wf, "ok", "running")
    r = client.post(f"/v1/workflows/{wf}/steps/ok/approve", json={"comment": "go"})
    assert r.status_code == 200, r.text
    assert client.post(f"/v1/workflows/{wf}/steps/ok/approve").status_code == 409
    body = wait(client, wf, timeout_s=60)
    assert body["status"] == "completed", brief(body)
    assert steps_by_id(body)["deploy"]["output"] == "go"
    assert steps_by_id(body)["ok"]["output"]["by"].startswith("token:")


def _template(client: httpx.Client, steps: list[dict[str, Any]]) -> str:
    return submit(client, {"name": "child-tpl", "input": {"count": 1}, "steps": steps}, start=False)


def test_a_workflow_step_runs_a_child_and_takes_its_output(client: httpx.Client) -> None:
    tpl = _template(client, [step("sum", "print(json.dumps(sum(range(doc['workflow_input']['count'] + 1))))")])
    wf = submit(client, {"name": "parent", "input": {"n": 4}, "steps": [
        {"id": "child", "type": "workflow", "workflow": tpl, "input": {"count": {"$path": "input.n"}},
         "output_step": "sum"},
        step("double", "print(json.dumps(doc['deps']['child'] * 2))", depends_on=["child"]),
    ]})
    body = wait(client, wf, timeout_s=90)
    assert body["status"] == "completed", brief(body)
    steps = steps_by_id(body)
    assert steps["child"]["output"] == 10 and steps["double"]["output"] == 20
    child_id = steps["child"]["wait"]["child_id"]
    child = client.get(f"/v1/workflows/{child_id}").json()
    assert child["status"] == "completed" and child["origin"]["parent_id"] == wf
    assert child["origin"]["parent_step"] == "child" and child["origin"]["template_id"] == tpl


def test_cancelling_the_parent_cancels_the_child(client: httpx.Client) -> None:
    tpl = _template(client, [{"id": "long", "type": "sleep", "duration": "1h"}])
    wf = submit(client, {"name": "parent", "steps": [{"id": "child", "type": "workflow", "workflow": tpl}]})
    body = _until_step(client, wf, "child", "running")
    child_id = steps_by_id(body)["child"]["wait"]["child_id"]
    deadline = time.monotonic() + 30
    while client.get(f"/v1/workflows/{child_id}").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    _until_step(client, child_id, "long", "running")
    assert client.post(f"/v1/workflows/{wf}/cancel").status_code == 202
    child = wait(client, child_id, timeout_s=30)
    assert child["status"] == "cancelled", brief(child)


def test_a_failed_child_fails_the_step(client: httpx.Client) -> None:
    tpl = _template(client, [step("boom", "sys.exit(3)")])
    wf = submit(client, {"name": "parent", "steps": [{"id": "child", "type": "workflow", "workflow": tpl}]})
    body = wait(client, wf, timeout_s=60)
    assert body["status"] == "failed" and "child workflow" in (steps_by_id(body)["child"]["error"] or ""), brief(body)




def test_bench_waits_measures_event_to_resumed_step_latency(stack: Stack) -> None:
    from bench import waits as bench_waits

    results = bench_waits.measure(stack.url, stack.token, 20)
    assert all(len(v) == 20 and all(x > 0 for x in v) for v in results.values()), results
    print(bench_waits.render(results, 20))
