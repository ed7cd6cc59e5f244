"""The step contract's reading of a task's raw outcome (pool/contract.py): truncation is never silent."""

from __future__ import annotations

from typing import Any

from flowcore.pool_api import ErrorKind, TaskRequest
from pool.contract import RawOutcome, build_outcome


def request(**fields: Any) -> TaskRequest:
    return TaskRequest(task_id="t", workflow_id="w", step_id="s", image="img", command=["true"], **fields)


def test_a_cut_json_output_fails_with_the_reason() -> None:
    raw = RawOutcome(exit_code=0, stdout='{"a": 1}', stdout_truncated=True)
    outcome = build_outcome(request(), raw, None)
    assert not outcome.ok and outcome.error is not None
    assert outcome.error.kind == ErrorKind.INVALID_OUTPUT
    assert "went past 16 MiB" in outcome.error.message and "output_overflow" in outcome.error.message


def test_a_cut_text_output_fails_unless_the_step_keeps_the_start() -> None:
    raw = RawOutcome(exit_code=0, stdout="aaaa", stdout_truncated=True)
    failed = build_outcome(request(output="text"), raw, None)
    assert not failed.ok and failed.error is not None and failed.error.kind == ErrorKind.INVALID_OUTPUT
    kept = build_outcome(request(output="text", output_overflow="truncate"), raw, None)
    assert kept.ok and kept.output == "aaaa" and kept.output_truncated
    # truncate is for text: a JSON step cannot parse half a document
    json_step = build_outcome(request(output_overflow="truncate"), RawOutcome(exit_code=0, stdout="1", stdout_truncated=True), None)
    assert not json_step.ok


def test_an_output_file_or_a_function_result_is_not_stdout() -> None:
    from_file = RawOutcome(exit_code=0, stdout="x" * 10, stdout_truncated=True, output_file='{"r": 1}')
    outcome = build_outcome(request(), from_file, None)
    assert outcome.ok and outcome.output == {"r": 1} and not outcome.output_truncated
    whole = build_outcome(request(output="text"), RawOutcome(exit_code=0, stdout="short"), None)
    assert whole.ok and not whole.output_truncated
