"""A deployed agent's end of the state bridge (``pool/agent_bridge.py``): stdlib only, synchronous.

An agent deployed for a workflow finds ``FLOW_STATE_SOCKET`` and ``FLOW_STATE_TOKEN`` in its
environment; :class:`StateClient` connects, proves the token and then reads and writes that workflow's
state, one request at a time::

    with StateClient.from_env() as state:
        state.set("status", "ready")
        found, plan = state.wait("plan", timeout_s=10)     # until the key appears or changes
        state.cas("claim.3", "me", missing=True)          # True for exactly one caller

Every error the bridge answers raises :class:`StateError` with its message.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

_MISSING = object()


class StateError(Exception):
    """The bridge refused a request (the message says why) or the connection failed."""


class StateClient:
    def __init__(self, path: str, token: str, timeout_s: float = 60.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout_s)
        try:
            self._sock.connect(path)
        except OSError as exc:
            self._sock.close()
            raise StateError(f"cannot connect to the state bridge at {path}: {exc}") from None
        self._file = self._sock.makefile("rb")
        self._rid = 0
        welcome = self._exchange({"t": "hello", "token": token})
        if welcome.get("t") != "welcome":
            self.close()
            raise StateError(str(welcome.get("error") or "the bridge refused the connection"))
        self.workflow_id: str = welcome["workflow_id"]
        self.agent_id: str = welcome["agent_id"]
        self.limits: dict = welcome.get("limits") or {}

    @classmethod
    def from_env(cls, timeout_s: float = 60.0) -> StateClient:
        try:
            return cls(os.environ["FLOW_STATE_SOCKET"], os.environ["FLOW_STATE_TOKEN"], timeout_s)
        except KeyError:
            raise StateError("no state bridge: deploy the agent with a workflow_id") from None

    def __enter__(self) -> StateClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            self._sock.close()

    def _exchange(self, message: dict) -> dict:
        self._sock.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        line = self._file.readline()
        if not line:
            raise StateError("the state bridge closed the connection")
        return json.loads(line)

    def request(self, t: str, key: str, **fields: Any) -> dict:
        self._rid += 1
        reply = self._exchange({"t": t, "rid": self._rid, "key": key, **fields})
        if reply.get("t") == "error" or not reply.get("ok"):
            raise StateError(str(reply.get("error")))
        return reply

    def get(self, key: str, default: Any = None) -> Any:
        reply = self.request("get", key)
        return reply["value"] if reply["found"] else default

    def set(self, key: str, value: Any) -> Any:
        return self.request("set", key, value=value)["value"]

    def delete(self, key: str) -> bool:
        return bool(self.request("delete", key)["found"])

    def increment(self, key: str, by: float = 1) -> Any:
        return self.request("increment", key, value=by)["value"]

    def append(self, key: str, value: Any) -> list:
        return self.request("append", key, value=value)["value"]

    def cas(self, key: str, value: Any, expected: Any = None, missing: bool = False) -> bool:
        """Set ``key`` to ``value`` only if it holds ``expected`` (or, with ``missing``, is absent)."""
        return bool(self.request("cas", key, value=value, expected=expected, missing=missing)["swapped"])

    def wait(
        self, key: str, seen: Any = _MISSING, timeout_s: float = 10.0
    ) -> tuple[bool, Any | None]:
        """Until ``key`` differs from ``seen`` (default: until it exists), at most ``timeout_s``
        (at most 30 s per call; longer waits loop). Returns (found, value)."""
        deadline = time.monotonic() + timeout_s
        found = seen is not _MISSING
        value = None if seen is _MISSING else seen
        while True:
            left = max(0.0, min(30.0, deadline - time.monotonic()))
            reply = self.request("wait", key, found=found, value=value, timeout_s=left)
            if reply["changed"] or time.monotonic() >= deadline:
                return bool(reply["found"]), reply["value"]
