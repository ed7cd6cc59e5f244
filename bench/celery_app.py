"""The Celery peer's app: no-op tasks on the broker named by ``BENCH_CELERY_REDIS`` (started by bench.peers).

Imported by the Celery worker (``celery -A bench.celery_app worker``) and by the bench's client.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery  # type: ignore[import-untyped, import-not-found, unused-ignore]

REDIS = os.environ.get("BENCH_CELERY_REDIS", "redis://127.0.0.1:6379")

app = Celery("bench", broker=f"{REDIS}/0", backend=f"{REDIS}/1")
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
    result_expires=600,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop(*args: Any) -> int:
    return 1


@app.task(name="bench.count")
def count(results: list[Any]) -> int:
    return len(results)


def serve() -> None:
    """The client side, driven over stdin by bench.peers: one command a line, one JSON answer a line.

    ``chain N``, ``group N``, ``chord N`` run that shape of no-op tasks and answer ``{"wall_s": ...}``.
    Run in its own process so that the bench process never imports Celery.
    """
    import gc
    import json
    import sys
    import time

    from celery import chain, chord, group  # type: ignore[import-untyped, import-not-found, unused-ignore]

    # A garbage collection inside the result backend's pub/sub call runs AsyncResult.__del__, which
    # calls the same pub/sub connection again and deadlocks (Celery 5.5 with redis-py 5): collect
    # between commands only, with the results of the last one released.
    gc.disable()
    for line in sys.stdin:
        kind, _, size = line.strip().partition(" ")
        n = int(size or 0)
        started = time.perf_counter()
        result: Any = None
        try:
            if kind == "chain":
                result = chain(noop.si() for _ in range(n)).apply_async()
            elif kind == "group":
                result = group(noop.si() for _ in range(n)).apply_async()
            elif kind == "chord":
                result = chord(group(noop.si() for _ in range(n)))(count.s())
            elif kind == "ping":
                result = noop.delay()
            else:
                raise ValueError(f"unknown command {kind!r}")
            result.get(timeout=600)
            answer: dict[str, Any] = {"wall_s": time.perf_counter() - started}
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)
        del result
        gc.collect()


if __name__ == "__main__":
    serve()
