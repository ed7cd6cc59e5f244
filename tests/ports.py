"""Free loopback ports for the servers the tests start (redis-server, uvicorn, the Procfile processes).

One helper for every tier (it was copied into eight modules). The port is free when this returns; a
server started on it a moment later may still lose a race with another process on a busy machine,
which the fixtures that start servers report as a failure to answer.
"""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
