"""The pure decisions of the gateway's auth: the route -> scope table, tokens by hash, grants, the Host
allow-list, trusted proxies and the failure throttle (gateway.scopes, gateway.clients)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from starlette.routing import Mount, Route

from flowcore.errors import ConfigError
from flowcore.settings import GatewaySettings
from gateway import tokens as token_cli
from gateway.app import create_app
from gateway.clients import (
    FailureThrottle,
    allowed_hosts,
    came_over_tls,
    client_address,
    host_allowed,
    host_name,
    proxy_networks,
    throttle_key,
)
from gateway.middleware import PUBLIC_PATHS, PUBLIC_PREFIXES
from gateway.scopes import ROUTE_SCOPES, Grant, Requirement, TokenBook, fingerprint, hash_token, required

TOKEN = "a-long-enough-token-0123456789ab"


def settings(**kw: Any) -> GatewaySettings:
    return GatewaySettings(pool_token=SecretStr("p"), **kw)


def entry(name: str, token: str, scopes: list[str], workflows: list[str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": name, "hash": hash_token(token), "scopes": scopes}
    if workflows is not None:
        doc["workflows"] = workflows
    return doc


# --- the route table -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/v1/workflows", Requirement("read")),
        ("HEAD", "/v1/workflows", Requirement("read")),
        ("POST", "/v1/workflows", Requirement("write")),
        ("GET", "/v1/workflows/wf-1", Requirement("read", workflow_id="wf-1")),
        ("DELETE", "/v1/workflows/wf-1", Requirement("write", workflow_id="wf-1")),
        ("POST", "/v1/workflows/wf-1/cancel", Requirement("write", workflow_id="wf-1")),
        ("PUT", "/v1/workflows/wf-1/state/k", Requirement("write", workflow_id="wf-1")),
        ("POST", "/v1/workflows/wf-1/trigger", Requirement("trigger", workflow_id="wf-1")),
        ("POST", "/v1/triggers/tr-1/fire", Requirement("trigger", trigger_id="tr-1")),
        ("POST", "/v1/triggers/tr-1/enable", Requirement("write", trigger_id="tr-1")),
        ("POST", "/v1/events", Requirement("trigger")),
        ("GET", "/v1/events", Requirement("read")),
        ("GET", "/v1/pools/k/x", Requirement("read")),
        ("POST", "/v1/pools/k/resize", Requirement("admin")),
        ("POST", "/v1/agents", Requirement("admin")),
        ("DELETE", "/v1/agents/a-1", Requirement("admin")),
        ("GET", "/ui/workflows/wf-1", Requirement("read")),
        ("GET", "/v1/some/future/route", Requirement("admin")),
        ("PATCH", "/v1/workflows/wf-1", Requirement("admin")),
        ("GET", "/v1/workflows/wf-1/state/k/extra/parts", Requirement("admin")),
    ],
)
def test_required_scope(method: str, path: str, expected: Requirement) -> None:
    assert required(method, path) == expected


def test_every_served_route_is_in_the_table_or_public() -> None:
    app = create_app(settings())
    listed = {(m, t) for m, t, _ in ROUTE_SCOPES}
    missing = []
    for route in app.routes:
        if isinstance(route, Mount) or not isinstance(route, Route):
            continue
        if route.path in PUBLIC_PATHS or route.path.startswith(PUBLIC_PREFIXES):
            continue
        for method in route.methods or ():
            if method == "HEAD":
                continue
            # pool changes are admin on purpose: the table lists only their GETs
            if route.path.startswith(("/v1/pools", "/v1/agents", "/v1/kept")) and method != "GET":
                continue
            if (method, route.path) not in listed:
                missing.append((method, route.path))
    assert missing == []


# --- tokens, grants ----------------------------------------------------------------------------------------


def test_hash_and_fingerprint() -> None:
    assert hash_token(TOKEN) == "sha256:" + hashlib.sha256(TOKEN.encode()).hexdigest()
    assert hash_token(TOKEN.encode()) == hash_token(TOKEN)
    fp = fingerprint(hash_token(TOKEN))
    assert len(fp) == 32 and fp != fingerprint(hash_token(TOKEN + "x")) and TOKEN not in fp


@pytest.mark.parametrize(
    ("scopes", "allowed"),
    [
        (["admin"], {"admin", "write", "read", "trigger"}),
        (["write"], {"write", "read", "trigger"}),
        (["read"], {"read"}),
        (["trigger"], {"trigger"}),
        (["read", "trigger"], {"read", "trigger"}),
    ],
)
def test_what_each_scope_allows(scopes: list[str], allowed: set[str]) -> None:
    grant = Grant("t", frozenset(scopes), None, "fp")
    assert {s for s in ("admin", "write", "read", "trigger") if grant.allows(s)} == allowed


def test_workflow_limits() -> None:
    grant = Grant("t", frozenset({"read"}), frozenset({"tpl"}), "fp")
    assert grant.restricted and grant.allows_workflow("tpl") and grant.allows_workflow("run-1", "tpl")
    assert not grant.allows_workflow("other") and not grant.allows_workflow() and not grant.allows_workflow(None)
    assert Grant("t", frozenset({"read"}), None, "fp").allows_workflow("anything")


def test_token_book() -> None:
    book = TokenBook.from_settings(
        settings(tokens=[SecretStr("legacy-admin")], api_tokens=[entry("ci", TOKEN, ["trigger"], ["wf-1"])])
    )
    legacy = book.lookup(b"legacy-admin")
    assert legacy is not None and legacy.name == "tokens[0]" and legacy.allows("admin")
    ci = book.lookup(TOKEN.encode())
    assert ci is not None and ci.name == "ci" and ci.scopes == {"trigger"} and ci.workflows == {"wf-1"}
    assert book.lookup(b"default-token") is None and book.lookup(b"") is None
    assert book.lookup(hash_token(TOKEN).encode()) is None  # the hash is no token
    assert book.by_session("ci", ci.fingerprint) == ci
    assert book.by_session("ci", fingerprint(hash_token("rotated"))) is None
    assert book.by_session("gone", ci.fingerprint) is None


def test_default_token_only_on_an_unconfigured_loopback_stack() -> None:
    assert TokenBook.from_settings(settings()).lookup(b"default-token") is not None
    only_scoped = TokenBook.from_settings(settings(api_tokens=[entry("r", TOKEN, ["read"])]))
    assert only_scoped.lookup(b"default-token") is None
    with pytest.raises(ConfigError):
        TokenBook.from_settings(settings(host="0.0.0.0"))
    TokenBook.from_settings(settings(host="0.0.0.0", api_tokens=[entry("r", TOKEN, ["admin"])]))


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "x", "hash": "sha256:abc", "scopes": ["read"]},
        {"name": "x", "hash": hash_token(TOKEN), "scopes": ["root"]},
        {"name": "x", "hash": hash_token(TOKEN), "scopes": []},
        {"name": "has space", "hash": hash_token(TOKEN), "scopes": ["read"]},
        {"name": "x", "hash": hash_token(TOKEN), "scopes": ["read"], "workflows": ["a:b"]},
        {"name": "x", "hash": hash_token(TOKEN), "scopes": ["read"], "token": TOKEN},
    ],
)
def test_bad_token_entries_stop_the_settings(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        settings(api_tokens=[bad])


def test_names_are_unique_and_proxies_are_addresses() -> None:
    with pytest.raises(ValidationError, match="used twice"):
        settings(api_tokens=[entry("a", TOKEN, ["read"]), entry("a", TOKEN + "x", ["write"])])
    with pytest.raises(ValidationError, match="trusted_proxies"):
        settings(trusted_proxies=["proxy.example"])


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = [{"name": "ci", "hash": hash_token(TOKEN), "scopes": ["trigger"]}]
    monkeypatch.setenv("FLOW_API_TOKENS", json.dumps(entries))
    monkeypatch.setenv("FLOW_ALLOWED_HOSTS", '["flow.example.com"]')
    monkeypatch.setenv("FLOW_TRUSTED_PROXIES", '["10.0.0.0/8"]')
    s = GatewaySettings(pool_token=SecretStr("p"))
    assert s.api_tokens[0].name == "ci" and s.allowed_hosts == ["flow.example.com"]
    assert TOKEN not in repr(s)


def test_the_cli_makes_an_entry_the_settings_accept(capsys: pytest.CaptureFixture[str]) -> None:
    assert token_cli.main(["new", "ci", "--scope", "trigger", "--workflow", "wf-1"]) == 0
    out = capsys.readouterr().out
    token = out.split("shown again): ", 1)[1].split("\n", 1)[0]
    doc = json.loads(out.split("FLOW_API_TOKENS item: ", 1)[1])
    assert doc == {"name": "ci", "hash": hash_token(token), "scopes": ["trigger"], "workflows": ["wf-1"]}
    grant = TokenBook.from_settings(settings(api_tokens=[doc])).lookup(token.encode())
    assert grant is not None and grant.name == "ci"
    assert token_cli.main(["new", "bad name"]) == 2


# --- hosts and proxies -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "name"),
    [("localhost:8081", "localhost"), ("LocalHost", "localhost"), ("[::1]:8081", "[::1]"), ("[::1]", "[::1]"),
     ("127.0.0.1", "127.0.0.1"), ("example.com.", "example.com"), ("a.example:80", "a.example")],
)
def test_host_name(header: str, name: str) -> None:
    assert host_name(header) == name


def test_allowed_hosts() -> None:
    default = allowed_hosts(settings())
    assert default == {"localhost", "127.0.0.1", "[::1]"}
    assert allowed_hosts(settings(host="10.1.2.3", tokens=[SecretStr("t")])) == default | {"10.1.2.3"}
    assert allowed_hosts(settings(host="::1")) == default
    assert allowed_hosts(settings(host="0.0.0.0", tokens=[SecretStr("t")])) == default
    assert allowed_hosts(settings(allowed_hosts=["Flow.Example.com", "::1"])) == {"flow.example.com", "[::1]"}
    assert allowed_hosts(settings(allowed_hosts=["*"])) is None
    assert host_allowed("localhost:8081", default) and host_allowed("anything", None)
    for foreign in ("evil.example", "localhost.evil.example", "127.0.0.1.nip.io", "", None):
        assert not host_allowed(foreign, default)


def scope(peer: str, headers: dict[str, str] | None = None, scheme: str = "http") -> dict[str, Any]:
    return {"client": (peer, 1), "scheme": scheme,
            "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()]}


def test_client_address_and_tls_through_trusted_proxies() -> None:
    trusted = proxy_networks(["10.0.0.0/24", "10.0.1.5"])
    xff = {"x-forwarded-for": "1.2.3.4, 10.0.0.7", "x-forwarded-proto": "https"}
    assert client_address(scope("10.0.0.1", xff), trusted) == "1.2.3.4"
    assert client_address(scope("10.0.0.1", {"x-forwarded-for": "6.6.6.6, 1.2.3.4"}), trusted) == "1.2.3.4"
    assert client_address(scope("10.0.0.1", {"x-forwarded-for": "junk"}), trusted) == "10.0.0.1"
    assert client_address(scope("10.0.0.1"), trusted) == "10.0.0.1"
    assert client_address(scope("9.9.9.9", xff), trusted) == "9.9.9.9"
    assert client_address(scope("10.0.0.1", xff), ()) == "10.0.0.1"
    assert came_over_tls(scope("10.0.0.1", xff), trusted)
    assert came_over_tls(scope("10.0.1.5", {"x-forwarded-proto": "http, https"}), trusted)
    assert not came_over_tls(scope("9.9.9.9", xff), trusted)
    assert not came_over_tls(scope("10.0.0.1", {"x-forwarded-proto": "http"}), trusted)
    assert not came_over_tls(scope("127.0.0.1", xff), ())
    assert came_over_tls(scope("9.9.9.9", scheme="https"), ())
    assert client_address({"headers": []}, trusted) == "unknown"


def test_throttle_keys() -> None:
    assert throttle_key("192.0.2.1") == "192.0.2.1"
    assert throttle_key("2001:db8::1") == throttle_key("2001:db8::ffff") == "2001:db8::/64"
    assert throttle_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert throttle_key("unknown") == "unknown"


# --- the throttle ----------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_bucket() -> None:
    clock = Clock()
    throttle = FailureThrottle(3, 10.0, clock=clock)
    for _ in range(3):
        assert throttle.retry_after("a") == 0
        throttle.failed("a")
    assert throttle.retry_after("a") == 10 and throttle.retry_after("b") == 0
    clock.now += 4
    assert throttle.retry_after("a") == 6
    clock.now += 6
    assert throttle.retry_after("a") == 0  # one attempt back
    throttle.failed("a")
    assert throttle.retry_after("a") == 10
    clock.now += 1000
    assert throttle.retry_after("a") == 0
    for _ in range(3):
        throttle.failed("a")
    assert throttle.retry_after("a") > 0  # a full bucket refills to the burst, no more


def test_throttle_memory_is_bounded() -> None:
    throttle = FailureThrottle(1, 60.0, max_clients=100, clock=Clock())
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle) == 100
    assert throttle.retry_after("10.0.3.231") > 0  # the most recent are kept
