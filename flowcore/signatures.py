"""Webhook signatures: HMAC-SHA256 over the raw request body, with presets for common providers.

``github``
    ``X-Hub-Signature-256: sha256=<hex of HMAC(secret, body)>``; the delivery id is
    ``X-GitHub-Delivery`` and the event name ``X-GitHub-Event``.
``stripe``
    ``Stripe-Signature: t=<unix time>,v1=<hex of HMAC(secret, "<t>." + body)>`` (several ``v1``
    entries are allowed while a secret rolls over); a timestamp further than the tolerance
    (default 300 s) from now is refused, so a captured request cannot be replayed later. The delivery
    id is the event's ``id`` in the body.
``generic``
    ``X-Flow-Signature: sha256=<hex>`` (the ``sha256=`` prefix is optional) over the body; the header
    name is configurable, and so is the delivery id header (``X-Flow-Delivery``). With a
    ``timestamp_header`` configured (e.g. ``X-Flow-Timestamp: <unix time>``), the signature is over
    ``"<t>." + body``, as Stripe's, and a timestamp outside the tolerance is refused.

Replays
    The delivery id of GitHub and of the generic preset is an unsigned header: re-sending a captured
    body under a new id must start nothing. :func:`replay_key` is therefore a digest of the signed
    body for those presets (a body already accepted within the replay window is a duplicate, whatever
    its delivery id), and Stripe's event id, which its signature covers.

Digests are compared with :func:`hmac.compare_digest`, every candidate, so the time taken does not
reveal how much of a signature was right.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SignaturePreset(str, enum.Enum):
    GITHUB = "github"
    STRIPE = "stripe"
    GENERIC = "generic"


DEFAULT_GENERIC_HEADER = "x-flow-signature"
DEFAULT_DELIVERY_HEADER = "x-flow-delivery"
DEFAULT_TOLERANCE_S = 300.0
MAX_TIMESTAMP_DIGITS = 12


class SignatureError(Exception):
    """The request's signature is missing, malformed, wrong or too old; the message says which."""


@dataclass(frozen=True)
class WebhookAuth:
    preset: SignaturePreset
    secret: str
    header: str = DEFAULT_GENERIC_HEADER
    delivery_header: str = DEFAULT_DELIVERY_HEADER
    tolerance_s: float = DEFAULT_TOLERANCE_S
    timestamp_header: str | None = None  # generic preset: sign "<t>." + body and check t's age


def _digest(secret: str, payload: bytes) -> str:
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def _same(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.strip().lower().encode(), expected.encode())


def _stripe_parts(value: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for item in value.split(","):
        key, _, val = item.strip().partition("=")
        if key == "t":
            if not val.isdigit():
                raise SignatureError("Stripe-Signature has a malformed timestamp")
            timestamp = int(val)
        elif key == "v1" and val:
            signatures.append(val)
    if timestamp is None or not signatures:
        raise SignatureError("Stripe-Signature must carry t=<timestamp> and at least one v1=<signature>")
    return timestamp, signatures


def verify(auth: WebhookAuth, headers: Mapping[str, str], body: bytes, now: float) -> None:
    """Raise :class:`SignatureError` unless ``body`` is signed with ``auth``'s secret.

    ``headers`` must have lower-case names (as ASGI delivers them).
    """
    if auth.preset == SignaturePreset.STRIPE:
        value = headers.get("stripe-signature")
        if not value:
            raise SignatureError("missing Stripe-Signature header")
        timestamp, signatures = _stripe_parts(value)
        expected = _digest(auth.secret, str(timestamp).encode() + b"." + body)
        ok = False
        for candidate in signatures:  # no early exit
            ok |= _same(candidate, expected)
        if not ok:
            raise SignatureError("Stripe-Signature does not match the body")
        if abs(now - timestamp) > auth.tolerance_s:
            raise SignatureError(f"Stripe-Signature timestamp is outside the {auth.tolerance_s:g}s tolerance")
        return
    name = "x-hub-signature-256" if auth.preset == SignaturePreset.GITHUB else auth.header.lower()
    signed = body
    signed_at: int | None = None
    if auth.preset == SignaturePreset.GENERIC and auth.timestamp_header:
        raw_ts = headers.get(auth.timestamp_header.lower(), "").strip()
        if not raw_ts.isdigit() or len(raw_ts) > MAX_TIMESTAMP_DIGITS:
            raise SignatureError(f"missing or malformed {auth.timestamp_header.lower()} header (unix seconds)")
        signed_at = int(raw_ts)
        signed = raw_ts.encode() + b"." + body
    value = headers.get(name)
    if not value:
        raise SignatureError(f"missing {name} header")
    presented = value.strip()
    if presented.lower().startswith("sha256="):
        presented = presented[len("sha256=") :]
    elif auth.preset == SignaturePreset.GITHUB:
        raise SignatureError("X-Hub-Signature-256 must start with sha256=")
    if not _same(presented, _digest(auth.secret, signed)):
        raise SignatureError(f"{name} does not match the body")
    if signed_at is not None and abs(now - signed_at) > auth.tolerance_s:
        raise SignatureError(f"{auth.timestamp_header} is outside the {auth.tolerance_s:g}s tolerance")


def delivery_id(auth: WebhookAuth, headers: Mapping[str, str], payload: Any) -> str | None:
    """The provider's id of this delivery, used to refuse replays; ``None`` when it sends none."""
    if auth.preset == SignaturePreset.GITHUB:
        value = headers.get("x-github-delivery")
    elif auth.preset == SignaturePreset.STRIPE:
        value = payload.get("id") if isinstance(payload, dict) and isinstance(payload.get("id"), str) else None
    else:
        value = headers.get(auth.delivery_header.lower())
    return value[:200] if value else None


def replay_key(auth: WebhookAuth, body: bytes, delivery: str | None) -> str:
    """What makes a delivery a duplicate within the replay window (see the module docstring)."""
    if auth.preset == SignaturePreset.STRIPE and delivery:
        return f"delivery:{delivery}"  # inside the signed body; Stripe's retries re-sign with a new t
    return f"body:{hashlib.sha256(body).hexdigest()}"


def sign(auth: WebhookAuth, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers a provider would send for ``body`` (for tests, load tests and users' own senders)."""
    if auth.preset == SignaturePreset.STRIPE:
        ts = int(timestamp if timestamp is not None else 0)
        return {"Stripe-Signature": f"t={ts},v1={_digest(auth.secret, str(ts).encode() + b'.' + body)}"}
    if auth.preset == SignaturePreset.GITHUB:
        return {"X-Hub-Signature-256": f"sha256={_digest(auth.secret, body)}"}
    if auth.timestamp_header:
        t = str(int(timestamp if timestamp is not None else 0))
        return {auth.header: f"sha256={_digest(auth.secret, t.encode() + b'.' + body)}", auth.timestamp_header: t}
    return {auth.header: f"sha256={_digest(auth.secret, body)}"}
