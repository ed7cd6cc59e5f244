"""A decorated SDK workflow of N Python-function steps in a chain (``@workflow`` + ``@step``).

The class is built at import, N = ``STEPS`` steps ``s0 -> s1 -> ...``, each returning its index. The
module ships to the step containers as the SDK ships any workflow module (its source, with a stub
for ``agentainer_flow``), so it imports nothing but the SDK and the standard library.
"""

from __future__ import annotations

from typing import Any

from agentainer_flow import step, workflow

IMAGE = "agentainer-flow/python:3.11"
STEPS = 200


@workflow("bench-sdk-chain", description="200 Python-function steps in a chain", max_parallel=4, image=IMAGE)
class SdkChain:
    pass


def _make_step(i: int) -> Any:
    def run(self: Any, ctx: Any) -> int:
        return i

    run.__name__ = f"s{i}"
    run.__qualname__ = f"SdkChain.s{i}"
    depends = [f"s{i - 1}"] if i else []
    return step(image=IMAGE, depends_on=depends, mode="agent", pool={"min_size": 1, "max_size": 2})(run)


for _i in range(STEPS):
    setattr(SdkChain, f"s{_i}", _make_step(_i))
