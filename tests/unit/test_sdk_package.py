"""The package surface: an explicit, complete ``__all__``, no server imports, the distribution metadata."""

from __future__ import annotations

import inspect
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import agentainer_flow

SDK = Path(__file__).resolve().parents[2] / "sdk"


def test_all_is_explicit_sorted_and_complete() -> None:
    names = agentainer_flow.__all__
    assert names == sorted(names) and len(set(names)) == len(names)
    for name in names:
        assert hasattr(agentainer_flow, name), name
    public = {
        n for n, v in vars(agentainer_flow).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType)
    }
    assert public | {"__version__"} == set(names)
    for expected in ("WorkflowClient", "WorkflowStatus", "TriggerType", "TriggerConfig", "MapReduceConfig",
                     "ClientError", "WorkflowError", "AgentainerError", "workflow", "step", "run_locally"):
        assert expected in names


def test_public_callables_have_docstrings() -> None:
    for name in agentainer_flow.__all__:
        obj = getattr(agentainer_flow, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name


def test_importing_the_sdk_pulls_in_no_server_package() -> None:
    code = (
        "import sys, agentainer_flow, agentainer_flow.cli;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('flowcore', 'gateway', 'workers', 'pool', 'scheduler', 'starlette', 'redis', 'yaml'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_distribution_metadata() -> None:
    project = tomllib.loads((SDK / "pyproject.toml").read_text())["project"]
    assert project["name"] == "agentainer-flow"
    assert sorted(d.split(">")[0].split("=")[0] for d in project["dependencies"]) == ["httpx", "pydantic"]
    assert project["scripts"] == {"flow": "agentainer_flow.cli:main"}
    assert (SDK / "agentainer_flow" / "py.typed").exists()


def test_errors_form_one_tree() -> None:
    from agentainer_flow import (
        AgentainerError,
        ClientError,
        TransportError,
        ValidationError,
        WorkflowError,
        WorkflowTimeoutError,
    )

    for cls in (ClientError, TransportError, ValidationError, WorkflowError, WorkflowTimeoutError):
        assert issubclass(cls, AgentainerError)
    assert issubclass(ValidationError, ClientError) and ValidationError("x").status_code == 422
    assert issubclass(WorkflowTimeoutError, TimeoutError) and issubclass(TransportError, ConnectionError)
    assert str(ClientError(404, "gone", code="not_found", method="GET", path="/v1/x")) == "404 not_found: gone (GET /v1/x)"


def test_enums_print_their_values() -> None:
    from agentainer_flow import StepStatus, TriggerType, WorkflowStatus

    assert f"{WorkflowStatus.COMPLETED}" == "completed" and WorkflowStatus.COMPLETED == "completed"
    assert [s.value for s in WorkflowStatus] == ["pending", "queued", "running", "completed", "failed", "cancelled"]
    assert StepStatus.SKIPPED.finished and not StepStatus.RUNNING.finished
    assert TriggerType.CRON is TriggerType.SCHEDULE and TriggerType("event") is TriggerType.EVENT
