"""Signed pool registrations: only the pool token makes a registration that readers accept."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flowcore.poolsigning import SIG_FIELD, TS_FIELD, canonical, sign, verify

TOKEN = "pool-token-of-this-stack"
NOW = 1_700_000_000_000
REG: dict[str, Any] = {
    "id": "pool-1",
    "url": "http://127.0.0.1:8090",
    "capacity": 32,
    "busy": 1,
    "warm": {"k1": 2},
}


def check(reg: dict[str, Any], *, sid: str = "pool-1", now: float = NOW, token: str = TOKEN) -> str | None:
    return verify(reg, token, service_id=sid, now_ms=now, max_age_ms=5000)


def test_a_signed_registration_verifies_after_a_round_trip_through_json() -> None:
    signed = sign(REG, TOKEN, NOW)
    assert signed[TS_FIELD] == NOW and len(signed[SIG_FIELD]) == 64
    # Redis holds text; key order and spacing may differ from what was signed.
    reread = json.loads(json.dumps(dict(reversed(list(signed.items()))), indent=2))
    assert check(reread) is None
    assert canonical(reread) == canonical(signed)


def test_signing_does_not_change_its_argument() -> None:
    before = json.dumps(REG, sort_keys=True)
    sign(REG, TOKEN, NOW)
    assert json.dumps(REG, sort_keys=True) == before


def forged_url() -> dict[str, Any]:
    return {**sign(REG, TOKEN, NOW), "url": "http://127.0.0.1:6666"}


def forged_warm() -> dict[str, Any]:
    return {**sign(REG, TOKEN, NOW), "warm": {"k1": 99}}


def bumped_ts() -> dict[str, Any]:
    return {**sign(REG, TOKEN, NOW - 60_000), TS_FIELD: NOW}


@pytest.mark.parametrize(
    ("make", "kwargs", "reason"),
    [
        (lambda: dict(REG), {}, "unsigned"),
        (lambda: {**REG, SIG_FIELD: ""}, {}, "unsigned"),
        (lambda: {**REG, SIG_FIELD: 12}, {}, "unsigned"),
        (lambda: sign(REG, "another stack's token", NOW), {}, "bad signature"),
        (lambda: {**REG, SIG_FIELD: "0" * 64}, {}, "bad signature"),
        (forged_url, {}, "bad signature"),
        (forged_warm, {}, "bad signature"),
        (bumped_ts, {}, "bad signature"),
        (lambda: sign(REG, TOKEN, NOW), {"sid": "pool-2"}, "signed for another service id ('pool-1')"),
        (lambda: sign(REG, TOKEN, NOW - 5001), {}, "expired timestamp"),
        (lambda: sign(REG, TOKEN, NOW + 5001), {}, "expired timestamp"),
        (lambda: sign({**REG, TS_FIELD: None}, TOKEN, NOW), {}, None),  # sign() stamps its own ts
        (lambda: sign(REG, TOKEN, NOW - 4999), {}, None),
        (lambda: sign(REG, TOKEN, NOW), {"token": "another stack's token"}, "bad signature"),
    ],
)
def test_verify(make: Any, kwargs: dict[str, Any], reason: str | None) -> None:
    assert check(make(), **kwargs) == reason


def test_a_registration_without_a_usable_timestamp_is_refused() -> None:
    from flowcore.poolsigning import signature

    for ts in (None, "1700000000000", True):
        body = {**REG, TS_FIELD: ts}
        body[SIG_FIELD] = signature(body, TOKEN)
        assert check(body) == "no timestamp"
