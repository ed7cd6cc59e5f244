"""Where a workflow class may live: in a script with an unguarded ``asyncio.run(main())`` at the bottom,
or inside a function (a pytest test). The shipped module runs under a bare ``python3 -I -S`` as the
in-container agent loads it; what cannot be shipped fails before submission, naming the fix."""

from __future__ import annotations

import json
import statistics as stats
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agentainer_flow import ValidationError, definition_of, mapreduce, step, workflow
from agentainer_flow.shipping import generate_source
from tests.unit.test_sdk_shipping import document, functions, run_step

IMG = "agentainer-flow/python:3.11"
OFFSET = 100

# A new user's first script: the SDK document's class example, run with an unguarded asyncio.run.
SCRIPT = '''
import asyncio
import json
import sys

from agentainer_flow import WorkflowClient, definition_of, step, workflow

IMAGE = "agentainer-flow/python:3.11"


@workflow("first-script")
class FirstScript:
    @step(image=IMAGE)
    def fetch(self, ctx):
        return ctx.input["values"]

    @step(image=IMAGE, type="map", items="fetch", depends_on=["fetch"])
    async def square(self, ctx):
        return ctx.item * ctx.item


async def main():
    print(json.dumps(definition_of(FirstScript)))
    async with WorkflowClient() as client:  # what crashed in the step, on a placeholder
        raise SystemExit("main() ran")


print("the script's own print")
result = asyncio.run(main())
'''


def test_a_script_with_an_unguarded_asyncio_run_ships_only_its_definitions(tmp_path: Path) -> None:
    script = tmp_path / "first_script.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False)
    definition = json.loads(done.stdout.splitlines()[1])
    (source,) = definition["modules"].values()
    assert "pass  # not run in a step: result = asyncio.run(main())" in source
    assert "pass  # not run in a step: print(\"the script's own print\")" in source
    assert "async def main():" in source  # definitions stay; only the statements that run the script go

    fns = {s["id"]: {**s["function"], "source": source} for s in definition["steps"]}
    for fn in fns.values():
        del fn["source_ref"]
    fetched = run_step(tmp_path, fns["fetch"], document("fetch", inp={"values": [2, 3]}))
    assert fetched.get("output") == [2, 3], fetched
    squared = run_step(tmp_path, fns["square"], document("square", item=3))
    assert squared.get("output") == 9, squared


def test_a_class_defined_in_a_test_function_runs_with_the_variables_it_reads(tmp_path: Path) -> None:
    factor = 3
    labels = {"unit": "kg", "tags": ("a", "b")}
    image = IMG

    @workflow("local", image=image)
    class Local:
        """Reads a local literal, a local dict, a module imported under an alias, a module constant,
        its own name and ``super()``."""

        @step()
        def scale(self, ctx: Any) -> dict[str, Any]:
            values = [v * factor + OFFSET for v in ctx.input["values"]]
            return {"values": values, "mean": stats.mean(values), "unit": labels["unit"], "me": Local.__name__}

        @step(depends_on=[scale])
        def describe(self, ctx: Any) -> str:
            return super().__repr__().split(" object")[0].rsplit(".", 1)[-1] + " " + "\n    ".join(labels["tags"])

    fns = functions(Local)
    scaled = run_step(tmp_path, fns["scale"], document("scale", inp={"values": [1, 2]}))
    assert scaled.get("output") == {"values": [103, 106], "mean": 104.5, "unit": "kg", "me": "Local"}, scaled
    described = run_step(tmp_path, fns["describe"], document("describe"))
    assert described.get("output") == "Local a\n    b", described  # a multi-line string keeps its text


def test_a_mapreduce_class_defined_in_a_function_ships(tmp_path: Path) -> None:
    @mapreduce("mr", image=IMG)
    class Count:
        def split(self, ctx: Any) -> list[str]:
            return ["a b", "c"]

        def map(self, ctx: Any) -> int:
            return len(ctx.item.split())

        def reduce(self, ctx: Any) -> int:
            return sum(ctx.items)

    fns = functions(Count)
    assert sorted(fns) == ["map", "reduce", "split"]
    assert run_step(tmp_path, fns["map"], document("map", item="a b c")).get("output") == 3


def test_what_cannot_be_shipped_fails_before_submission_naming_the_fix() -> None:
    def helper(x: int) -> int:
        return x + 1

    class Client:
        pass

    client = Client()

    @workflow("unshippable", image=IMG)
    class Unshippable:
        @step()
        def a(self, ctx: Any) -> Any:
            return helper(1), client

    with pytest.raises(ValidationError) as info:
        definition_of(Unshippable)
    message = str(info.value)
    assert "reads 'client' (Client), 'helper' (function) from the function" in message
    assert "test_what_cannot_be_shipped_fails_before_submission_naming_the_fix()" in message
    assert "define it at module level, or create it inside the step" in message


def test_a_class_whose_source_cannot_be_read_fails_naming_the_fix() -> None:
    namespace: dict[str, Any] = {"__name__": "cell_module", "workflow": workflow, "step": step}
    code = textwrap.dedent(
        """
        @workflow("cell", image="i")
        class Cell:
            @step()
            def a(self, ctx):
                return 1
        """
    )
    exec(compile(code, "<cell>", "exec"), namespace)
    with pytest.raises(ValidationError, match=r"cannot read the source of Cell .*define the workflow class in a \.py"):
        generate_source(namespace["Cell"], {"a": "a"})


FRAGILE = '''
from pathlib import Path

from agentainer_flow import step, workflow

DATA = Path(__file__).resolve().parents[40] / "data"  # a test module's paths: fine here, not in a container
NAMES = ["ada", "grace"]


@workflow("fragile", image="agentainer-flow/python:3.11")
class Fragile:
    @step()
    def names(self, ctx):
        return NAMES

    @step(depends_on=[names])
    def read(self, ctx):
        return DATA.name
'''


def test_a_top_level_assignment_that_fails_in_the_container_fails_only_the_steps_using_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path
    for i in range(41):
        deep = deep / f"d{i}"
    deep.mkdir(parents=True)
    (deep / "fragile_wf.py").write_text(FRAGILE)
    monkeypatch.syspath_prepend(str(deep))
    import fragile_wf  # type: ignore[import-not-found]

    try:
        fns = functions(fragile_wf.Fragile)
    finally:
        sys.modules.pop("fragile_wf", None)
    assert run_step(tmp_path, fns["names"], document("names")).get("output") == ["ada", "grace"]
    failed = run_step(tmp_path, fns["read"], document("read"))["error"]
    assert failed.startswith("NameError: DATA is not available in this step's container"), failed
    assert "failed there with IndexError" in failed
