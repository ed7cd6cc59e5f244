"""Workflow logs: the output lines of a workflow's tasks (``/v1/workflows/{id}/logs``), whole or followed."""

from __future__ import annotations

from typing import Any, Literal, overload

from agentainer_flow._base import BaseClient, LineStream, seg
from agentainer_flow.errors import ValidationError

_PAGE = 10_000


def _line(item: dict[str, Any]) -> str:
    return f"[{item.get('source') or item.get('step_id')}] {item.get('line', '')}\n"


class LogsAPI(BaseClient):
    @overload
    async def get_workflow_logs(
        self, workflow_id: str, step_id: str | None = None, follow: Literal[False] = False, *, index: int | None = None
    ) -> str: ...
    @overload
    async def get_workflow_logs(
        self, workflow_id: str, step_id: str | None = None, *, follow: Literal[True], index: int | None = None
    ) -> LineStream: ...
    @overload
    async def get_workflow_logs(
        self, workflow_id: str, step_id: str | None, follow: Literal[True], *, index: int | None = None
    ) -> LineStream: ...
    async def get_workflow_logs(
        self, workflow_id: str, step_id: str | None = None, follow: bool = False, *, index: int | None = None
    ) -> str | LineStream:
        """The output lines of a workflow's tasks (of one step with ``step_id``, of one task with ``index``),
        each as ``"[step] line\\n"`` (``[step#index]`` for parallel and map steps), as they were printed.

        Without ``follow``, the lines so far as one string. With ``follow=True``, an async iterator of
        lines (each keeping its ``"\\n"``) that goes on while the workflow runs and ends when it finishes.
        Raises ``ClientError`` (404 for an unknown workflow, 422 naming ``step`` for an unknown step).
        """
        params: dict[str, Any] = {}
        if step_id is not None:
            params["step"] = step_id
        if index is not None:
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise ValidationError(f"index must be a non-negative integer, got {index!r}", field="index")
            params["index"] = index
        path = f"/v1/workflows/{seg(workflow_id)}/logs"
        if follow:
            return await self._stream_lines(path, {**params, "follow": "true"})
        lines: list[str] = []
        while True:
            data = await self._request("GET", path, params={**params, "limit": _PAGE})
            items = data.get("items", []) if isinstance(data, dict) else []
            lines.extend(_line(i) for i in items)
            if len(items) < _PAGE:
                return "".join(lines)
            params["since"] = data["next"]
