"""A stored secret's scope (flowcore.secretstore): which runs may use a secret limited to some workflows,
and what a PUT may say about it."""

from __future__ import annotations

from typing import Any

import pytest

from flowcore.errors import InvalidInput
from flowcore.records import Origin
from flowcore.secretstore import check_scope, run_ids, usable_by


def test_no_scope_means_every_run() -> None:
    assert usable_by(None, (None, None, None))
    assert usable_by(None, ("wf-1", None, None))


@pytest.mark.parametrize(
    ("ids", "usable"),
    [
        (("tpl", None, None), True),  # the listed workflow itself
        (("run", "tpl", None), True),  # fired from it, or a child run of it
        (("run2", "run", "tpl"), True),  # a retry whose definition goes back to it
        (("run", "other", "else"), False),
        ((None, None, None), False),  # a new submission
    ],
)
def test_a_limited_secret_is_usable_by_its_workflows_their_fires_and_retries(
    ids: tuple[str | None, ...], usable: bool
) -> None:
    assert usable_by(["tpl", "x"], ids) is usable


def test_run_ids_of_an_origin() -> None:
    origin = Origin(kind="retry", template_id="run-1", root_id="tpl")
    assert run_ids("run-2", origin) == ("run-2", "run-1", "tpl")
    assert run_ids("wf", Origin()) == ("wf", None, None)


def test_a_scope_is_deduplicated_and_sorted() -> None:
    assert check_scope(["b", "a", "b"]) == ["a", "b"]
    assert check_scope(None) is None


@pytest.mark.parametrize(
    ("scope", "field"),
    [([], "workflows"), ("wf", "workflows"), ([None], "workflows"), (["a b"], "workflows[0]"),
     ([f"w{i}" for i in range(101)], "workflows"), ({"wf": 1}, "workflows")],
)
def test_a_bad_scope_names_its_field(scope: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_scope(scope)
    assert caught.value.field == field
