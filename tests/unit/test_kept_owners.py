"""The pure decisions of the overall cap's index (ADR 014, 2026-11-29): which pool services are gone for good,
and which pool service a gateway request for a kept container goes to."""

from __future__ import annotations

import pytest

from pool import cleanup


@pytest.mark.parametrize(
    ("owners", "seen", "gone"),
    [
        ([], {}, []),
        (["a", "b"], {"a": 95.0, "b": 99.0}, []),  # both seen within the last 10 s
        (["a", "b"], {"a": 80.0, "b": 99.0}, ["a"]),  # a not seen for 20 s
        (["a", "c"], {"a": 99.0}, ["c"]),  # owns kept containers, never seen: gone
        ([], {"old": 1.0, "me": 1.0}, ["old"]),  # seen once, owns nothing now: its seen entry goes too
        (["me"], {}, []),  # never oneself
        ([""], {}, []),  # an unreadable owner is nobody's to reap
        (["b", "a"], {"a": 0.0, "b": 0.0}, ["a", "b"]),  # stable order
        (["a"], {"a": 90.0}, []),  # exactly at the limit: not yet
    ],
)
def test_gone_owners(owners: list[str], seen: dict[str, float], gone: list[str]) -> None:
    assert cleanup.gone_owners(owners, seen, now_s=100.0, gone_after_s=10.0, self_id="me") == gone
