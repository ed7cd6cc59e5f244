"""What steps may ask for (flowcore.policy, pool.keys.key_for): pure tables."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from flowcore.errors import InvalidInput
from flowcore.models import WorkflowDefinition
from flowcore.policy import check_definition, normalise_user, resolve
from flowcore.pool_api import TaskRequest
from flowcore.settings import GatewaySettings, PoolSettings, TaskPolicySection, WorkerSettings
from pool.keys import PoolKey, key_for, key_from, resolve_policy

IMAGE = "agentainer-flow/python:3.11"


def task(**fields: Any) -> TaskRequest:
    return TaskRequest.model_validate(
        {"task_id": "t", "workflow_id": "wf-1", "step_id": "s", "image": IMAGE, "command": "true", **fields}
    )


def definition(**step: Any) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate(
        {"name": "p", "steps": [{"id": "ok", "image": IMAGE, "command": "true"}, {"id": "s", "image": IMAGE, "command": "true", **step}]}
    )


OPEN = TaskPolicySection(allowed_networks=["none", "etl"], allow_root_tasks=True, allow_cross_workflow_reuse=True)
DEFAULT = TaskPolicySection()
DEV = TaskPolicySection(allowed_networks=["none", "host"], allow_host_network=True)


def test_host_network_only_by_the_operators_explicit_opt_in() -> None:
    assert resolve(task(network="host"), DEV).network == "host"
    with pytest.raises(InvalidInput, match="not allowed here"):
        resolve(task(network="host"), TaskPolicySection(allow_host_network=True))  # opted in, not listed
    with pytest.raises(InvalidInput, match="never allowed"):
        resolve(task(network="host"), DEFAULT)
    with pytest.raises(InvalidInput, match="never allowed"):
        resolve(task(network="container:db"), DEV)


@pytest.mark.parametrize(
    ("fields", "policy", "field", "words"),
    [
        ({"network": "host"}, DEFAULT, "network", "never allowed"),
        ({"network": "host"}, OPEN, "network", "never allowed"),
        ({"network": "container:abc"}, OPEN, "network", "another container"),
        ({"network": "container:"}, DEFAULT, "network", "never allowed"),
        ({"network": "bridge"}, DEFAULT, "network", "not allowed here"),
        ({"network": "etl"}, DEFAULT, "network", "allows: none"),
        ({"user": "0"}, DEFAULT, "user", "root"),
        ({"user": "0:0"}, DEFAULT, "user", "root"),
        ({"user": "1000:0"}, DEFAULT, "user", "root"),  # the root group is root enough
        ({"user": "root"}, OPEN, "user", "uid or uid:gid"),
        ({"user": "1000:1000:1"}, OPEN, "user", "uid or uid:gid"),
        ({"user": "99999999999"}, OPEN, "user", "uid or uid:gid"),
        ({"user": "4294967295"}, OPEN, "user", "uid or uid:gid"),
        ({"resources": {"cpu": 4.5}}, DEFAULT, "resources.cpu", "maximum 4"),
        ({"resources": {"memory_mb": 4097}}, DEFAULT, "resources.memory_mb", "maximum 4096"),
        ({"resources": {"pids": 5000}}, DEFAULT, "resources.pids", "maximum 4096"),
        (
            {"pool": {"scope": "image"}},
            TaskPolicySection(allow_cross_workflow_reuse=False),
            "pool.scope",
            "not allowed",
        ),
    ],
)
def test_refused(fields: dict[str, Any], policy: TaskPolicySection, field: str, words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        resolve(task(**fields), policy)
    assert caught.value.field == field
    assert words in caught.value.message
    assert caught.value.status_code == 422
    try:
        steps = definition(**fields)
    except ValidationError as exc:  # a malformed user: the step model refuses it first, same field
        assert [e["loc"][-1] for e in exc.errors()] == [field]
        return
    with pytest.raises(InvalidInput) as in_definition:
        check_definition(steps, policy)
    assert in_definition.value.field == f"steps[1].{field}"


@pytest.mark.parametrize(
    ("fields", "policy", "expected"),
    [
        ({}, DEFAULT, ("none", "65534:65534", True, 1.0, 512, 256, "workflow")),
        ({"network": "etl"}, OPEN, ("etl", "65534:65534", True, 1.0, 512, 256, "workflow")),
        ({"user": "1000"}, DEFAULT, ("none", "1000:1000", True, 1.0, 512, 256, "workflow")),  # gid spelled out
        ({"user": "1000:2000"}, DEFAULT, ("none", "1000:2000", True, 1.0, 512, 256, "workflow")),
        ({"user": "0"}, OPEN, ("none", "0:0", True, 1.0, 512, 256, "workflow")),
        ({"read_only_root": False}, DEFAULT, ("none", "65534:65534", False, 1.0, 512, 256, "workflow")),
        (
            {"resources": {"cpu": 0.5, "memory_mb": 64, "pids": 32}},  # lower than the defaults
            DEFAULT,
            ("none", "65534:65534", True, 0.5, 64, 32, "workflow"),
        ),
        (
            {"resources": {"cpu": 4, "memory_mb": 4096, "pids": 4096}},  # exactly the maxima
            DEFAULT,
            ("none", "65534:65534", True, 4.0, 4096, 4096, "workflow"),
        ),
        ({"pool": {"min_size": 1}}, DEFAULT, ("none", "65534:65534", True, 1.0, 512, 256, "workflow")),
        ({"pool": {"scope": "image"}}, DEFAULT, ("none", "65534:65534", True, 1.0, 512, 256, "image")),
        (
            {},
            TaskPolicySection(
                default_task_user="1234", default_read_only_root=False, default_cpu=2, default_memory_mb=100,
                default_pids=64,
            ),
            ("none", "1234:1234", False, 2.0, 100, 64, "workflow"),
        ),
    ],
)
def test_resolved(fields: dict[str, Any], policy: TaskPolicySection, expected: tuple[Any, ...]) -> None:
    got = resolve(task(**fields), policy)
    assert (got.network, got.user, got.read_only_root, got.cpu, got.memory_mb, got.pids, got.scope) == expected
    check_definition(definition(**fields), policy)  # allowed at submission too


def test_every_problem_is_listed_the_first_named() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_definition(definition(network="host", user="0", resources={"cpu": 9}), DEFAULT)
    assert caught.value.field == "steps[1].network"
    fields = [d["field"] for d in caught.value.details]
    assert fields == ["steps[1].network", "steps[1].user", "steps[1].resources.cpu"]
    assert "and 2 more problems" in caught.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1000", "1000:1000"), ("1000:5", "1000:5"), ("0", "0:0"), ("", None), ("a:b", None), ("-1", None)],
)
def test_normalise_user(text: str, expected: str | None) -> None:
    assert normalise_user(text) == expected


def test_key_for_is_fully_resolved_and_within_the_settings() -> None:
    settings = PoolSettings(policy=TaskPolicySection(default_memory_mb=256, allowed_networks=["none", "etl"]))
    key = key_for(task(network="etl"), "agent", settings)
    assert key == PoolKey(
        image=IMAGE, kind="agent", network="etl", cpu=1.0, memory_mb=256, pids=256, scope="workflow",
        workflow_id="wf-1", user="65534:65534", read_only_root=True,
    )
    assert key_from(task(network="etl"), "agent", resolve_policy(task(network="etl"), settings)) == key
    assert key_for(task(), "exec", settings.policy).kind == "exec"
    with pytest.raises(InvalidInput) as caught:
        key_for(task(network="bridge"), "agent", settings)
    assert caught.value.field == "network"
    image_scoped = key_for(task(pool={"scope": "image"}), "agent", settings)
    assert image_scoped.scope == "image" and image_scoped.workflow_id is None


def test_key_for_without_settings_refuses_only_what_nothing_allows() -> None:
    """A worker computes routing hints without the pool's settings: same defaults, no operator checks."""
    assert key_for(task(), "agent") == key_for(task(), "agent", PoolSettings())
    assert key_for(task(network="etl", user="0"), "agent").network == "etl"
    for network in ("host", "container:x"):
        with pytest.raises(InvalidInput):
            key_for(task(network=network), "agent")
    # A worker with the operator's policy gets the pool's key, without enforcing it.
    policy = TaskPolicySection(default_memory_mb=100)
    hint = key_for(task(user="0"), "agent", WorkerSettings(policy=policy).policy, enforce=False)
    assert hint.memory_mb == 100 and hint.user == "0:0"
    assert key_for(task(), "agent", policy, enforce=False) == key_for(task(), "agent", PoolSettings(policy=policy))


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"allowed_networks": ["none", "host"]}, "only with allow_host_network"),
        ({"allowed_networks": ["container:db"]}, "can never be allowed"),
        ({"allowed_networks": ["bad name"]}, "invalid network name"),
        ({"default_task_user": "0"}, "allow_root_tasks"),
        ({"default_task_user": "nobody"}, "should match pattern"),
        ({"default_cpu": 8.0}, "default_cpu exceeds max_cpu"),
        ({"default_memory_mb": 100, "max_memory_mb": 50}, "default_memory_mb exceeds max_memory_mb"),
        ({"default_pids": 300, "max_pids": 100}, "default_pids exceeds max_pids"),
    ],
)
def test_unsafe_settings_are_refused(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        TaskPolicySection(**fields)


def test_one_environment_configures_every_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_POLICY__ALLOWED_NETWORKS", '["none", "etl"]')
    monkeypatch.setenv("FLOW_POLICY__MAX_CPU", "2")
    for cls in (GatewaySettings, WorkerSettings, PoolSettings):
        policy = cls().policy
        assert policy.allowed_networks == ["none", "etl"] and policy.max_cpu == 2.0
    assert TaskPolicySection(default_task_user="0", allow_root_tasks=True).default_task_user == "0"
