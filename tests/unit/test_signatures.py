"""Webhook signature presets: good, bad, missing and expired signatures over the raw body."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from flowcore.signatures import SignatureError, SignaturePreset, WebhookAuth, delivery_id, sign, verify

BODY = b'{"id": "evt_1", "action": "opened"}'
NOW = 1_800_000_000.0


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def test_github_signature_is_the_documented_hmac() -> None:
    auth = WebhookAuth(SignaturePreset.GITHUB, "s3cret-value")
    expected = "sha256=" + hmac.new(b"s3cret-value", BODY, hashlib.sha256).hexdigest()
    assert sign(auth, BODY) == {"X-Hub-Signature-256": expected}
    verify(auth, lower(sign(auth, BODY)), BODY, NOW)


@pytest.mark.parametrize("preset", list(SignaturePreset))
def test_each_preset_accepts_its_own_signature(preset: SignaturePreset) -> None:
    auth = WebhookAuth(preset, "s3cret-value")
    verify(auth, lower(sign(auth, BODY, timestamp=int(NOW))), BODY, NOW)


@pytest.mark.parametrize("preset", list(SignaturePreset))
def test_each_preset_refuses_another_secret_a_changed_body_and_no_header(preset: SignaturePreset) -> None:
    auth = WebhookAuth(preset, "s3cret-value")
    wrong = WebhookAuth(preset, "other-secret")
    headers = lower(sign(wrong, BODY, timestamp=int(NOW)))
    with pytest.raises(SignatureError, match="does not match"):
        verify(auth, headers, BODY, NOW)
    with pytest.raises(SignatureError, match="does not match"):
        verify(auth, lower(sign(auth, BODY, timestamp=int(NOW))), BODY + b" ", NOW)
    with pytest.raises(SignatureError, match="missing"):
        verify(auth, {}, BODY, NOW)


def test_stripe_timestamp_tolerance_and_rollover() -> None:
    auth = WebhookAuth(SignaturePreset.STRIPE, "whsec_test", tolerance_s=300)
    old = lower(sign(auth, BODY, timestamp=int(NOW) - 301))
    with pytest.raises(SignatureError, match="tolerance"):
        verify(auth, old, BODY, NOW)
    verify(auth, lower(sign(auth, BODY, timestamp=int(NOW) - 299)), BODY, NOW)
    # Two v1 entries while a secret rolls over: either may match.
    good = sign(auth, BODY, timestamp=int(NOW))["Stripe-Signature"]
    rolled = good.replace("v1=", "v1=deadbeef,v1=")
    verify(auth, {"stripe-signature": rolled}, BODY, NOW)
    with pytest.raises(SignatureError, match="malformed timestamp"):
        verify(auth, {"stripe-signature": "t=abc,v1=00"}, BODY, NOW)
    with pytest.raises(SignatureError, match="at least one v1"):
        verify(auth, {"stripe-signature": f"t={int(NOW)}"}, BODY, NOW)


def test_github_needs_the_prefix_and_generic_does_not() -> None:
    gh = WebhookAuth(SignaturePreset.GITHUB, "s3cret-value")
    bare = sign(gh, BODY)["X-Hub-Signature-256"].removeprefix("sha256=")
    with pytest.raises(SignatureError, match="must start with sha256="):
        verify(gh, {"x-hub-signature-256": bare}, BODY, NOW)
    generic = WebhookAuth(SignaturePreset.GENERIC, "s3cret-value", header="X-Sig")
    verify(generic, {"x-sig": bare}, BODY, NOW)


def test_delivery_ids_per_preset() -> None:
    assert delivery_id(WebhookAuth(SignaturePreset.GITHUB, "x" * 8), {"x-github-delivery": "d-1"}, {}) == "d-1"
    assert delivery_id(WebhookAuth(SignaturePreset.STRIPE, "x" * 8), {}, {"id": "evt_1"}) == "evt_1"
    assert delivery_id(WebhookAuth(SignaturePreset.STRIPE, "x" * 8), {}, "not json") is None
    generic = WebhookAuth(SignaturePreset.GENERIC, "x" * 8, delivery_header="X-Request-Id")
    assert delivery_id(generic, {"x-request-id": "r-9"}, {}) == "r-9"
    assert delivery_id(generic, {}, {}) is None
