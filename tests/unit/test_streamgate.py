"""The bound on live event streams (gateway.streamgate): per client, per process, places given back."""

from __future__ import annotations

import pytest

from flowcore.errors import ServiceUnavailable, TooManyRequests
from gateway.streamgate import StreamGate


def test_per_client_then_total_bounds_and_release() -> None:
    gate = StreamGate(total=3, per_client=2)
    gate.acquire("a")
    gate.acquire("a")
    with pytest.raises(TooManyRequests):
        gate.acquire("a")
    gate.acquire("b")
    with pytest.raises(ServiceUnavailable):
        gate.acquire("c")  # the process is full even for a client that holds none
    assert gate.open == 3 and gate.held_by("a") == 2
    gate.release("a")
    gate.acquire("c")
    gate.release("c")
    gate.release("b")
    gate.release("a")
    assert gate.open == 0 and gate.held_by("a") == 0
