"""What the three agents share: a connection to the state bridge that survives the workflow's end,
and a way to say what they did (stdout, read back with ``flow agents logs`` / ``get_agent_logs``)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from flow_state import StateClient, StateError

NAME = os.environ.get("AGENT_NAME") or os.environ.get("FLOW_AGENT_ID", "agent")


def say(message: str) -> None:
    print(f"[{NAME}] {message}", flush=True)


def serve(key: str, handle: Callable[[StateClient, Any], None]) -> None:
    """Call ``handle(state, value)`` each time ``key`` of the workflow's state changes; forever."""
    while True:
        try:
            with StateClient.from_env() as state:
                say(f"connected to workflow {state.workflow_id}; waiting on {key!r}")
                found, seen = False, None
                while True:
                    if found:
                        now_found, value = state.wait(key, seen, timeout_s=3600)
                    else:
                        now_found, value = state.wait(key, timeout_s=3600)
                    if now_found and (not found or value != seen):
                        found, seen = True, value
                        handle(state, value)
        except StateError as exc:
            say(f"state bridge: {exc}; retrying in 1 s")
        except OSError as exc:
            say(f"state bridge connection: {exc}; retrying in 1 s")
        sys.stdout.flush()
        time.sleep(1)

