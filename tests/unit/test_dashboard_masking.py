"""What the dashboard masks (pure), and where its login may send a browser afterwards."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.dashboard.masking import MASK, MaskSecrets, is_secret_name, mask_secrets
from gateway.dashboard.pages import safe_next


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("API_TOKEN", True), ("GITHUB_TOKEN", True), ("DB_PASSWORD", True), ("PGPASSWORD", True), ("passwd", True),
        ("AWS_SECRET_ACCESS_KEY", True), ("OPENAI_API_KEY", True), ("ssh_private", True), ("CREDENTIALS_FILE", True),
        ("Authorization", True), ("SESSION_COOKIE", True), ("SENTRY_DSN", True), ("TLS_CERT", True),
        ("LOG_LEVEL", False), ("PATH", False), ("HOME", False), ("WORKERS", False), ("FLOW_STEP_ID", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


CASES: list[tuple[str, Any, Any]] = [
    (
        "step env in a definition",
        {"definition": {"steps": [{"id": "a", "env": {"API_TOKEN": "t", "LOG_LEVEL": "debug"}}]}},
        {"definition": {"steps": [{"id": "a", "env": {"API_TOKEN": MASK, "LOG_LEVEL": "debug"}}]}},
    ),
    (
        "agents list",
        {"agents": [{"name": "x", "env": {"DB_PASSWORD": "p", "MODE": "fast"}}]},
        {"agents": [{"name": "x", "env": {"DB_PASSWORD": MASK, "MODE": "fast"}}]},
    ),
    (
        "NAME=value lists",
        {"env": ["SECRET_KEY=abc", "DEBUG=1", "TOKEN=", "plain"]},
        {"env": [f"SECRET_KEY={MASK}", "DEBUG=1", "TOKEN=", "plain"]},
    ),
    ("empty values stay empty", {"env": {"API_KEY": "", "TOKEN": None}}, {"env": {"API_KEY": "", "TOKEN": None}}),
    ("non-string secret values", {"env": {"PORT_KEY": 5}}, {"env": {"PORT_KEY": MASK}}),
    (
        "only env mappings: other fields with secret-looking names are data",
        {"pool_key": "abc", "key": "k", "state": {"token": "t"}, "token": "attempt-token"},
        {"pool_key": "abc", "key": "k", "state": {"token": "t"}, "token": "attempt-token"},
    ),
    ("scalars and lists pass through", [1, "x", None, {"a": [{"env": {"TOKEN": "v"}}]}], [1, "x", None, {"a": [{"env": {"TOKEN": MASK}}]}]),
]


@pytest.mark.parametrize(("name", "value", "expected"), CASES, ids=[c[0] for c in CASES])
def test_mask_secrets(name: str, value: Any, expected: Any) -> None:
    assert mask_secrets(value) == expected


def test_mask_secrets_leaves_its_input_alone() -> None:
    value = {"env": {"TOKEN": "v"}}
    mask_secrets(value)
    assert value == {"env": {"TOKEN": "v"}}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "/ui/"), ("", "/ui/"), ("/ui/", "/ui/"), ("/ui", "/ui"), ("/ui/workflows/wf-1", "/ui/workflows/wf-1"),
        ("/ui/?status=running", "/ui/?status=running"), ("/ui/login", "/ui/"), ("/ui/logout", "/ui/"),
        ("/ui/static/app.html", "/ui/"), ("/v1/workflows", "/ui/"), ("https://evil.example/ui/", "/ui/"),
        ("//evil.example/ui/", "/ui/"), ("/ui\\@evil", "/ui/"), ("/uix", "/ui/"), ("javascript:alert(1)", "/ui/"),
    ],
)
def test_safe_next(raw: str | None, expected: str) -> None:
    assert safe_next(raw) == expected


def _app(chunks: list[bytes], content_type: bytes = b"application/json"):  # type: ignore[no-untyped-def]
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})

    return app


async def _call(app: Any, auth: str | None) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/v1/agents", "headers": [], "state": {"auth": auth} if auth else {}}
    await MaskSecrets(app)(scope, receive, send)
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


async def test_masking_middleware_rewrites_streamed_json_for_sessions_only() -> None:
    chunks = [b'{"agents": [{"name": "a", "env": {"DB_PASS', b'WORD": "hunter2", "MODE": "x"}}]}']
    status, headers, body = await _call(_app(chunks), "session")
    assert status == 200 and json.loads(body) == {"agents": [{"name": "a", "env": {"DB_PASSWORD": MASK, "MODE": "x"}}]}
    assert headers[b"content-length"] == str(len(body)).encode()
    status, _, body = await _call(_app(chunks), None)
    assert b"hunter2" in body, "bearer clients are not rewritten"
    status, _, body = await _call(_app([b"data: {\"env\": {\"TOKEN\": \"t\"}}\n\n"], b"text/event-stream"), "session")
    assert status == 200 and b'"t"' in body, "streams pass through"


async def test_masking_middleware_fails_closed_on_unreadable_json() -> None:
    status, headers, body = await _call(_app([b"\x1f\x8b garbage with DB_PASSWORD=hunter2"]), "session")
    assert status == 502 and b"hunter2" not in body and json.loads(body)["error"] == "unmaskable_answer"
    assert headers[b"content-type"] == b"application/json"
    status, _, body = await _call(_app([b""]), "session")
    assert status == 200 and body == b""
