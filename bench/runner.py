"""Run workflows on a stack over HTTP and learn when they finish, without polling their records.

A :class:`Watcher` follows the gateway's global event stream (``GET /v1/events``) in a thread: it
records each workflow's final status with the server's timestamp, and counts its finished tasks (so
that a run stopped at its wall-time cap still says how far it got). Polling ``GET /v1/workflows/{id}``
every few milliseconds would cost the gateway more CPU than some of the work measured, and reading a
10,000-task record per poll far more.

:func:`run_batch` submits N workflows (from a few threads, for the concurrent scenarios), waits for
all of them or the cap, cancels what is left at the cap, and returns a :class:`BatchResult`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

FINAL = ("completed", "failed", "cancelled")


@dataclass
class Progress:
    status: str = "pending"
    finished_ts: float | None = None  # server time of the final workflow event
    tasks_done: int = 0  # tasks that succeeded or failed (attempts that will not be retried)


class Watcher:
    """Every workflow's progress, from the global event stream, in a daemon thread."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        self.base_url, self.headers = base_url, headers
        self.progress: dict[str, Progress] = {}
        self.cond = threading.Condition()
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name="bench-events", daemon=True)

    def __enter__(self) -> Watcher:
        self.thread.start()
        if not self.connected.wait(15):
            raise RuntimeError(f"no event stream from {self.base_url}/v1/events: {self.error}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()  # the thread ends at its next line or keep-alive; it is a daemon anyway

    def _run(self) -> None:
        since: str | None = None
        while not self.stopping.is_set():
            try:
                params = {"since": since} if since else {}
                timeout = httpx.Timeout(10, read=30)
                with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout) as client, \
                        client.stream("GET", "/v1/events", params=params) as response:
                    response.raise_for_status()
                    self.connected.set()
                    for line in response.iter_lines():
                        if self.stopping.is_set():
                            return
                        if line.startswith("id: "):
                            since = line[4:]
                        elif line.startswith("data: "):
                            self._on_event(json.loads(line[6:]))
            except (httpx.HTTPError, ValueError) as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                time.sleep(0.2)

    def _on_event(self, data: dict[str, Any]) -> None:
        wf = data.get("workflow_id")
        if not isinstance(wf, str):
            return
        with self.cond:
            progress = self.progress.setdefault(wf, Progress())
            if data.get("type") == "workflow" and isinstance(data.get("status"), str):
                progress.status = data["status"]
                if progress.status in FINAL:
                    progress.finished_ts = float(data.get("ts") or time.time())
                    self.cond.notify_all()
            elif data.get("type") == "task" and data.get("status") in ("succeeded", "failed"):
                progress.tasks_done += 1

    def wait(self, ids: list[str], deadline: float) -> bool:
        """True when every workflow of ``ids`` has finished before ``deadline`` (time.monotonic())."""
        with self.cond:
            while True:
                if all(self.progress.get(i, Progress()).finished_ts is not None for i in ids):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 1.0))

    def snapshot(self, ids: list[str]) -> list[Progress]:
        with self.cond:
            return [Progress(**vars(self.progress.get(i, Progress()))) for i in ids]


@dataclass
class BatchResult:
    label: str
    workflows: int
    tasks_expected: int  # tasks the definitions make (steps x items)
    tasks_done: int
    wall_s: float  # submission of the first -> final event of the last (or the cap)
    statuses: dict[str, int] = field(default_factory=dict)
    finished: bool = True
    cap_s: float | None = None
    refused: str | None = None  # e.g. "413 Payload Too Large" when the gateway refused the definition
    latencies_s: list[float] = field(default_factory=list)  # per workflow: its submission -> its final event
    ids: list[str] = field(default_factory=list)

    @property
    def tasks_per_s(self) -> float | None:
        return self.tasks_done / self.wall_s if self.wall_s > 0 and self.tasks_done else None

    @property
    def outcome(self) -> str:
        if self.refused:
            return f"refused: {self.refused}"
        if not self.finished:
            return f"did not finish in {self.cap_s:.0f} s"
        bad = {k: v for k, v in self.statuses.items() if k != "completed"}
        return "completed" if not bad else ", ".join(f"{v} {k}" for k, v in sorted(bad.items()))


def submit(client: httpx.Client, definition: dict[str, Any]) -> tuple[str | None, str | None, float]:
    """(workflow id, refusal, wall clock at submission) of one ``POST /v1/workflows?start=true``."""
    at = time.time()
    r = client.post("/v1/workflows", params={"start": "true"}, json=definition)
    if r.status_code >= 400:
        try:
            message = str(r.json().get("message", ""))[:160]
        except ValueError:
            message = r.text[:160]
        return None, f"{r.status_code} {r.reason_phrase}" + (f" ({message})" if message else ""), at
    return str(r.json()["id"]), None, at


def cancel(client: httpx.Client, wf_id: str) -> None:
    try:
        client.post(f"/v1/workflows/{wf_id}/cancel")
    except httpx.HTTPError:
        pass


def run_batch(
    client_factory: Callable[[], httpx.Client],
    watcher: Watcher,
    definitions: list[dict[str, Any]],
    label: str,
    tasks_each: int,
    cap_s: float,
    submitters: int = 1,
) -> BatchResult:
    """Submit ``definitions`` (from ``submitters`` threads), wait for all or ``cap_s``, cancel the rest."""
    started_wall, started = time.time(), time.monotonic()
    results: list[tuple[str | None, str | None, float]] = []

    def submit_some(part: list[dict[str, Any]]) -> list[tuple[str | None, str | None, float]]:
        with client_factory() as client:
            return [submit(client, d) for d in part]

    if submitters <= 1 or len(definitions) == 1:
        results = submit_some(definitions)
    else:
        parts = [definitions[i::submitters] for i in range(submitters)]
        with ThreadPoolExecutor(submitters) as pool:
            for chunk in pool.map(submit_some, parts):
                results.extend(chunk)
    ids = [wf for wf, _, _ in results if wf]
    refused = next((why for _, why, _ in results if why), None)
    if not ids:
        return BatchResult(label, len(definitions), tasks_each * len(definitions), 0, time.time() - started_wall,
                           refused=refused or "nothing submitted", cap_s=cap_s)
    finished = watcher.wait(ids, started + cap_s)
    at_end = watcher.snapshot(ids)  # at the cap, how far the run got (before cancelling the rest)
    if not finished:
        with client_factory() as client:
            for wf in ids:
                if watcher.snapshot([wf])[0].finished_ts is None:
                    cancel(client, wf)
        watcher.wait(ids, time.monotonic() + 30)  # let the cancellations land before the next scenario
    states = watcher.snapshot(ids)
    submitted_at = {wf: at for wf, _, at in results if wf}
    ends = [s.finished_ts for s in states if s.finished_ts is not None]
    wall = (max(ends) - started_wall) if finished and ends else cap_s
    statuses: dict[str, int] = {}
    for s in states:
        statuses[s.status] = statuses.get(s.status, 0) + 1
    return BatchResult(
        label, len(definitions), tasks_each * len(definitions), sum(s.tasks_done for s in at_end), wall,
        statuses, finished, cap_s, refused if len(ids) < len(definitions) else None,
        [s.finished_ts - submitted_at[wf] for wf, s in zip(ids, states, strict=True) if s.finished_ts is not None],
        ids,
    )
