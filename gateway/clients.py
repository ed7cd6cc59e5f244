"""Who is asking, and from where: the Host allow-list, trusted proxies, and the auth-failure throttle.

Pure (the clock is injectable); :mod:`gateway.middleware` and the dashboard's login apply it.

- **Hosts.** A request whose ``Host`` is not one this gateway is configured for is refused before
  authentication (:class:`gateway.middleware.HostCheck`): a web page that rebinds its own DNS name to
  127.0.0.1 reaches the port, but its requests carry its name, not ours.
- **Trusted proxies.** ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed only when the
  connection comes from an address in ``trusted_proxies``; otherwise anyone could claim to be
  another client (and escape the throttle) or to have come over TLS.
- **Throttle.** A token bucket per client address counts failed logins and wrong bearer tokens; an
  empty bucket answers 429 with ``Retry-After`` before the presented token is even checked, so
  guessing goes no faster than ``refill_s`` per attempt. A correct token costs nothing.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from starlette.types import Scope

from flowcore.settings import GatewaySettings

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
ANY_HOST = "*"
_UNSPECIFIED = frozenset({"", "0.0.0.0", "::", "[::]"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _normal_host(host: str) -> str:
    """Lower case; an IPv6 literal in brackets (as in a Host header)."""
    host = host.strip().lower().rstrip(".")
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def allowed_hosts(settings: GatewaySettings) -> frozenset[str] | None:
    """The Host names served; None when any is (``'*'``). Default: loopback names and the bind host."""
    if ANY_HOST in settings.allowed_hosts:
        return None
    if settings.allowed_hosts:
        return frozenset(_normal_host(h) for h in settings.allowed_hosts)
    extra = {_normal_host(settings.host)} if settings.host not in _UNSPECIFIED else set()
    return LOOPBACK_HOSTS | extra


def host_name(header: str) -> str:
    """The name part of a Host header (``[::1]:8081`` -> ``[::1]``, ``Example.COM:80`` -> ``example.com``)."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        return header[: end + 1] if end > 0 else header
    name, _, _port = header.partition(":")
    return name.rstrip(".")


def host_allowed(header: str | None, allowed: frozenset[str] | None) -> bool:
    if allowed is None:
        return True
    return bool(header) and host_name(header or "") in allowed


def proxy_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def _in(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def _header_values(scope: Scope, name: bytes) -> list[str]:
    out: list[str] = []
    for key, value in scope.get("headers", []):
        if key == name:
            out.extend(part.strip() for part in value.decode("latin-1").split(","))
    return [v for v in out if v]


def peer(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def client_address(scope: Scope, trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer, or when the peer is a trusted proxy, the last address in
    ``X-Forwarded-For`` that is not one of the trusted proxies."""
    address = peer(scope)
    if not trusted or not _in(address, trusted):
        return address
    for hop in reversed(_header_values(scope, b"x-forwarded-for")):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return address  # a malformed chain: the proxy is all we know
        address = hop
        if not _in(hop, trusted):
            break
    return address


def came_over_tls(scope: Scope, trusted: tuple[Network, ...]) -> bool:
    """TLS to this process, or ``X-Forwarded-Proto: https`` set by a trusted proxy."""
    if scope.get("scheme") == "https":
        return True
    if not trusted or not _in(peer(scope), trusted):
        return False
    protos = _header_values(scope, b"x-forwarded-proto")
    return bool(protos) and protos[-1].lower() == "https"


def throttle_key(address: str) -> str:
    """The throttle's key of a client: its IPv4 address, or its IPv6 /64 (one host usually holds a whole /64)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else str(ip)


@dataclass
class _Bucket:
    tokens: float
    at: float


class FailureThrottle:
    """A token bucket of ``burst`` failures per client, refilled one per ``refill_s``; bounded memory
    (the ``max_clients`` most recently failing clients; a full bucket is not kept)."""

    def __init__(
        self, burst: int, refill_s: float, *, max_clients: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.refill_s = refill_s
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _level(self, client: str, now: float) -> float:
        bucket = self._buckets.get(client)
        if bucket is None:
            return float(self.burst)
        return min(float(self.burst), bucket.tokens + (now - bucket.at) / self.refill_s)

    def retry_after(self, client: str) -> int:
        """0 when ``client`` may try a credential now; else the seconds until it may."""
        level = self._level(client, self.clock())
        if level >= 1:
            return 0
        return max(1, math.ceil((1 - level) * self.refill_s))

    def failed(self, client: str) -> None:
        now = self.clock()
        level = max(0.0, self._level(client, now) - 1)
        self._buckets[client] = _Bucket(level, now)
        self._buckets.move_to_end(client)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)
