"""The MapReduce word counter: a list step, a map over documents, a reduce to the top words.

Every step is a real container step running one of the programs in ``steps/`` from the example's
image, ``agentainer-flow/wordcount:<content tag>`` (``Dockerfile``: the base image with ``steps/*.py``
copied to ``/app``), e.g. ``python3 /app/count_words.py``. The task's input document arrives on stdin,
its JSON output leaves on stdout. ``scripts/build_example_images.sh`` builds the image, offline, when it
is missing (``make demo`` and the tests run it); the tag is a hash of the programs
(:mod:`examples.images`), so an edited program is a new image. Step containers run with network
``none`` and see nothing of this machine, so the bundled texts (``data/*.txt``) travel in the workflow
input.

The URL variant serves ``data/`` from a small ``http.server`` on 127.0.0.1 and hands the map step URLs
instead; its steps use network ``host`` to reach it.

Run it against a running stack (``make up``), after ``scripts/build_example_images.sh``::

    .venv/bin/python -m examples.wordcount.wordcount            # bundled texts
    .venv/bin/python -m examples.wordcount.wordcount --urls     # the same texts over HTTP
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agentainer_flow import MapReduceConfig, Workflow, WorkflowClient
from examples.images import reference

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
STEPS = HERE / "steps"
IMAGE = reference("wordcount")  # agentainer-flow/wordcount:<hash of Dockerfile and steps/*.py>
APP = "/app"  # where the Dockerfile puts steps/*.py
TOP = 10


def program(name: str) -> list[str]:
    """The command running ``steps/<name>.py`` in the image: ``python3 /app/<name>.py``."""
    if not (STEPS / f"{name}.py").is_file():
        raise FileNotFoundError(f"examples/wordcount/steps/{name}.py does not exist")
    return ["python3", f"{APP}/{name}.py"]


def documents() -> list[dict[str, str]]:
    return [{"name": p.name, "text": p.read_text()} for p in sorted(DATA.glob("*.txt"))]


def config(
    *, urls: list[dict[str, str]] | None = None, image: str = IMAGE, max_parallel: int = 4, top: int = TOP
) -> MapReduceConfig:
    """The workflow: over the bundled texts, or over ``urls`` (then with network ``host``)."""
    data: dict[str, Any] = {"top": top}
    if urls is None:
        data["documents"] = documents()
    else:
        data["urls"] = urls
    return MapReduceConfig(
        name="wordcount-urls" if urls is not None else "wordcount",
        description="Count words in documents: list -> map -> reduce",
        mapper_image=image,
        max_parallel=max_parallel,
        pool_size=max_parallel,
        timeout="5m",
        step_timeout=60,
        list_command=program("list_documents"),
        mapper_command=program("count_words"),
        reducer_command=program("top_words"),
        input_data=data,
        network="host" if urls is not None else None,
    )


def expected(top: int = TOP) -> dict[str, Any]:
    """What the workflow must answer, computed by running the same scripts here with local python3."""
    def call(name: str, doc: dict[str, Any]) -> Any:
        done = subprocess.run(
            [sys.executable, str(STEPS / f"{name}.py")], input=json.dumps(doc), capture_output=True, text=True,
            check=True,
        )
        return json.loads(done.stdout)

    items = call("list_documents", {"workflow_input": {"documents": documents()}})
    counted = [call("count_words", {"item": item}) for item in items]
    return call("top_words", {"items": counted, "workflow_input": {"top": top}})  # type: ignore[no-any-return]


@contextlib.contextmanager
def serve_data() -> Iterator[str]:
    """Serve ``data/`` on a free port of 127.0.0.1; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(DATA))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


async def run(client: WorkflowClient, *, urls: bool = False, timeout_s: float = 120) -> Workflow:
    """Run the word count on the stack behind ``client``; returns the finished workflow."""
    if not urls:
        execution = await client.run_mapreduce(config())
        return await execution.wait_for_completion(timeout=timeout_s)
    with serve_data() as base:
        links = [{"name": p.name, "url": f"{base}/{p.name}"} for p in sorted(DATA.glob("*.txt"))]
        execution = await client.run_mapreduce(config(urls=links))
        return await execution.wait_for_completion(timeout=timeout_s)


def report(wf: Workflow) -> str:
    result = wf.step("reduce").output
    lines = [f"{wf.name}: {result['documents']} documents, {result['total_words']} words counted"]
    lines += [f"  {word:<12} {count}" for word, count in result["top"]]
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--urls", action="store_true", help="fetch the texts over HTTP from 127.0.0.1")
    args = parser.parse_args(argv)
    async with WorkflowClient() as client:
        print(report(await run(client, urls=args.urls)))


if __name__ == "__main__":
    asyncio.run(main())
