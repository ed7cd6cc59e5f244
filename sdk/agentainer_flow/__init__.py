"""Agentainer Flow's Python SDK: the API client, workflows as decorated classes, MapReduce, a local runner.

See docs/sdk.md. Nothing here imports the server packages; the dependencies are httpx and pydantic.
"""

from agentainer_flow._base import LineStream
from agentainer_flow.branching import all_of, any_of, branch, decision, not_, when
from agentainer_flow.client import WorkflowClient
from agentainer_flow.context import MemoryState, StepContext, WorkflowState
from agentainer_flow.decorators import step, workflow
from agentainer_flow.definition import definition_of
from agentainer_flow.errors import (
    AgentainerError,
    ClientError,
    TransportError,
    ValidationError,
    WorkflowError,
    WorkflowTimeoutError,
)
from agentainer_flow.events import EventStream, ServerEvent
from agentainer_flow.execution import WorkflowExecution
from agentainer_flow.kept import KeptContainer
from agentainer_flow.local import LocalRun, LocalStepResult, run_locally
from agentainer_flow.mapreduce import MapReduceConfig, mapreduce
from agentainer_flow.models import (
    Agent,
    Job,
    Step,
    StepStatus,
    StepType,
    Task,
    Trigger,
    TriggerConfig,
    TriggerType,
    Workflow,
    WorkflowStatus,
)
from agentainer_flow.retention import BulkDeleteResult
from agentainer_flow.secret_api import SecretInfo
from agentainer_flow.waits import approval, ref, sleep, subworkflow, wait_for_event

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentainerError",
    "BulkDeleteResult",
    "ClientError",
    "EventStream",
    "Job",
    "KeptContainer",
    "LineStream",
    "LocalRun",
    "LocalStepResult",
    "MapReduceConfig",
    "MemoryState",
    "SecretInfo",
    "ServerEvent",
    "Step",
    "StepContext",
    "StepStatus",
    "StepType",
    "Task",
    "TransportError",
    "Trigger",
    "TriggerConfig",
    "TriggerType",
    "ValidationError",
    "Workflow",
    "WorkflowClient",
    "WorkflowError",
    "WorkflowExecution",
    "WorkflowState",
    "WorkflowStatus",
    "WorkflowTimeoutError",
    "__version__",
    "all_of",
    "any_of",
    "approval",
    "branch",
    "decision",
    "definition_of",
    "mapreduce",
    "not_",
    "ref",
    "run_locally",
    "sleep",
    "step",
    "subworkflow",
    "wait_for_event",
    "when",
    "workflow",
]
