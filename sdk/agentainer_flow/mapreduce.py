"""MapReduce in one call: a ``list`` step, a ``map`` over its output, a ``reduce`` over the results.

Two ways in:

- :class:`MapReduceConfig` for container commands (``client.run_mapreduce(config)``). Without
  commands the steps are stdlib Python one-liners: ``list`` outputs the workflow input's ``items``,
  ``map`` outputs its item unchanged, ``reduce`` outputs the list of map results. Each command reads
  the task's input document (JSON) on stdin and prints its JSON output on stdout.
- :func:`mapreduce` on a class with ``map(self, ctx)`` and ``reduce(self, ctx)`` methods (and
  optionally ``split(self, ctx)`` returning the items; without it the map runs over
  ``input.items``): Python-function steps, run like any ``@workflow`` class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentainer_flow.decorators import step, workflow
from agentainer_flow.errors import ValidationError

C = TypeVar("C", bound=type)

_READ = "import json,sys; d=json.load(sys.stdin); "
DEFAULT_LIST_COMMAND = [
    "python3", "-c",
    _READ + "i=d.get('workflow_input'); print(json.dumps(i.get('items', []) if isinstance(i, dict) else []))",
]
DEFAULT_MAP_COMMAND = ["python3", "-c", _READ + "print(json.dumps(d.get('item')))"]
DEFAULT_REDUCE_COMMAND = ["python3", "-c", _READ + "print(json.dumps(d.get('items', [])))"]


class MapReduceConfig(BaseModel):
    """A list -> map -> reduce workflow of container steps."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    mapper_image: str = Field(min_length=1, description="Image of the map (and, by default, list) step.")
    reducer_image: str | None = Field(None, description="Image of the reduce step (default: mapper_image).")
    max_parallel: int = Field(10, ge=1, le=1000, description="Map tasks running at once (and the workflow's).")
    pool_size: int | None = Field(None, ge=1, le=256, description="Most warm containers for the map step.")
    timeout: float | str | None = Field(None, description="Workflow timeout: seconds or '30m'.")
    items: list[Any] | None = Field(None, description="What to map over (sent as the workflow input's 'items').")
    mapper_command: list[str] | str | None = None
    reducer_command: list[str] | str | None = None
    list_command: list[str] | str | None = None
    list_image: str | None = None
    input_data: dict[str, Any] | None = Field(None, description="The workflow input ('items' added to it).")
    description: str | None = None
    network: str | None = Field(None, description="Network of every step ('none' by default; 'host').")
    env: dict[str, str] | None = None
    step_timeout: float | str | None = Field(None, description="Timeout of each task.")
    retry: int | None = Field(None, ge=1, le=100, description="Attempts per task.")

    @model_validator(mode="after")
    def _positive_timeouts(self) -> MapReduceConfig:
        for name in ("timeout", "step_timeout"):
            value = getattr(self, name)
            if isinstance(value, int | float) and value <= 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        return self

    def to_definition(self) -> dict[str, Any]:
        """The workflow definition (steps ``list``, ``map``, ``reduce``)."""
        common: dict[str, Any] = {}
        if self.network:
            common["network"] = self.network
        if self.env:
            common["env"] = self.env
        if self.step_timeout is not None:
            common["timeout"] = self.step_timeout
        if self.retry:
            common["retry"] = {"max_attempts": self.retry}
        map_step: dict[str, Any] = {
            "id": "map", "type": "map", "depends_on": ["list"], "items": "steps.list.output",
            "image": self.mapper_image, "command": self.mapper_command or DEFAULT_MAP_COMMAND,
            "max_concurrency": self.max_parallel, **common,
        }
        if self.pool_size is not None:
            map_step["pool"] = {"max_size": self.pool_size, "min_size": 0}
        steps = [
            {"id": "list", "image": self.list_image or self.mapper_image,
             "command": self.list_command or DEFAULT_LIST_COMMAND, **common},
            map_step,
            {"id": "reduce", "type": "reduce", "depends_on": ["map"], "image": self.reducer_image or self.mapper_image,
             "command": self.reducer_command or DEFAULT_REDUCE_COMMAND, **common},
        ]
        config: dict[str, Any] = {"max_parallel": self.max_parallel}
        if self.timeout is not None:
            config["timeout"] = self.timeout
        data = dict(self.input_data or {})
        if self.items is not None:
            data["items"] = self.items
        definition: dict[str, Any] = {"name": self.name, "config": config, "steps": steps, "input": data}
        if self.description:
            definition["description"] = self.description
        return definition


def mapreduce(
    name: str,
    *,
    image: str,
    reducer_image: str | None = None,
    max_parallel: int | None = None,
    pool_size: int | None = None,
    timeout: float | str | None = None,
    description: str | None = None,
    network: str | None = None,
) -> Callable[[C], C]:
    """A ``@workflow`` whose steps are the class's ``split`` (optional), ``map`` and ``reduce`` methods.

    ``map`` runs once per item (``ctx.item``); ``reduce`` gets the map results as ``ctx.items``.
    """

    def decorate(cls: C) -> C:
        for needed in ("map", "reduce"):
            if not callable(getattr(cls, needed, None)):
                raise ValidationError(f"@mapreduce class {cls.__name__} needs a {needed}(self, ctx) method", field=needed)
        has_split = callable(getattr(cls, "split", None))
        pool = {"max_size": pool_size, "min_size": 0} if pool_size else None
        if has_split:
            step(image=image, network=network)(cls.split)  # type: ignore[attr-defined]
        step(
            image=image, type="map", items="split" if has_split else "input.items",
            depends_on=["split"] if has_split else [], max_concurrency=max_parallel, pool=pool, network=network,
        )(cls.map)  # type: ignore[attr-defined]
        step(image=reducer_image or image, type="reduce", depends_on=["map"], network=network)(cls.reduce)  # type: ignore[attr-defined]
        return workflow(name, description=description, max_parallel=max_parallel, timeout=timeout)(cls)

    return decorate
