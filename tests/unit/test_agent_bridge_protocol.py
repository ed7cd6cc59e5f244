"""The agent state bridge's frames and bounds (pool/agent_bridge_protocol.py): pure, no I/O."""

from __future__ import annotations

import json

import pytest

from pool.agent_bridge_protocol import (
    MAX_WAIT_S,
    BadRequest,
    TokenBucket,
    changed,
    parse_hello,
    parse_request,
    request_id,
)


def frame(**fields: object) -> bytes:
    return json.dumps(fields).encode() + b"\n"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (frame(t="get", rid=1, key="k"), ("get", 1, "k", None)),
        (frame(t="set", rid=2, key="k", value={"a": [1]}), ("set", 2, "k", {"a": [1]})),
        (frame(t="increment", key="n"), ("increment", 0, "n", None)),
        (frame(t="wait", rid=3, key="k", found=True, value=1, timeout_s=2), ("wait", 3, "k", 1)),
    ],
)
def test_valid_requests(line: bytes, expected: tuple[object, ...]) -> None:
    request = parse_request(line)
    assert (request.t, request.rid, request.key, request.value) == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"\x00\xff\n", "JSON object"),
        (b"[1]\n", "JSON object"),
        (b'{"t": "set", "key": "k", "value": ' + b"[" * 200_000 + b"]" * 200_000 + b"}\n", "nests too deeply"),
        (frame(t="flushall", key="k"), "unknown request"),
        (frame(t="get", key="k", workflow_id="other"), "unknown field 'workflow_id'"),
        (frame(t="get", key=""), "key"),
        (frame(t="get", key="k" * 513), "key"),
        (frame(t="get", key=5), "key"),
        (frame(t="get", rid=True, key="k"), "rid"),
        (frame(t="get", rid=-1, key="k"), "rid"),
        (frame(t="wait", key="k", timeout_s=MAX_WAIT_S + 1), "timeout_s"),
        (frame(t="wait", key="k", timeout_s="5"), "timeout_s"),
        (frame(t="cas", key="k", missing="yes"), "missing"),
    ],
)
def test_bad_requests_name_the_problem(line: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_request(line)


def test_hello() -> None:
    assert parse_hello(frame(t="hello", token="abc")) == "abc"
    for bad in (frame(t="get", token="abc"), frame(t="hello"), frame(t="hello", token=""), frame(t="hello", token="x" * 300), b"junk\n"):
        with pytest.raises(BadRequest):
            parse_hello(bad)


def test_request_id_of_any_frame() -> None:
    assert request_id(frame(t="x", rid=7)) == 7
    assert request_id(frame(t="x", rid=True)) is None
    assert request_id(b"[1]") is None and request_id(b"\xff") is None
    assert request_id(b"[" * 200_000 + b"]" * 200_000) is None


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate_per_s=2, burst=3, now_s=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(100.4) is False  # 0.8 of a token
    assert bucket.take(100.5) is True  # one whole token after 0.5 s at 2/s
    assert [bucket.take(200.0) for _ in range(4)] == [True, True, True, False]  # never more than the burst
    assert bucket.take(199.0) is False  # a clock going back gives nothing
    assert bucket.refused == 4


@pytest.mark.parametrize(
    ("before", "now", "expected"),
    [((False, None), (False, None), False), ((False, None), (True, None), True), ((True, 1), (True, 1), False),
     ((True, 1), (True, 2), True), ((True, {"a": 1}), (True, {"a": 1}), False), ((True, 1), (False, None), True)],
)
def test_changed(before: tuple[bool, object], now: tuple[bool, object], expected: bool) -> None:
    assert changed(before[0], before[1], now[0], now[1]) is expected
