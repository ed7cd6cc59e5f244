"""State values are bounded (issue 12): a value past the limit is refused whole, with the reason."""

from __future__ import annotations

import pytest

from flowcore.errors import InvalidInput
from flowcore.pool_api import StateOp
from flowcore.state import MAX_VALUE_BYTES, apply_state_ops


def test_a_value_past_the_limit_is_refused_and_nothing_applies() -> None:
    big = "x" * MAX_VALUE_BYTES
    with pytest.raises(InvalidInput, match="the limit is 1048576 bytes per key") as caught:
        apply_state_ops({}, [StateOp(op="set", key="small", value=1), StateOp(op="set", key="big", value=big)])
    assert caught.value.field == "value" and "'big'" in caught.value.message


def test_an_append_that_grows_a_list_past_the_limit_is_refused() -> None:
    current = {"items": ["y" * 1000] * 1040}
    assert apply_state_ops(current, [StateOp(op="append", key="items", value="z")])["items"][-1] == "z"
    with pytest.raises(InvalidInput, match="would be"):
        apply_state_ops(current, [StateOp(op="append", key="items", value="z" * 10_000)])


def test_the_limit_is_a_parameter_and_deletes_are_free() -> None:
    assert apply_state_ops({}, [StateOp(op="set", key="k", value="abc")], max_value_bytes=5) == {"k": "abc"}
    with pytest.raises(InvalidInput):
        apply_state_ops({}, [StateOp(op="set", key="k", value="abcd")], max_value_bytes=5)
    changes = apply_state_ops({"k": "x" * 100}, [StateOp(op="delete", key="k")], max_value_bytes=5)
    assert list(changes) == ["k"]
