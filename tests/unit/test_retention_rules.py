"""The pure decisions of flowcore.retention: which workflow a filter selects, what the sweep selects."""

from __future__ import annotations

import pytest

from flowcore.errors import InvalidInput
from flowcore.models import WorkflowDefinition, WorkflowStatus
from flowcore.records import Snapshot
from flowcore.retention import DELETABLE, FINISHED, DeleteFilter, matches, retention_filter


def snap(status: WorkflowStatus, *, name: str = "n", labels: dict[str, str] | None = None,
         created: float = 100.0, finished: float | None = 200.0) -> Snapshot:
    definition = WorkflowDefinition.model_validate(
        {"name": name, "labels": labels or {}, "steps": [{"id": "a", "image": "i", "command": "true"}]}
    )
    return Snapshot(wf_id="wf-1", definition=definition, status=status, input=None, created_at=created,
                    finished_at=finished if status in FINISHED else None)


@pytest.mark.parametrize(
    ("flt", "record", "expected"),
    [
        (DeleteFilter(), snap(WorkflowStatus.COMPLETED), True),
        (DeleteFilter(), snap(WorkflowStatus.PENDING), False),  # finished ones by default
        (DeleteFilter(statuses=frozenset({WorkflowStatus.PENDING})), snap(WorkflowStatus.PENDING), True),
        (DeleteFilter(name="n"), snap(WorkflowStatus.FAILED), True),
        (DeleteFilter(name="m"), snap(WorkflowStatus.FAILED), False),
        (DeleteFilter(labels={"t": "a"}), snap(WorkflowStatus.FAILED, labels={"t": "a", "u": "b"}), True),
        (DeleteFilter(labels={"t": "a", "u": "c"}), snap(WorkflowStatus.FAILED, labels={"t": "a", "u": "b"}), False),
        (DeleteFilter(labels={"t": ""}), snap(WorkflowStatus.FAILED), False),  # a missing label is not ""
        (DeleteFilter(created_before=100.0), snap(WorkflowStatus.CANCELLED, created=100.0), False),  # strictly
        (DeleteFilter(created_before=100.5), snap(WorkflowStatus.CANCELLED, created=100.0), True),
        (DeleteFilter(finished_before=201.0), snap(WorkflowStatus.COMPLETED, finished=200.0), True),
        (DeleteFilter(finished_before=200.0), snap(WorkflowStatus.COMPLETED, finished=200.0), False),
        (DeleteFilter(statuses=frozenset({WorkflowStatus.PENDING}), finished_before=1e12),
         snap(WorkflowStatus.PENDING), False),  # never finished: not "finished before"
    ],
)
def test_matches(flt: DeleteFilter, record: Snapshot, expected: bool) -> None:
    assert matches(record, flt) is expected


@pytest.mark.parametrize("status", sorted(set(WorkflowStatus) - DELETABLE))
def test_live_workflows_cannot_be_selected(status: WorkflowStatus) -> None:
    with pytest.raises(InvalidInput, match="only finished or never-started") as err:
        DeleteFilter(statuses=frozenset({status}))
    assert err.value.field == "status"


def test_an_empty_status_set_is_refused() -> None:
    with pytest.raises(InvalidInput):
        DeleteFilter(statuses=frozenset())


def test_only_a_narrowed_filter_may_be_asked_for() -> None:
    assert not DeleteFilter().narrowed
    assert DeleteFilter(name="x").narrowed and DeleteFilter(created_before=1.0).narrowed
    assert DeleteFilter(statuses=frozenset({WorkflowStatus.FAILED})).narrowed


def test_the_retention_filter_cuts_at_now_minus_retention() -> None:
    flt = retention_filter(now=1000.0, retention_s=100.0)
    assert flt.statuses == FINISHED and flt.finished_before == 900.0 and flt.created_before == 900.0
    assert matches(snap(WorkflowStatus.FAILED, created=800.0, finished=899.0), flt)
    assert not matches(snap(WorkflowStatus.FAILED, created=800.0, finished=901.0), flt)
    assert not matches(snap(WorkflowStatus.RUNNING, created=800.0), flt)


def test_bulk_delete_needs_the_write_scope_and_names_no_workflow() -> None:
    from gateway.scopes import required

    need = required("DELETE", "/v1/workflows")
    assert need.scope == "write" and need.workflow_id is None  # so a token limited to workflows is refused
    assert required("GET", "/v1/workflows").scope == "read"
