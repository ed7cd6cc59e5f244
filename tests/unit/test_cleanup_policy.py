"""Cleanup policies (ADR 014): the model, the pure decisions of pool.cleanup, and the re-packing of
files copied out of a kept container (pool.keptfiles)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from pydantic import ValidationError

from agentainer_flow.errors import ValidationError as SdkValidationError
from agentainer_flow.kept import extract_archive
from flowcore.models import CleanupPolicy, WorkflowDefinition
from flowcore.pool_api import TaskRequest
from pool import agent_restart, cleanup, keptfiles
from pool.errors import CopyTooLarge


def test_defaults_return_successes_and_remove_failures() -> None:
    assert cleanup.after_task(None, ok=True) == "return"
    assert cleanup.after_task(None, ok=False) == "remove"
    assert cleanup.may_keep(None) == (False, False)


@pytest.mark.parametrize(
    ("policy", "ok", "action"),
    [
        ({"on_failure": "keep"}, False, "keep"),
        ({"on_failure": "keep"}, True, "return"),
        ({"on_success": "keep"}, True, "keep"),
        ({"on_success": "keep"}, False, "remove"),
        ({"on_success": "remove"}, True, "remove"),
        ({"on_success": "keep", "on_failure": "keep"}, False, "keep"),
    ],
)
def test_after_task(policy: dict[str, str], ok: bool, action: str) -> None:
    assert cleanup.after_task(CleanupPolicy.model_validate(policy), ok=ok) == action


@pytest.mark.parametrize(
    "bad",
    [
        {"on_failure": "return"},  # a failure is never returned
        {"on_success": "explode"},
        {"keep_for": "-1s"},
        {"keep_for": 0},
        {"keep_for": "8d"},
        {"keep_for": "soon"},
        {"keep_for": True},
        {"on_failure": "keep", "extra": 1},
    ],
)
def test_bad_policies_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CleanupPolicy.model_validate(bad)


def test_keep_for_takes_durations_and_the_step_overrides_the_workflow() -> None:
    assert CleanupPolicy.model_validate({"keep_for": "1h30m"}).keep_for_s == 5400
    definition = WorkflowDefinition.model_validate(
        {
            "name": "w",
            "config": {"cleanup": {"on_failure": "keep", "keep_for": "10m"}},
            "steps": [
                {"id": "a", "image": "i", "command": "true"},
                {"id": "b", "image": "i", "command": "true", "cleanup": {"on_success": "remove"}},
            ],
        }
    )
    assert definition.config.cleanup_if_set is not None
    assert definition.config.cleanup_if_set.keep_for_s == 600
    b = definition.step("b")
    assert b.cleanup is not None and b.cleanup.on_failure == "remove"  # the step's replaces the whole
    plain = WorkflowDefinition.model_validate({"name": "w", "steps": [{"id": "a", "image": "i", "command": "true"}]})
    assert plain.config.cleanup_if_set is None  # nothing sent: the pool's defaults
    request = TaskRequest(task_id="t", workflow_id="w", step_id="s", image="i", command="true",
                          cleanup={"on_failure": "keep"})  # type: ignore[arg-type]
    assert request.cleanup is not None and request.cleanup.on_failure == "keep"


def test_keep_until_is_bounded_by_the_service() -> None:
    assert cleanup.keep_until_s(1000.0, 60.0, 3600.0) == 1060.0
    assert cleanup.keep_until_s(1000.0, 7 * 86400.0, 3600.0) == 4600.0


def test_caps_remove_the_oldest_per_pool_then_overall() -> None:
    kept = [
        cleanup.KeptInfo("a1", "A", 1.0),
        cleanup.KeptInfo("a2", "A", 2.0),
        cleanup.KeptInfo("a3", "A", 3.0),
        cleanup.KeptInfo("b1", "B", 1.5),
        cleanup.KeptInfo("b2", "B", 4.0),
    ]
    assert cleanup.over_caps(kept, keep_max=10, keep_max_per_pool=10) == []
    assert cleanup.over_caps(kept, keep_max=10, keep_max_per_pool=2) == ["a1"]
    assert cleanup.over_caps(kept, keep_max=3, keep_max_per_pool=2) == ["a1", "b1"]
    assert cleanup.over_caps(kept, keep_max=2, keep_max_per_pool=5) == ["a1", "b1", "a2"]
    assert sorted(cleanup.over_caps(kept, keep_max=0, keep_max_per_pool=5)) == ["a1", "a2", "a3", "b1", "b2"]


def test_expired() -> None:
    assert cleanup.expired([("a", 10.0), ("b", 20.0), ("c", 15.0)], 15.0) == ["a", "c"]


@pytest.mark.parametrize(
    ("asked", "path"),
    [(None, "/flow/task"), ("", "/flow/task"), ("t1/work", "/flow/task/t1/work"), ("/tmp/", "/tmp"),
     ("//etc", "/etc"), ("/flow/./task", "/flow/task")],
)
def test_copy_path(asked: str | None, path: str) -> None:
    assert cleanup.copy_path(asked) == path


@pytest.mark.parametrize("bad", ["..", "../etc", "/flow/task/../../etc", "a/../b", "a\x00b", "a\nb", "x" * 1025])
def test_copy_path_refusals(bad: str) -> None:
    with pytest.raises(ValueError):
        cleanup.copy_path(bad)


def _tar(entries: list[tarfile.TarInfo], contents: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:") as archive:
        for info in entries:
            data = contents.get(info.name)
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def test_repack_keeps_only_plain_files_and_dirs_with_safe_names() -> None:
    raw = _tar(
        [
            _entry("task", tarfile.DIRTYPE),
            _entry("task/ok.txt"),
            _entry("task/leak", tarfile.SYMTYPE, "/etc/shadow"),
            _entry("task/hard", tarfile.LNKTYPE, "task/ok.txt"),
            _entry("task/dev", tarfile.CHRTYPE),
            _entry("task/fifo", tarfile.FIFOTYPE),
            _entry("../../escape.txt"),
            _entry("/abs.txt"),
        ],
        {"task/ok.txt": b"fine", "../../escape.txt": b"bad", "/abs.txt": b"abs"},
    )
    packed = keptfiles.repack(raw, truncated=False, max_bytes=1 << 20)
    with tarfile.open(fileobj=io.BytesIO(packed.data)) as archive:
        names = {m.name: m for m in archive.getmembers()}
        assert set(names) == {"task", "task/ok.txt", "abs.txt"}
        assert all(m.isreg() or m.isdir() for m in names.values())
        handle = archive.extractfile("task/ok.txt")
        assert handle is not None and handle.read() == b"fine"
    assert sorted(packed.skipped) == sorted(["task/leak", "task/hard", "task/dev", "task/fifo", "../../escape.txt"])
    assert (packed.files, packed.dirs) == (2, 1)


def test_repack_caps_the_bytes() -> None:
    raw = _tar([_entry("a"), _entry("b")], {"a": b"x" * 600, "b": b"y" * 600})
    with pytest.raises(CopyTooLarge):
        keptfiles.repack(raw, truncated=False, max_bytes=1000)
    with pytest.raises(CopyTooLarge):
        keptfiles.repack(raw[:500], truncated=True, max_bytes=500)
    assert keptfiles.repack(b"not a tar at all", truncated=False, max_bytes=1000).files == 0


def test_the_sdk_extracts_only_inside_its_destination(tmp_path: Path) -> None:
    good = _tar([_entry("task", tarfile.DIRTYPE), _entry("task/ok.txt")], {"task/ok.txt": b"fine"})
    assert extract_archive(good, tmp_path / "out") == ["task/ok.txt"]
    assert (tmp_path / "out" / "task" / "ok.txt").read_bytes() == b"fine"
    for hostile in (
        _tar([_entry("../evil.txt")], {"../evil.txt": b"x"}),
        _tar([_entry("link", tarfile.SYMTYPE, "/etc/passwd")], {}),
        _tar([_entry("/abs.txt")], {"/abs.txt": b"x"}),
    ):
        with pytest.raises(SdkValidationError):
            extract_archive(hostile, tmp_path / "out2")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out2" / "link").exists()


def _decide(**given: object) -> agent_restart.Verdict:
    args: dict[str, object] = {
        "on_error": "restart", "max_restarts": 3, "backoff_s": 1.0, "backoff_max_s": 5.0, "desired": "running",
        "running": False, "exit_code": 1, "restarts": 0, "next_restart_at_s": None, "now_s": 100.0,
    }
    args.update(given)
    return agent_restart.decide(**args)  # type: ignore[arg-type]


def test_agent_restart_decisions() -> None:
    assert _decide(running=True).action == "none"
    assert _decide(exit_code=0).action == "none"  # a normal end
    assert _decide(exit_code=None).action == "none"
    assert _decide(desired="stopped").action == "none"  # stopped through the API
    assert _decide(on_error="keep").action == "keep"
    assert _decide(on_error="remove").action == "remove"
    first = _decide()
    assert first.action == "wait" and first.at_s == 101.0
    assert _decide(restarts=2).at_s == 104.0  # doubling
    assert _decide(restarts=5, max_restarts=10).at_s == 105.0  # capped at backoff_max_s
    assert _decide(next_restart_at_s=101.0, now_s=100.5).action == "none"
    assert _decide(next_restart_at_s=101.0, now_s=101.0).action == "restart"
    gave_up = _decide(restarts=3)
    assert gave_up.action == "give_up" and "after 3 restarts" in gave_up.reason
    assert _decide(max_restarts=0).action == "give_up"


def test_a_kept_containers_reason_never_quotes_what_the_step_said() -> None:
    from flowcore.pool_api import ErrorKind, TaskError, TaskResult
    from pool.kept import _failure

    def failed(kind: ErrorKind, message: str) -> TaskResult:
        return TaskResult(task_id="t", ok=False, error=TaskError(kind=kind, message=message))

    assert _failure(failed(ErrorKind.EXIT_CODE, "exited with code 3")) == "exited with code 3"
    assert _failure(failed(ErrorKind.FUNCTION_ERROR, "ValueError: password=hunter2")) == "function_error"
    assert _failure(failed(ErrorKind.INVALID_OUTPUT, "not JSON: 'hunter2'")) == "invalid_output"
