"""The workflow definitions the bench submits (the JSON of ``POST /v1/workflows``).

Every container step is trivial (``echo 1``): what is measured is the orchestration around it, as
Celery's no-op tasks measure Celery's. Pooled steps run in agent mode (warm containers).
"""

from __future__ import annotations

from typing import Any

IMAGE = "agentainer-flow/python:3.11"
TRIVIAL = "echo 1"


def _pool(mode: str, size: int, scope: str | None = None) -> dict[str, Any]:
    if mode == "cold":
        return {}
    return {"pool": {"min_size": 1, "max_size": size, **({"scope": scope} if scope else {})}}


def chain(n: int, mode: str = "agent", name: str = "bench-chain", scope: str | None = None) -> dict[str, Any]:
    """n steps, each depending on the one before; ``scope="image"`` shares warm containers across workflows."""
    steps = []
    for i in range(n):
        s: dict[str, Any] = {"id": f"s{i}", "image": IMAGE, "command": TRIVIAL, "mode": mode, **_pool(mode, 4, scope)}
        if i:
            s["depends_on"] = [f"s{i - 1}"]
        steps.append(s)
    return {"name": f"{name}-{mode}", "config": {"max_parallel": 10}, "steps": steps}


def fan_map(n: int, mode: str = "agent", concurrency: int = 8, scope: str | None = None) -> dict[str, Any]:
    """One map step over ``n`` items, ``concurrency`` at a time (``scope="image"``: warm containers shared)."""
    step: dict[str, Any] = {
        "id": "m",
        "type": "map",
        "items": "input.items",
        "image": IMAGE,
        "command": TRIVIAL,
        "mode": mode,
        "max_concurrency": concurrency,
    }
    if mode != "cold":
        step["pool"] = {"min_size": concurrency, "max_size": concurrency, **({"scope": scope} if scope else {})}
    return {
        "name": f"bench-map-{n}-{mode}",
        "input": {"items": list(range(n))},
        "config": {"max_parallel": concurrency},
        "steps": [step],
    }


def two_step(mode: str = "agent", scope: str | None = None) -> dict[str, Any]:
    """The smallest workflow with a transition: s0 -> s1."""
    return chain(2, mode, name="bench-two-step", scope=scope)


def sdk_chain() -> tuple[dict[str, Any] | None, str | None, int]:
    """(definition, why not, steps) of the decorated 200-step SDK workflow of :mod:`bench.sdk_chain`."""
    try:
        from agentainer_flow import definition_of
        from bench.sdk_chain import STEPS, SdkChain

        definition: dict[str, Any] = definition_of(SdkChain)
        return definition, None, STEPS
    except Exception as exc:  # the SDK cannot build it: report, do not fail the bench
        return None, f"SDK error: {type(exc).__name__}: {exc}", 0
