"""Signed pool registrations: only a holder of the pool token can advertise a pool service.

A pool service's registration (:mod:`pool.registration`) tells workers where to send tasks, env
secrets included, and the gateway where to ask for pool metrics with the pool token. Whoever can
write to Redis could otherwise register a service of their own and receive all of that. So every
registration carries::

    "ts":  its time of writing (ms since the epoch)
    "sig": hex HMAC-SHA256, keyed by the pool token, of DOMAIN + the canonical JSON of every other field

and readers use a registration only when :func:`verify` accepts it: the signature matches, the
``id`` is the one it is filed under (a copy under another id is refused), and ``ts`` is within
``max_age_ms`` of now (a registration copied from a service that has since gone is refused once it
would be stale anyway). Pure functions; the clock is a parameter.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

SIG_FIELD = "sig"
TS_FIELD = "ts"
# Domain separation: the same token as the bearer token, a MAC that means "registration, version 1".
DOMAIN = b"agentainer-flow pool registration v1\n"


def canonical(registration: Mapping[str, Any]) -> bytes:
    """The signed bytes: every field but the signature, keys sorted, no whitespace, ASCII only."""
    body = {k: v for k, v in registration.items() if k != SIG_FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def signature(registration: Mapping[str, Any], token: str) -> str:
    return hmac.new(token.encode(), DOMAIN + canonical(registration), hashlib.sha256).hexdigest()


def sign(registration: Mapping[str, Any], token: str, now_ms: int) -> dict[str, Any]:
    """``registration`` stamped with ``ts = now_ms`` and signed with ``token``."""
    stamped = {k: v for k, v in registration.items() if k != SIG_FIELD}
    stamped[TS_FIELD] = int(now_ms)
    stamped[SIG_FIELD] = signature(stamped, token)
    return stamped


def verify(
    registration: Mapping[str, Any], token: str, *, service_id: str, now_ms: float, max_age_ms: float
) -> str | None:
    """None when the registration is genuine and fresh, else why it is refused (for a log line)."""
    presented = registration.get(SIG_FIELD)
    if not isinstance(presented, str) or not presented:
        return "unsigned"
    if not hmac.compare_digest(presented.encode(), signature(registration, token).encode()):
        return "bad signature"
    if registration.get("id") != service_id:
        return f"signed for another service id ({registration.get('id')!r})"
    ts = registration.get(TS_FIELD)
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return "no timestamp"
    if abs(now_ms - float(ts)) > max_age_ms:
        return "expired timestamp"
    return None
