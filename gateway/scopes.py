"""Who may do what: tokens by hash, their scopes, and the one table of what each route needs.

Pure (no I/O): :class:`gateway.middleware.TokenAuth` applies it to every request, the dashboard's login
uses :meth:`TokenBook.lookup` too. Decision record: docs/adr/011-scoped-tokens.md.

- A token is known by the SHA-256 of its value (``sha256:<hex>``): the configuration, the process
  and Redis never hold a scoped token in clear. The tokens of ``FLOW_TOKENS`` (and ``default-token``
  on an unconfigured loopback stack) are admin tokens, hashed when the gateway starts.
- Scopes: ``admin`` (everything), ``write`` (read, fire and change workflows, state and triggers),
  ``read`` (GET only), ``trigger`` (fire triggers and workflows, publish events; nothing else).
- :data:`ROUTE_SCOPES` says what each route needs; a route missing from it needs ``admin``.
- A token may be limited to some workflows: then it reaches only routes that name a workflow (or a
  trigger) that is one of them or was started from one of them (a run of a listed template).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from starlette.routing import compile_path

from flowcore.settings import GatewaySettings
from gateway.clients import FailureThrottle, Network, allowed_hosts, proxy_networks

ScopeName = Literal["admin", "write", "read", "trigger", "approve"]
ADMIN: ScopeName = "admin"
WRITE: ScopeName = "write"
READ: ScopeName = "read"
TRIGGER: ScopeName = "trigger"
APPROVE: ScopeName = "approve"  # decide approval steps (ADR 012); write and admin imply it

# What holding a scope lets a token do: admin everything, write also reads, fires and approves.
IMPLIES: dict[str, frozenset[str]] = {
    ADMIN: frozenset({ADMIN, WRITE, READ, TRIGGER, APPROVE}),
    WRITE: frozenset({WRITE, READ, TRIGGER, APPROVE}),
    READ: frozenset({READ}),
    TRIGGER: frozenset({TRIGGER}),
    APPROVE: frozenset({APPROVE, READ}),
}
HASH_PREFIX = "sha256:"

# method, path template (Starlette syntax), scope needed. HEAD is GET. Anything else needs admin.
ROUTE_SCOPES: tuple[tuple[str, str, ScopeName], ...] = (
    ("GET", "/v1/workflows", READ),
    ("POST", "/v1/workflows", WRITE),
    ("GET", "/v1/workflows/{workflow_id}", READ),
    ("DELETE", "/v1/workflows/{workflow_id}", WRITE),
    ("DELETE", "/v1/workflows", WRITE),  # by filter (flowcore.retention); a token limited to workflows cannot
    ("POST", "/v1/workflows/{workflow_id}/start", WRITE),
    ("POST", "/v1/workflows/{workflow_id}/cancel", WRITE),
    ("POST", "/v1/workflows/{workflow_id}/retry", WRITE),
    ("POST", "/v1/workflows/{workflow_id}/steps/{step_id}/approve", APPROVE),
    ("POST", "/v1/workflows/{workflow_id}/steps/{step_id}/reject", APPROVE),
    ("GET", "/v1/workflows/{workflow_id}/jobs", READ),
    ("GET", "/v1/workflows/{workflow_id}/logs", READ),
    ("GET", "/v1/workflows/{workflow_id}/metrics", READ),
    ("GET", "/v1/workflows/{workflow_id}/spans", READ),
    ("GET", "/v1/workflows/{workflow_id}/events", READ),
    ("GET", "/v1/workflows/{workflow_id}/state", READ),
    ("GET", "/v1/workflows/{workflow_id}/state/{key}", READ),
    ("PUT", "/v1/workflows/{workflow_id}/state/{key}", WRITE),
    ("DELETE", "/v1/workflows/{workflow_id}/state/{key}", WRITE),
    ("POST", "/v1/workflows/{workflow_id}/state/{key}/increment", WRITE),
    ("POST", "/v1/workflows/{workflow_id}/state/{key}/append", WRITE),
    ("POST", "/v1/workflows/{workflow_id}/state/{key}/cas", WRITE),
    ("GET", "/v1/workflows/{workflow_id}/triggers", READ),
    ("POST", "/v1/workflows/{workflow_id}/triggers", WRITE),
    ("POST", "/v1/workflows/{workflow_id}/trigger", TRIGGER),
    ("GET", "/v1/triggers", READ),
    ("GET", "/v1/triggers/{trigger_id}", READ),
    ("DELETE", "/v1/triggers/{trigger_id}", WRITE),
    ("POST", "/v1/triggers/{trigger_id}/enable", WRITE),
    ("POST", "/v1/triggers/{trigger_id}/disable", WRITE),
    ("POST", "/v1/triggers/{trigger_id}/fire", TRIGGER),
    ("GET", "/v1/triggers/{trigger_id}/runs", READ),
    ("POST", "/v1/events", TRIGGER),
    ("GET", "/v1/events", READ),
    # Secrets: names and times are read; storing and deleting a value is admin (the default).
    ("GET", "/v1/secrets", READ),
    ("GET", "/v1/secrets/{name}", READ),
    ("PUT", "/v1/secrets/{name}", ADMIN),
    ("DELETE", "/v1/secrets/{name}", ADMIN),
    ("GET", "/v1/metrics/history", READ),
    ("GET", "/v1/metrics/aggregate", READ),
    ("GET", "/v1/metrics/series", READ),
    ("GET", "/v1/metrics/flow-control", READ),
    ("GET", "/metrics", READ),
    # Pools and agents start containers: reading them is read, changing them is admin (the default).
    ("GET", "/v1/pools", READ),
    ("GET", "/v1/pools/{rest:path}", READ),
    ("GET", "/v1/agents", READ),
    ("GET", "/v1/agents/{rest:path}", READ),
    ("GET", "/v1/kept", READ),  # containers kept by a cleanup policy: listing, logs, files (ADR 014)
    ("GET", "/v1/kept/{rest:path}", READ),
    # The dashboard's pages (its API calls are judged as any other request).
    ("GET", "/ui", READ),
    ("GET", "/ui/{page:path}", READ),
)
_COMPILED: tuple[tuple[str, re.Pattern[str], ScopeName], ...] = tuple(
    (method, compile_path(template)[0], scope) for method, template, scope in ROUTE_SCOPES
)


@dataclass(frozen=True)
class Requirement:
    """What a request needs: a scope and, for tokens limited to some workflows, the ids it names."""

    scope: ScopeName
    workflow_id: str | None = None
    trigger_id: str | None = None


def required(method: str, path: str) -> Requirement:
    """The scope ``method path`` needs (admin when the table does not list it)."""
    method = "GET" if method == "HEAD" else method
    for route_method, pattern, scope in _COMPILED:
        if route_method != method:
            continue
        match = pattern.match(path)
        if match is not None:
            params = match.groupdict()
            return Requirement(scope, params.get("workflow_id"), params.get("trigger_id"))
    return Requirement(ADMIN)


def hash_token(token: str | bytes) -> str:
    """``sha256:<hex>`` of a token: what FLOW_API_TOKENS holds instead of the token."""
    raw = token.encode() if isinstance(token, str) else token
    return HASH_PREFIX + hashlib.sha256(raw).hexdigest()


def fingerprint(token_hash: str) -> str:
    """A short value derived from a token's hash, kept in its dashboard sessions: a session whose
    token was removed or rotated (another hash) ends at its next request."""
    return hashlib.sha256(b"flow-session-token:" + token_hash.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Grant:
    """What one token may do (never its value)."""

    name: str
    scopes: frozenset[str]  # as configured
    workflows: frozenset[str] | None  # None: every workflow
    fingerprint: str

    @property
    def effective(self) -> frozenset[str]:
        out: set[str] = set()
        for scope in self.scopes:
            out |= IMPLIES.get(scope, frozenset())
        return frozenset(out)

    def allows(self, scope: str) -> bool:
        return scope in self.effective

    @property
    def restricted(self) -> bool:
        return self.workflows is not None

    def allows_workflow(self, *ids: str | None) -> bool:
        """Whether any of ``ids`` (a workflow, the template it was started from) is one of this token's."""
        if self.workflows is None:
            return True
        return any(i is not None and i in self.workflows for i in ids)

    def describe(self) -> str:
        return "token {!r} (scopes: {})".format(self.name, ", ".join(sorted(self.scopes)))


class TokenBook:
    """The tokens a gateway accepts, by SHA-256 digest; looked up in time independent of which matched."""

    def __init__(self, entries: Iterable[tuple[str, Grant]]) -> None:
        self._entries: list[tuple[bytes, Grant]] = []
        self._by_name: dict[str, Grant] = {}
        for token_hash, grant in entries:
            self._entries.append((bytes.fromhex(token_hash.removeprefix(HASH_PREFIX)), grant))
            self._by_name[grant.name] = grant

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> TokenBook:
        """Admin tokens of FLOW_TOKENS (or default-token on an unconfigured loopback stack; raises
        ConfigError on a non-loopback bind without any token) and the scoped FLOW_API_TOKENS."""
        entries: list[tuple[str, Grant]] = []
        for index, token in enumerate(settings.accepted_tokens()):
            token_hash = hash_token(token)
            name = "default-token" if token == "default-token" and not settings.tokens else f"tokens[{index}]"
            entries.append((token_hash, Grant(name, frozenset({ADMIN}), None, fingerprint(token_hash))))
        for api in settings.api_tokens:
            workflows = frozenset(api.workflows) if api.workflows is not None else None
            entries.append((api.hash, Grant(api.name, frozenset(api.scopes), workflows, fingerprint(api.hash))))
        return cls(entries)

    def lookup(self, presented: bytes) -> Grant | None:
        """The grant of a presented token, or None. Every entry is compared (no early exit)."""
        digest = hashlib.sha256(presented).digest()
        found: Grant | None = None
        for entry_digest, grant in self._entries:
            if hmac.compare_digest(digest, entry_digest):
                found = grant
        return found

    def by_session(self, name: str, print_: str) -> Grant | None:
        """The grant a dashboard session was opened with, if that token is still configured unchanged."""
        grant = self._by_name.get(name)
        if grant is None or not hmac.compare_digest(grant.fingerprint.encode(), print_.encode()):
            return None
        return grant


@dataclass(frozen=True)
class AuthConfig:
    """Everything the gateway's authentication needs, built once from the settings (``app.state.auth``)."""

    book: TokenBook
    throttle: FailureThrottle
    trusted: tuple[Network, ...]
    hosts: frozenset[str] | None

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> AuthConfig:
        return cls(
            book=TokenBook.from_settings(settings),
            throttle=FailureThrottle(settings.auth_throttle_burst, settings.auth_throttle_refill_s),
            trusted=proxy_networks(settings.trusted_proxies),
            hosts=allowed_hosts(settings),
        )
