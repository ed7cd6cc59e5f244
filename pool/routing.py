"""Which pool service should run a task: a pure decision the worker side uses.

Every pool service writes its registration (``keys.pool_services``, JSON) and its heartbeat time
(``keys.pool_heartbeats``, ms) every ``heartbeat_s``. A registration looks like::

    {"id": "pool-1", "url": "http://127.0.0.1:8090", "capacity": 32, "busy": 3,
     "warm": {"<pool key hash>": <idle containers>}}

:func:`choose_service` prefers a fresh service holding an idle warm container for the key (most
idle first), then the least loaded fresh service (busy / capacity); stale services (no heartbeat
within ``stale_after_ms``) are never chosen. Ties break by service id, so the choice is stable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def parse_registration(raw: Any) -> dict[str, Any] | None:
    """A registration from Redis (bytes, str or dict); None when unreadable."""
    if isinstance(raw, bytes | bytearray):
        raw = raw.decode(errors="replace")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    return raw if isinstance(raw, dict) else None


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _load(reg: Mapping[str, Any]) -> float:
    capacity = reg.get("capacity") or 0
    busy = reg.get("busy") or 0
    try:
        return float(busy) / float(capacity) if float(capacity) > 0 else float("inf")
    except (TypeError, ValueError):
        return float("inf")


def _idle_for(reg: Mapping[str, Any], pool_key: str | None) -> int:
    if pool_key is None:
        return 0
    warm = reg.get("warm")
    if not isinstance(warm, Mapping):
        return 0
    try:
        return int(warm.get(pool_key, 0))
    except (TypeError, ValueError):
        return 0


def choose_service(
    registrations: Mapping[str, Any] | Mapping[bytes, Any],
    heartbeats: Mapping[str, float] | Mapping[bytes, float],
    pool_key: str | None,
    now_ms: float,
    stale_after_ms: float,
) -> str | None:
    """The service id to send a task to, or None when no fresh service is registered."""
    beats = {_text(k): float(v) for k, v in heartbeats.items()}
    fresh: list[tuple[str, dict[str, Any]]] = []
    for service_id, raw in registrations.items():
        sid = _text(service_id)
        beat = beats.get(sid)
        if beat is None or now_ms - float(beat) > stale_after_ms:
            continue
        reg = parse_registration(raw)
        if reg is None:
            continue
        fresh.append((sid, reg))
    if not fresh:
        return None
    warm = [(sid, reg) for sid, reg in fresh if _idle_for(reg, pool_key) > 0 and _load(reg) < 1.0]
    if warm:
        return min(warm, key=lambda p: (-_idle_for(p[1], pool_key), _load(p[1]), p[0]))[0]
    return min(fresh, key=lambda p: (_load(p[1]), p[0]))[0]
