"""Step code's state access (``ctx.state``) arriving over the agent channel, applied with StateStore.

The workflow is the one of the task running on that channel: a container can never reach another
workflow's state.
"""

from __future__ import annotations

from typing import Any

from flowcore.errors import FlowError, NotFound
from flowcore.pool_api import StateOp
from flowcore.state import StateStore

OPS = ("get", "set", "increment", "append", "delete")


class StateBridge:
    def __init__(self, store: StateStore | None) -> None:
        self._store = store

    async def __call__(self, workflow_id: str, op: str, key: str, value: Any) -> dict[str, Any]:
        if self._store is None:
            return {"ok": False, "error": "the pool service has no Redis connection"}
        if op not in OPS:
            return {"ok": False, "error": f"unknown state operation {op!r}; use one of {', '.join(OPS)}"}
        try:
            if op == "get":
                try:
                    return {"ok": True, "found": True, "value": await self._store.get(workflow_id, key)}
                except NotFound as exc:
                    if exc.field == "key":
                        return {"ok": True, "found": False, "value": None}
                    raise
            if op == "increment" and value is None:
                value = 1
            changed = await self._store.apply(workflow_id, [StateOp(op=op, key=key, value=value)])  # type: ignore[arg-type]
            return {"ok": True, "found": op != "delete", "value": changed.get(key)}
        except FlowError as exc:
            return {"ok": False, "error": exc.message}
