"""The cost of admission (ADR 013): ``python -m bench.admission [--n 500]``.

Starts its own redis-server on a free loopback port and submits workflows in-process through the
gateway's ``submit`` (record, admission, the engine's start commit and its arq jobs; no containers,
nothing consumes the jobs), from ``--clients`` concurrent tasks:

- without flow control;
- through a concurrency key of limit 1, every start its own key value (all admitted);
- through one concurrency key of limit 1 (all but one queued);
- the same queue drained: each finish (a cancel commit) releases the key and admits the next.

Reports starts/s and Redis commands per start, and writes the ``admission`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.sections import upsert
from flowcore import engine
from flowcore.engine import EngineEnv
from flowcore.keyspace import Keyspace
from flowcore.models import WorkflowDefinition, WorkflowStatus
from flowcore.store import WorkflowStore
from gateway.routes.workflows import submit


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def definition(config: dict[str, Any], customer: str) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate({
        "name": "bench-admission", "config": config, "input": {"customer": customer},
        "steps": [{"id": "a", "image": "agentainer-flow/python:3.11", "command": "true"}],
    })


async def _commands(redis: Redis) -> int:
    info = await redis.info("stats")
    return int(info["total_commands_processed"])


async def timed(redis: Redis, n: int, clients: int, one: Callable[[int], Awaitable[None]]) -> tuple[float, float]:
    """(operations per second, Redis commands per operation) of ``n`` calls of ``one`` from ``clients`` tasks."""
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await one(i)

    before = await _commands(redis)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    took = time.perf_counter() - started
    return n / took, (await _commands(redis) - before) / n


async def scenarios(url: str, n: int, clients: int) -> list[tuple[str, float, float]]:
    redis = Redis.from_url(url)
    rows: list[tuple[str, float, float]] = []
    try:
        store = WorkflowStore(redis, Keyspace("bench-admission"))
        keyed = {"concurrency": {"key": "input.customer", "limit": 1}}
        plain_defs = [definition({}, f"c{i}") for i in range(n)]
        rate, per = await timed(redis, n, clients, lambda i: submit(store, plain_defs[i], start=True))
        rows.append(("without flow control", rate, per))
        own_defs = [definition(keyed, f"c{i}") for i in range(n)]
        rate, per = await timed(redis, n, clients, lambda i: submit(store, own_defs[i], start=True))
        rows.append(("concurrency key, limit 1, a key per start (admitted)", rate, per))
        one = definition(keyed, "acme")
        ids: list[str] = []

        async def queued(i: int) -> None:
            ids.append((await submit(store, one, start=True)).wf_id)

        rate, per = await timed(redis, n, clients, queued)
        rows.append(("concurrency key, limit 1, one key (queued)", rate, per))

        async def drain(_: int) -> None:
            running, _total = await store.list_ids(WorkflowStatus.RUNNING, 0, 1)
            await store.transact(running[0], lambda snap: engine.cancel(snap, EngineEnv(), "bench"))

        rate, per = await timed(redis, n - 1, 1, drain)
        rows.append(("one key drained: finish -> release -> next admitted and started", rate, per))
    finally:
        await redis.aclose()
    return rows


def render(rows: list[tuple[str, float, float]], n: int, clients: int) -> str:
    lines = [
        "## Admission (flow control, ADR 013)",
        "",
        f"`python -m bench.admission`: {n} starts per row through the gateway's submit path, in-process, from"
        f" {clients} concurrent tasks, against a private redis-server (no containers run; the jobs are only"
        " enqueued). Starts/s and Redis commands per start (the drain row: per finish).",
        "",
        "| scenario | starts/s | Redis commands per start |",
        "|---|---|---|",
    ]
    lines += [f"| {label} | {rate:.0f} | {per:.1f} |" for label, rate, per in rows]
    return "\n".join(lines) + "\n"


def run(n: int = 500, clients: int = 8, out: str | None = "BENCHMARKS.md") -> str:
    workdir = tempfile.mkdtemp(prefix="bench-admission-")
    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir, "--save", "",
         "--appendonly", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        rows = asyncio.run(scenarios(f"redis://127.0.0.1:{port}/0", n, clients))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    text = render(rows, n, clients)
    if out:
        upsert(Path(out), "admission", text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--out", default="BENCHMARKS.md", help="'' to only print")
    args = p.parse_args()
    print(run(args.n, args.clients, args.out or None))


if __name__ == "__main__":
    main()
