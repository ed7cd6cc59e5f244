"""The agent state bridge's protocol: what a deployed agent may ask, parsed and bounded (pure).

A long-running agent deployed for a workflow (``AgentSpec.workflow_id``) reaches that workflow's state
over a unix socket (:mod:`pool.agent_bridge`). Frames are newline-delimited JSON objects, one per line:

- first ``{"t": "hello", "token": "<FLOW_STATE_TOKEN>"}`` → ``{"t": "welcome", "agent_id", "workflow_id",
  "limits"}`` (a wrong token: ``{"t": "error", "error"}`` and the connection closes);
- then requests, each answered in order by ``{"t": "reply", "rid", "ok": true, ...}`` or
  ``{"t": "reply", "rid", "ok": false, "error"}``:

  ========== ============================================ ==================================
  ``t``      fields                                       reply
  ========== ============================================ ==================================
  get        ``key``                                      ``found``, ``value``
  set        ``key``, ``value``                           ``value``
  delete     ``key``                                      ``found`` (whether it was there)
  increment  ``key``, ``value`` (a number, default 1)     ``value``
  append     ``key``, ``value``                           ``value`` (the list)
  cas        ``key``, ``value``, ``expected`` or           ``swapped``
             ``missing: true``
  wait       ``key``, ``found``, ``value`` (what the      ``changed``, ``found``, ``value``
             agent last saw), ``timeout_s`` (≤ 30)
  ========== ============================================ ==================================

No request names a workflow: the bridge answers for the one the agent was deployed for, and a field
it does not know (``workflow_id`` included) makes the request invalid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flowcore import limits
from flowcore.state import MAX_KEY_LENGTH

OPS = ("get", "set", "delete", "increment", "append", "cas", "wait")
WRITES = frozenset({"set", "delete", "increment", "append", "cas"})
MAX_WAIT_S = 30.0
MAX_RID = 2**53


class BadRequest(ValueError):
    """A frame the bridge will not act on; the message says why (sent back to the agent)."""


@dataclass(frozen=True)
class BridgeLimits:
    """How much one agent may ask of the bridge (per agent, whatever the number of its connections)."""

    max_connections: int = 4  # open at once; one request at a time on each (a wait holds its connection)
    rate_per_s: float = 200.0  # requests per second, sustained
    burst: int = 400  # requests beyond the rate, at once
    hello_timeout_s: float = 5.0
    wait_poll_s: float = 0.05  # how often a ``wait`` looks at its key
    # one value of FLOW_LIMITS__MAX_STATE_VALUE_KIB and a compare-and-set's expected value, and room
    max_request_bytes: int = field(default_factory=lambda: 2 * limits.current().max_state_value_bytes + 64 * 1024)

    def public(self) -> dict[str, Any]:
        return {
            "max_connections": self.max_connections,
            "rate_per_s": self.rate_per_s,
            "burst": self.burst,
            "max_request_bytes": self.max_request_bytes,
            "max_wait_s": MAX_WAIT_S,
            "max_value_bytes": limits.current().max_state_value_bytes,
        }


class BridgeRequest(BaseModel):
    """One request after the hello (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    t: Literal["get", "set", "delete", "increment", "append", "cas", "wait"]
    rid: int = Field(0, ge=0, le=MAX_RID)
    key: str = Field(min_length=1, max_length=MAX_KEY_LENGTH)
    value: Any = None
    expected: Any = None
    missing: bool = False
    found: bool = False
    timeout_s: float = Field(10.0, ge=0, le=MAX_WAIT_S)


def _load(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("a frame must be one JSON object on one line") from None
    except RecursionError:
        raise BadRequest("a frame nests too deeply") from None
    if not isinstance(message, dict):
        raise BadRequest("a frame must be a JSON object")
    return message


def parse_hello(line: bytes) -> str:
    """The token offered by a ``hello`` frame; :class:`BadRequest` for anything else."""
    message = _load(line)
    token = message.get("token")
    if message.get("t") != "hello" or not isinstance(token, str) or not token or len(token) > 256:
        raise BadRequest('the first frame must be {"t": "hello", "token": "<FLOW_STATE_TOKEN>"}')
    return token


def request_id(line: bytes) -> int | None:
    """The ``rid`` of a frame, when it has a usable one (to answer a bad request under its id)."""
    try:
        rid = json.loads(line).get("rid")
    except (ValueError, UnicodeDecodeError, AttributeError, RecursionError):
        return None
    return rid if isinstance(rid, int) and not isinstance(rid, bool) and 0 <= rid <= MAX_RID else None


def parse_request(line: bytes) -> BridgeRequest:
    """A request frame, typed and bounded; :class:`BadRequest` naming the problem otherwise."""
    message = _load(line)
    if message.get("t") not in OPS:
        raise BadRequest(f"unknown request {str(message.get('t'))[:40]!r}; use one of {', '.join(OPS)}")
    if "timeout_s" in message and isinstance(message["timeout_s"], int) and not isinstance(message["timeout_s"], bool):
        message["timeout_s"] = float(message["timeout_s"])
    try:
        return BridgeRequest.model_validate(message)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "frame"
        if first.get("type") == "extra_forbidden":
            raise BadRequest(f"unknown field {where!r} (a request cannot name a workflow or anything else)") from None
        raise BadRequest(f"{where}: {first.get('msg')}") from None


class TokenBucket:
    """Requests per second with a burst, on a clock the caller passes (pure, testable)."""

    def __init__(self, rate_per_s: float, burst: int, now_s: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._at_s = now_s
        self.refused = 0

    def take(self, now_s: float) -> bool:
        elapsed = max(0.0, now_s - self._at_s)
        self._at_s = max(self._at_s, now_s)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate_per_s)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.refused += 1
        return False


def changed(found_before: bool, before: Any, found_now: bool, now: Any) -> bool:
    """Whether a waited-on key differs from what the agent last saw (JSON equality)."""
    return found_before != found_now or (found_now and before != now)


__all__ = [
    "MAX_WAIT_S",
    "OPS",
    "WRITES",
    "BadRequest",
    "BridgeLimits",
    "BridgeRequest",
    "TokenBucket",
    "changed",
    "parse_hello",
    "parse_request",
    "request_id",
]
