"""``make chaos`` decides what a run found from what it observed (chaos/verdict.py)."""

from __future__ import annotations

from chaos.verdict import Observed, fault_summary, judge


def test_every_kind_of_damage_is_counted() -> None:
    verdict = judge(
        [
            Observed("ok", expected=4, status="completed", done=4),
            Observed("twice", expected=4, status="completed", done=5),
            Observed("short", expected=4, status="completed", done=3),
            Observed("never", expected=2, status="completed", done=None),
            Observed("running", expected=4, status="running", done=1),
            Observed("queued", expected=4, status="pending", done=None),
            Observed("gone", expected=4, status=None, done=None),
            Observed("broke", expected=4, status="failed", done=2),
        ],
        leaked_containers=2,
    )
    assert verdict.acknowledged == 8 and verdict.completed == 4
    assert verdict.duplicated == ["twice"] and verdict.missing_commits == ["short", "never"]
    assert verdict.stuck == ["running", "queued"] and verdict.lost == ["gone"] and verdict.failed == ["broke"]
    assert not verdict.clean
    assert verdict.counts()["leaked_containers"] == 2


def test_a_clean_run_is_clean() -> None:
    verdict = judge([Observed("a", 3, "completed", 3), Observed("b", 1, "completed", 1)], leaked_containers=0)
    assert verdict.clean and verdict.counts()["completed"] == 2


def test_faults_are_summed_by_kind() -> None:
    events = [{"fault": "kill pool"}, {"fault": "kill worker"}, {"fault": "kill pool"}]
    assert fault_summary(events) == {"kill pool": 2, "kill worker": 1}
