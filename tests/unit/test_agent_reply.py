"""The pool reads an agent's reply as untrusted data (pool.mode_agent): typed field by field, and held
to the task's output limit even when the reply says nothing was cut."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flowcore import limits
from flowcore.limits import LimitsSection
from flowcore.pool_api import TaskRequest
from pool.mode_agent import reply_outcome
from pool.taskrun import Running

REQUEST = TaskRequest(task_id="t", workflow_id="w", step_id="s", image="i", command="true")


@pytest.fixture
def one_mib() -> Iterator[None]:
    before = limits.current()
    limits.configure(LimitsSection(max_output_mib=1))
    yield
    limits.configure(before)


def test_a_reply_past_the_output_limit_is_cut_and_marked(one_mib: None) -> None:
    lying = {"exit_code": 0, "stdout": "x" * (3 << 20), "stdout_truncated": False}
    raw = reply_outcome(REQUEST, lying, Running("t"))
    assert len(raw.stdout) == 1 << 20 and raw.stdout_truncated


def test_fields_of_the_wrong_type_are_dropped() -> None:
    raw = reply_outcome(REQUEST, {"exit_code": "0", "stdout": 5, "oom": "yes", "cpu_time_s": -1}, Running("t"))
    assert raw.exit_code is None and raw.stdout == "" and raw.oom is False and raw.cpu_time_s is None
    fine = reply_outcome(REQUEST, {"exit_code": 0, "stdout": "ok\n", "cpu_time_s": 0.5}, Running("t"))
    assert fine.exit_code == 0 and fine.stdout == "ok\n" and not fine.stdout_truncated and fine.cpu_time_s == 0.5
