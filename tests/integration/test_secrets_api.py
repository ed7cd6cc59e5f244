"""The secret routes in-process on a real Redis: write-only answers, sealed at rest, scopes, bad inputs
(each a 4xx that stores nothing), a definition with a malformed reference, and a gateway that listens
beyond loopback without a key (secrets disabled, 503)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from flowcore.keyspace import Keyspace
from flowcore.secretstore import SecretCipher, SecretStore, SecretUnavailable
from tests.integration.test_gateway_scopes import ADMIN, READ, WRITE, bearer, client, serve, settings_for

KEY = "test-secrets-key-0123456789abcdef-0123"
VALUE = "postgres://app:correct-horse-battery@db/app"


@pytest.fixture
async def app(conn: Redis, redis_url: str) -> AsyncIterator[Any]:
    async with serve(settings_for(redis_url, "sec", secrets_key=SecretStr(KEY)), conn) as a:
        yield a


async def test_a_secret_is_written_never_read_and_sealed_at_rest(app: Any, conn: Redis) -> None:
    async with client(app, headers=bearer(ADMIN)) as c:
        r = await c.put("/v1/secrets/db-url", json={"value": VALUE})
        assert r.status_code == 200 and VALUE not in r.text
        first = r.json()
        assert first["name"] == "db-url" and first["created_at"].endswith("Z")
        again = (await c.put("/v1/secrets/db-url", json={"value": VALUE + "2"})).json()
        assert again["created_at"] == first["created_at"]  # replaced, not re-created
        listed = await c.get("/v1/secrets")
        assert [i["name"] for i in listed.json()["items"]] == ["db-url"] and VALUE not in listed.text
        assert VALUE not in (await c.get("/v1/secrets/db-url")).text
        assert (await c.get("/v1/secrets/nope")).status_code == 404
    raw = await conn.hgetall(Keyspace("sec").secrets)
    assert list(raw) == [b"db-url"] and VALUE.encode() not in raw[b"db-url"]
    # The worker's side: the same key opens it.
    store = SecretStore(conn, Keyspace("sec"), SecretCipher(KEY))
    assert await store.values(["db-url"], ("wf-any",)) == {"db-url": VALUE + "2"}
    async with client(app, headers=bearer(ADMIN)) as c:
        assert (await c.delete("/v1/secrets/db-url")).status_code == 204
        assert (await c.delete("/v1/secrets/db-url")).status_code == 404
    assert await conn.hlen(Keyspace("sec").secrets) == 0


async def test_only_admin_stores_or_deletes_a_read_token_lists_names(app: Any, conn: Redis) -> None:
    async with client(app, headers=bearer(ADMIN)) as c:
        assert (await c.put("/v1/secrets/s1", json={"value": VALUE})).status_code == 200
    for token in (READ, WRITE):
        async with client(app, headers=bearer(token)) as c:
            assert (await c.put("/v1/secrets/s1", json={"value": "overwritten"})).status_code == 403
            assert (await c.delete("/v1/secrets/s1")).status_code == 403
            assert (await c.get("/v1/secrets")).status_code == 200
    store = SecretStore(conn, Keyspace("sec"), SecretCipher(KEY))
    assert await store.values(["s1"], ("wf-any",)) == {"s1": VALUE}


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/v1/secrets/s1", {"value": "abc"}, 422, "value"),  # too short to be masked
        ("/v1/secrets/s1", {"value": 12345}, 422, "value"),
        ("/v1/secrets/s1", {"value": "x" * (64 * 1024 + 1)}, 422, "value"),
        ("/v1/secrets/s1", {"value": VALUE, "extra": 1}, 422, "value"),
        ("/v1/secrets/s1", ["not", "an", "object"], 422, "value"),
        ("/v1/secrets/a:b", {"value": VALUE}, 422, "name"),
        ("/v1/secrets/s1", {"value": VALUE, "workflows": []}, 422, "workflows"),  # empty: say nothing instead
        ("/v1/secrets/s1", {"value": VALUE, "workflows": "wf-1"}, 422, "workflows"),
        ("/v1/secrets/s1", {"value": VALUE, "workflows": [1]}, 422, "workflows"),
        ("/v1/secrets/s1", {"value": VALUE, "workflows": ["a:b"]}, 422, "workflows[0]"),
        ("/v1/secrets/s1", {"value": VALUE, "workflows": [f"w{i}" for i in range(101)]}, 422, "workflows"),
        ("/v1/secrets/" + "n" * 129, {"value": VALUE}, 422, "name"),
    ],
)
async def test_bad_secrets_are_4xx_and_store_nothing(
    app: Any, conn: Redis, path: str, body: Any, status: int, field: str
) -> None:
    async with client(app, headers=bearer(ADMIN)) as c:
        r = await c.put(path, json=body)
    assert r.status_code == status and r.json().get("field") == field, r.text
    assert await conn.hlen(Keyspace("sec").secrets) == 0


async def test_a_malformed_reference_in_a_definition_is_422_naming_the_env_key(app: Any) -> None:
    step = {"id": "a", "image": "agentainer-flow/python:3.11", "command": ["true"],
            "env": {"OK": "${{ secrets.fine }}", "DB": "${{ secrets.bad:name }}"}}
    async with client(app, headers=bearer(ADMIN)) as c:
        r = await c.post("/v1/workflows", json={"name": "w", "steps": [step]})
        assert r.status_code == 422 and r.json()["field"] == "steps[0].env.DB", r.text
        assert (await c.get("/v1/workflows")).json()["total"] == 0


async def test_a_secret_limited_to_some_workflows(app: Any, conn: Redis) -> None:
    """Its scope is stored and shown; only the listed runs (by id, template or retry root) get its value;
    a start of a new workflow that refers to it is refused at once (403), storing nothing."""
    async with client(app, headers=bearer(ADMIN)) as c:
        r = await c.put("/v1/secrets/scoped", json={"value": VALUE, "workflows": ["tpl-b", "tpl-a", "tpl-a"]})
        assert r.status_code == 200 and r.json()["workflows"] == ["tpl-a", "tpl-b"], r.text
        assert (await c.get("/v1/secrets/scoped")).json()["workflows"] == ["tpl-a", "tpl-b"]
        step = {"id": "a", "image": "agentainer-flow/python:3.11", "command": ["true"],
                "env": {"DB": "${{ secrets.scoped }}"}}
        started = await c.post("/v1/workflows?start=true", json={"name": "w", "steps": [step]})
        assert started.status_code == 403 and started.json()["field"] == "env", started.text
        assert "'scoped' is limited" in started.json()["message"]
        assert (await c.get("/v1/workflows")).json()["total"] == 0
        # A template may refer to it (it is not run): an admin lists it afterwards, by its new id.
        assert (await c.post("/v1/workflows", json={"name": "t", "steps": [step]})).status_code == 201
    store = SecretStore(conn, Keyspace("sec"), SecretCipher(KEY))
    assert await store.values(["scoped"], ("run-1", "tpl-a", None)) == {"scoped": VALUE}  # fired from tpl-a
    assert await store.values(["scoped"], ("tpl-b", None, None)) == {"scoped": VALUE}  # tpl-b itself
    assert await store.values(["scoped"], ("run-3", "run-2", "tpl-b")) == {"scoped": VALUE}  # a retry's root
    with pytest.raises(SecretUnavailable, match="'scoped' is limited to some workflows"):
        await store.values(["scoped"], ("run-4", "tpl-c", None))


async def test_a_public_gateway_without_a_key_serves_no_secrets(conn: Redis, redis_url: str) -> None:
    settings = settings_for(redis_url, "sec2", host="0.0.0.0", allowed_hosts=["localhost"])
    async with serve(settings, conn) as public, client(public, headers=bearer(ADMIN)) as c:
        r = await c.put("/v1/secrets/s1", json={"value": VALUE})
        assert r.status_code == 503 and "FLOW_SECRETS_KEY" in r.json()["message"], r.text
    assert await conn.hlen(Keyspace("sec2").secrets) == 0


async def test_sdk_and_cli(app: Any, conn: Redis, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    import io

    import httpx

    from agentainer_flow import SecretInfo, WorkflowClient
    from agentainer_flow.cli import _dispatch, build_parser

    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with WorkflowClient("http://localhost", ADMIN, transport=transport) as sdk:
        info = await sdk.set_secret("from-sdk", VALUE)
        assert isinstance(info, SecretInfo) and info.created_at is not None
        assert [s.name for s in await sdk.list_secrets()] == ["from-sdk"]
    monkeypatch.setattr("sys.stdin", io.StringIO("value-from-stdin\n"))
    args = build_parser().parse_args(["--url", "http://localhost", "--token", ADMIN, "secret", "set", "from-cli"])
    assert await _dispatch(args, transport) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("scoped-value"))
    args = build_parser().parse_args(["--url", "http://localhost", "--token", ADMIN, "secret", "set", "for-two",
                                      "--workflow", "wf-1", "--workflow", "wf-2"])
    assert await _dispatch(args, transport) == 0
    assert "usable by wf-1, wf-2" in capsys.readouterr().out
    async with WorkflowClient("http://localhost", ADMIN, transport=transport) as sdk:
        scoped = await sdk.set_secret("sdk-scoped", VALUE, workflows=["wf-9"])
        assert scoped.workflows == ["wf-9"]
        assert {s.name: s.workflows for s in await sdk.list_secrets()}["for-two"] == ["wf-1", "wf-2"]
    args = build_parser().parse_args(["--url", "http://localhost", "--token", ADMIN, "secret", "list"])
    assert await _dispatch(args, transport) == 0
    printed = capsys.readouterr().out
    assert "from-cli" in printed and "from-sdk" in printed and "value-from-stdin" not in printed
    store = SecretStore(conn, Keyspace("sec"), SecretCipher(KEY))
    assert await store.values(["from-cli"], ("wf-any",)) == {"from-cli": "value-from-stdin"}  # the newline is not kept
    args = build_parser().parse_args(["--url", "http://localhost", "--token", ADMIN, "secret", "rm", "from-cli"])
    assert await _dispatch(args, transport) == 0
    assert await conn.hexists(Keyspace("sec").secrets, "from-cli") == 0
