"""``python -m gateway``: serve the API with uvicorn on the configured address."""

from __future__ import annotations

import logging
import socket

import uvicorn

from flowcore import limits, redisconn, tracing_setup
from flowcore.settings import GatewaySettings
from gateway.app import create_app

SHUTDOWN_GRACE_S = 5


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket with SO_REUSEPORT: each gateway process binds its own on the same port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def main() -> None:
    settings = GatewaySettings()
    limits.configure(settings.limits)  # FLOW_LIMITS__*: read where each limit is enforced
    logging.basicConfig(level=settings.log_level, format="%(asctime)s gateway %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)  # raises ConfigError before binding when the config is unsafe
    tracing = tracing_setup.configure(
        settings.tracing, default_service="flow-gateway", redis_url=settings.redis.url, prefix=settings.redis.prefix,
        redis_options=redisconn.credentials(settings.redis), redis_section=settings.redis,
    )
    # Server-sent event streams never end by themselves: without a bound, a shutdown would wait for
    # every open stream (clients reconnect with Last-Event-ID to another gateway or this one restarted).
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(), access_log=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        # X-Forwarded-* are believed only from FLOW_TRUSTED_PROXIES (gateway.clients), never uvicorn's
        # default of 127.0.0.1: any local process could then claim another address or TLS.
        proxy_headers=False,
    )
    try:
        server = uvicorn.Server(config)
        if settings.reuse_port:  # several gateway processes on one port: the kernel spreads connections
            server.run(sockets=[reuse_port_socket(settings.host, settings.port)])
        else:
            server.run()
    finally:
        tracing.shutdown()  # flush the last spans


if __name__ == "__main__":
    main()
