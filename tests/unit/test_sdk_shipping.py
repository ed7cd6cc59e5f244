"""The module a Python-function step ships runs under a bare ``python3 -I -S`` (no site-packages: no
httpx, no pydantic, no agentainer_flow), loaded and called the way the in-container agent does it."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentainer_flow import definition_of
from examples.decorators.pipeline import SAMPLE_ORDERS, OrderPipeline
from flowcore.models import WorkflowDefinition, task_function

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "pool" / "agent" / "flow_agent_functions.py"

# Loads the agent's function module, imports the function as a zygote does, builds the agent's own
# StepContext with an in-memory state, calls the function, awaits a coroutine, prints the result.
DRIVER = textwrap.dedent(
    """
    import asyncio, importlib.util, json, logging, sys
    sys.path.insert(0, sys.argv[1].rsplit("/", 1)[0])  # the agent's sibling modules, as in a container
    spec = importlib.util.spec_from_file_location("flow_agent_functions", sys.argv[1])
    fa = importlib.util.module_from_spec(spec); spec.loader.exec_module(fa)
    job = json.load(sys.stdin)

    class State:
        def __init__(self, data): self.d = data
        def get(self, k, default=None): return self.d.get(k, default)
        def set(self, k, v): self.d[k] = v; return v
        def increment(self, k, by=1): self.d[k] = self.d.get(k, 0) + by; return self.d[k]
        def append(self, k, v): self.d.setdefault(k, []).append(v); return self.d[k]
        def delete(self, k): self.d.pop(k, None)

    state = State(job.get("state", {}))
    try:
        fn = fa.load_function(job["function"])
        value = fn(fa.StepContext(job["ctx"], {}, state, logging.getLogger("t")))
        if asyncio.iscoroutine(value):
            value = asyncio.new_event_loop().run_until_complete(value)
        print(json.dumps({"output": value, "state": state.d, "third_party": sorted(
            m for m in ("httpx", "pydantic", "pytest") if m in sys.modules)}))
    except Exception as exc:
        print(json.dumps({"error": type(exc).__name__ + ": " + str(exc)}))
    """
)


def python3() -> str:
    found = shutil.which("python3", path="/usr/bin:/bin") or shutil.which("python3")
    assert found, "python3 is needed to run step modules"
    return found


def run_step(tmp_path: Path, function: dict[str, Any], doc: dict[str, Any], state: dict[str, Any] | None = None) -> Any:
    ctx = {"workflow_id": "wf-1", "step_id": doc["step_id"], "task_id": "t-1", "index": doc.get("index", 0),
           "attempt": 1, "input": doc}
    job = {"function": function, "ctx": ctx, "state": state or {}}
    done = subprocess.run(
        [python3(), "-I", "-S", "-c", DRIVER, str(AGENT), str(tmp_path)],
        input=json.dumps(job), capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def document(step_id: str, *, item: Any = None, items: Any = None, deps: Any = None, inp: Any = None) -> dict[str, Any]:
    doc = {"workflow": {"id": "wf-1", "name": "order-pipeline"}, "step_id": step_id, "index": 0, "attempt": 1,
           "input": inp, "workflow_input": inp, "deps": deps or {}}
    if item is not None:
        doc["item"] = item
    if items is not None:
        doc["items"] = items
    return doc


def functions(obj: Any) -> dict[str, dict[str, Any]]:
    """Step id -> the ``function`` the pool's agent gets for it: the definition as the gateway parses
    it, each step's module reference resolved as a task request resolves it."""
    defn = WorkflowDefinition.model_validate(definition_of(obj))
    return {
        s.id: fn.model_dump()
        for s in defn.steps
        if (fn := task_function(s.function, defn.modules)) is not None
    }


def test_every_step_of_the_example_runs_in_a_bare_python(tmp_path: Path) -> None:
    fns = functions(OrderPipeline)
    loaded = run_step(tmp_path, fns["load"], document("load", inp={"orders": SAMPLE_ORDERS}))
    assert loaded["output"] == SAMPLE_ORDERS and loaded["state"] == {"orders_seen": 0}
    assert loaded["third_party"] == []
    priced = run_step(tmp_path, fns["price"], document("price", item=SAMPLE_ORDERS[0]), state={"orders_seen": 0})
    assert priced["output"] == {"id": "A-1", "total": 39.0}  # an async step, awaited
    assert priced["state"] == {"orders_seen": 1, "priced": ["A-1"]}
    summary = run_step(tmp_path, fns["summarize"], document("summarize", items=[{"total": 60.5}, {"total": 40}]))
    assert summary["output"] == {"orders": 2, "revenue": 100.5}
    big = run_step(tmp_path, fns["big_day"], document("big_day", deps={"summarize": summary["output"]}))
    assert big["output"] == "big day: 100.5" and big["state"] == {"verdict": "big"}


MODULE = '''
"""A workflow module that needs things step images do not have, at its top level."""
from __future__ import annotations

import json
import httpx
import pytest
from pydantic import BaseModel as Model
from agentainer_flow import ClientError, WorkflowClient, step, workflow
from agentainer_flow.errors import WorkflowError

LIMIT = 3


@pytest.fixture
def unused():
    return None


class Settings(Model):
    url: str = "http://x"


@workflow("tolerant", image="agentainer-flow/python:3.11")
class Tolerant:
    def __init__(self):
        self.factor = 2

    @step()
    def plain(self, ctx) -> dict:
        try:
            raise WorkflowError("caught")
        except (ClientError, WorkflowError) as exc:
            caught = str(exc)
        return {"double": [x * self.factor for x in ctx.input["values"][:LIMIT]], "caught": caught,
                "json": json.dumps(1)}

    @step(depends_on=[plain])
    def needs_httpx(self, ctx):
        return httpx.get("http://127.0.0.1:1")


async def main() -> None:
    async with WorkflowClient() as client:
        await client.run_workflow(Tolerant())


if __name__ == "__main__":
    raise SystemExit("must not run in the container")
'''


@pytest.fixture
def tolerant_module(tmp_path: Path) -> Iterator[Any]:
    package = tmp_path / "shipmods"
    package.mkdir()
    (package / "tolerant_wf.py").write_text(MODULE)
    sys.path.insert(0, str(package))
    try:
        yield importlib.import_module("tolerant_wf")
    finally:
        sys.path.remove(str(package))
        sys.modules.pop("tolerant_wf", None)


def test_top_level_imports_missing_in_the_image_are_tolerated(tmp_path: Path, tolerant_module: Any) -> None:
    fns = functions(tolerant_module.Tolerant)
    source = fns["plain"]["source"]
    assert source.startswith("from __future__ import annotations")
    result = run_step(tmp_path, fns["plain"], document("plain", inp={"values": [1, 2, 3, 4]}))
    assert "error" not in result, result
    assert result["output"] == {"double": [2, 4, 6], "caught": "caught", "json": "1"}
    failed = run_step(tmp_path, fns["needs_httpx"], document("needs_httpx"))
    assert failed["error"].startswith("ModuleNotFoundError: httpx is not available in this step's image")
