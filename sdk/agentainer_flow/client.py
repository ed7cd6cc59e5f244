"""``WorkflowClient``: the async client of the Agentainer Flow API.

::

    async with WorkflowClient() as client:          # $FLOW_URL / $FLOW_TOKEN, else localhost:8081
        execution = await client.run_workflow(MyWorkflow(), input_data={"key": "value"})
        workflow = await execution.wait_for_completion(timeout=300)

Every method raises :class:`~agentainer_flow.ClientError` for an error answer (with the server's
message and field), :class:`~agentainer_flow.TransportError` when the API cannot be reached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentainer_flow._base import BaseClient, seg
from agentainer_flow.agents import AgentsAPI
from agentainer_flow.decorators import WORKFLOW_ATTR
from agentainer_flow.definition import definition_of
from agentainer_flow.errors import ValidationError
from agentainer_flow.execution import WorkflowExecution
from agentainer_flow.kept import KeptAPI
from agentainer_flow.logs import LogsAPI
from agentainer_flow.mapreduce import MapReduceConfig
from agentainer_flow.metrics import MetricsAPI
from agentainer_flow.models import Job, Workflow, WorkflowStatus
from agentainer_flow.retention import RetentionAPI
from agentainer_flow.secret_api import SecretsAPI
from agentainer_flow.triggers import TriggersAPI

_PAGE = 200


class WorkflowClient(AgentsAPI, KeptAPI, TriggersAPI, MetricsAPI, LogsAPI, RetentionAPI, SecretsAPI, BaseClient):
    """Workflows, their state, agents, triggers and metrics over the REST API (``/v1``).

    ``WorkflowClient(base_url="http://localhost:8081", token="default-token", timeout=30.0)``; use it
    with ``async with``, or call :meth:`aclose` when done. ``client.session`` is the underlying
    ``httpx.AsyncClient``: ``client.session.headers.update({...})`` adds headers to every request.
    """

    # ---- workflows -----------------------------------------------------------------------------
    async def create_workflow(
        self,
        name: str,
        description: str | None = None,
        config: dict[str, Any] | None = None,
        steps: list[dict[str, Any]] | None = None,
        input_data: Any = None,
        labels: dict[str, str] | None = None,
    ) -> Workflow:
        """Create a workflow without starting it (:meth:`start_workflow` starts it)."""
        definition: dict[str, Any] = {"name": name, "config": dict(config or {}), "steps": list(steps or [])}
        if description is not None:
            definition["description"] = description
        if input_data is not None:
            definition["input"] = input_data
        if labels:
            definition["labels"] = labels
        return await self.submit(definition, start=False)

    async def submit(
        self, definition: dict[str, Any] | str | bytes, *, start: bool = True, priority: int | None = None
    ) -> Workflow:
        """Send a full definition (a dict, or YAML/JSON text) to ``POST /v1/workflows``.

        ``priority`` orders this start among starts waiting for the same flow-control limit (higher first)."""
        params = {"start": "true" if start else "false"}
        if priority is not None:
            params["priority"] = str(int(priority))
        if isinstance(definition, str | bytes):
            data = await self._request(
                "POST", "/v1/workflows", params=params, content=definition,
                headers={"content-type": "application/yaml"},
            )
        elif isinstance(definition, dict):
            data = await self._request("POST", "/v1/workflows", params=params, json=definition)
        else:
            raise ValidationError(f"a definition is a dict or YAML text, got {type(definition).__name__}")
        return Workflow.read(data)

    async def list_workflows(
        self, status: WorkflowStatus | str | None = None, *, limit: int | None = None, offset: int = 0
    ) -> list[Workflow]:
        """Workflows, newest first, optionally only those with ``status``; all of them unless ``limit``."""
        params: dict[str, Any] = {}
        if status is not None:
            try:
                params["status"] = WorkflowStatus(str(status).lower()).value
            except ValueError:
                allowed = ", ".join(s.value for s in WorkflowStatus)
                raise ValidationError(f"unknown status {status!r}; use one of {allowed}", field="status") from None
        out: list[Workflow] = []
        while True:
            page = _PAGE if limit is None else min(_PAGE, limit - len(out))
            data = await self._request("GET", "/v1/workflows", params={**params, "limit": page, "offset": offset})
            items = data.get("items", [])
            out.extend(Workflow.read(w) for w in items)
            offset += len(items)
            if not items or offset >= int(data.get("total", 0)) or (limit is not None and len(out) >= limit):
                return out

    async def get_workflow(self, workflow_id: str) -> Workflow:
        """The workflow with its steps, their tasks (status, timings, log tails), outputs and errors."""
        return Workflow.read(await self._request("GET", f"/v1/workflows/{seg(workflow_id)}"))

    async def start_workflow(self, workflow_id: str) -> WorkflowExecution:
        """Start a created workflow (409 ClientError when it already started)."""
        data = await self._request("POST", f"/v1/workflows/{seg(workflow_id)}/start")
        return WorkflowExecution(self, Workflow.read(data))

    async def cancel_workflow(self, workflow_id: str) -> Workflow:
        """Cancel a workflow: running tasks are killed, pending steps never start (409 when finished)."""
        return Workflow.read(await self._request("POST", f"/v1/workflows/{seg(workflow_id)}/cancel"))

    async def approve(self, workflow_id: str, step_id: str, comment: str | None = None) -> Workflow:
        """Approve a waiting approval step (the token needs the ``approve`` scope; 409 when it is not waiting)."""
        return await self._decide(workflow_id, step_id, "approve", comment)

    async def reject(self, workflow_id: str, step_id: str, comment: str | None = None) -> Workflow:
        """Reject a waiting approval step, with an optional comment (recorded with who decided)."""
        return await self._decide(workflow_id, step_id, "reject", comment)

    async def _decide(self, workflow_id: str, step_id: str, verb: str, comment: str | None) -> Workflow:
        body = {} if comment is None else {"comment": comment}
        path = f"/v1/workflows/{seg(workflow_id)}/steps/{seg(step_id)}/{verb}"
        answer = await self._request("POST", path, json=body)
        return Workflow.read(answer["workflow"])

    async def delete_workflow(self, workflow_id: str) -> None:
        """Delete a finished or never-started workflow and its state (409 while it runs)."""
        await self._request("DELETE", f"/v1/workflows/{seg(workflow_id)}")

    async def run_workflow(self, workflow: Any, input_data: Any = None) -> WorkflowExecution:
        """Create and start a workflow; returns at once with a :class:`WorkflowExecution`.

        ``workflow`` is a ``@workflow`` class or instance, a definition dict, a :class:`MapReduceConfig`,
        YAML text, or a path to a YAML/JSON file. ``input_data`` becomes the workflow input.
        """
        definition: dict[str, Any] | str
        if isinstance(workflow, MapReduceConfig):
            definition = workflow.to_definition()
        elif getattr(workflow, WORKFLOW_ATTR, None) is not None:
            definition = definition_of(workflow)
        elif isinstance(workflow, dict):
            definition = dict(workflow)
        elif isinstance(workflow, Path):
            definition = workflow.read_text()
        elif isinstance(workflow, str):
            definition = workflow
        else:
            raise ValidationError(
                f"run_workflow takes a @workflow class or instance, a definition dict or YAML, got {type(workflow).__name__}"
            )
        if input_data is not None:
            if isinstance(definition, str):
                raise ValidationError("input_data needs a dict definition (put 'input:' in the YAML instead)", field="input_data")
            definition["input"] = input_data
        return WorkflowExecution(self, await self.submit(definition, start=True))

    async def run_mapreduce(self, config: MapReduceConfig) -> WorkflowExecution:
        """Run a list -> map -> reduce workflow built from ``config``."""
        return WorkflowExecution(self, await self.submit(config.to_definition(), start=True))

    def execution(self, workflow_id: str) -> WorkflowExecution:
        """Follow an existing workflow by id (its status is refreshed by the first wait)."""
        return WorkflowExecution(self, Workflow(id=workflow_id, name=""))

    async def get_workflow_jobs(self, workflow_id: str) -> list[Job]:
        """The containers that ran the workflow's tasks (``.name``, ``.status``, ``.pooled``, ...)."""
        data = await self._request("GET", f"/v1/workflows/{seg(workflow_id)}/jobs")
        return [Job.read(j) for j in data.get("items", [])]

    # ---- state ---------------------------------------------------------------------------------
    async def get_workflow_state(self, workflow_id: str, key: str | None = None) -> Any:
        """The whole state as a dict, or the value of ``key`` (a missing key is a 404 ClientError)."""
        if key is None:
            data = await self._request("GET", f"/v1/workflows/{seg(workflow_id)}/state")
            return data.get("state", {})
        data = await self._request("GET", self._state_path(workflow_id, key))
        return data.get("value")

    async def update_workflow_state(self, workflow_id: str, key: str, value: Any) -> Any:
        """Set ``key`` to the JSON ``value``; returns the stored value."""
        data = await self._request("PUT", self._state_path(workflow_id, key), json={"value": value})
        return data.get("value")

    async def delete_workflow_state(self, workflow_id: str, key: str) -> None:
        await self._request("DELETE", self._state_path(workflow_id, key))

    async def increment_workflow_state(self, workflow_id: str, key: str, by: float = 1) -> Any:
        """Atomically add ``by`` to a number (a missing key counts as 0); returns the new value."""
        data = await self._request("POST", self._state_path(workflow_id, key) + "/increment", json={"by": by})
        return data.get("value")

    async def append_workflow_state(self, workflow_id: str, key: str, value: Any) -> Any:
        """Atomically append to a list (a missing key starts one); returns the new list."""
        data = await self._request("POST", self._state_path(workflow_id, key) + "/append", json={"value": value})
        return data.get("value")

    async def compare_and_set_workflow_state(
        self, workflow_id: str, key: str, expected: Any, value: Any, *, expect_missing: bool = False
    ) -> bool:
        """Set ``key`` to ``value`` only if it holds ``expected`` (or does not exist, with ``expect_missing``)."""
        body = {"expected": expected, "value": value, "expect_missing": expect_missing}
        data = await self._request("POST", self._state_path(workflow_id, key) + "/cas", json=body)
        return bool(data.get("swapped"))

    @staticmethod
    def _state_path(workflow_id: str, key: str) -> str:
        return f"/v1/workflows/{seg(workflow_id)}/state/{seg(key)}"

    # ---- service -------------------------------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        """``GET /healthz`` (no token needed)."""
        data = await self._request("GET", "/healthz")
        return dict(data or {})
