"""A decorated workflow of many Python-function steps, for the tests that ship one module to many steps.

``Chain`` is ``s000 -> s001 -> ... -> s199``: each step outputs its predecessor's output plus one, so
the last one outputs the chain's length. Its steps are added in a loop, which also runs when the
module is loaded inside a step's container.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentainer_flow import step, workflow

IMAGE = "agentainer-flow/python:3.11"
LENGTH = 200


def step_id(index: int) -> str:
    return f"s{index:03d}"


def _link(index: int) -> Callable[[Any, Any], int]:
    previous = step_id(index - 1)

    def link(self: Any, ctx: Any) -> int:
        return int(ctx.deps.get(previous, 0)) + 1

    return step(image=IMAGE, depends_on=[previous] if index else [])(link)


@workflow("sdk-chain", max_parallel=4)
class Chain:
    """The steps are set below."""


for _index in range(LENGTH):
    setattr(Chain, step_id(_index), _link(_index))
