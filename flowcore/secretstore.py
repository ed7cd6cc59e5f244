"""Stored secrets: named values, write-only over the API, encrypted at rest in Redis.

Keyspace: ``{p}:secrets`` (hash) name -> JSON ``{"ct", "created_at", "updated_at", "workflows"}``. ``ct`` is
AES-256-GCM (``cryptography``) of the value under a key derived (HKDF-SHA256) from the stack's secrets
key, with a random 96-bit nonce and the secret's name as associated data: a ciphertext copied under
another name does not decrypt. Redis, its dumps and its replicas never see a value.

The secrets key (:func:`resolve_key`): ``FLOW_SECRETS_KEY`` (at least 32 characters; the gateway and
every worker need the same one), or, on a loopback dev stack, a random one kept ``0600`` in
``secrets_key_file`` (``.flow/secrets.key``), created by whichever process needs it first. A gateway
bound to another address without a key serves no secret routes (503 naming the setting).

Who sees what: the gateway encrypts (``PUT /v1/secrets/{name}``) and lists names and times, never a
value (there is no route that reads one); the worker decrypts the ones a task refers to
(:meth:`SecretStore.values`) just before it sends the task to the pool; see :mod:`flowcore.secretrefs`.

Scope: a secret may be limited to some workflows (``workflows``: ids of workflows or templates). Then
only a run that is one of them, was fired from one of them (a trigger, a manual fire, a child run:
``origin.template_id``) or retries such a run (``origin.root_id``) receives it; any other run's task
fails with ``input_error`` (:func:`usable_by`). A new submission cannot be one of them (its id is new),
so the gateway refuses to start one that refers to a limited secret (:meth:`SecretStore.check_usable`).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.exceptions import RedisError

from flowcore import pooltoken
from flowcore.errors import ConfigError, Forbidden, InvalidInput, NotFound, ServiceUnavailable
from flowcore.ids import check_id
from flowcore.keyspace import Keyspace
from flowcore.records import Origin
from flowcore.secretrefs import MAX_SECRET_BYTES, MIN_SECRET_CHARS
from flowcore.settings import is_loopback

MIN_KEY_CHARS = 32
MAX_SECRETS = 10_000
MAX_SCOPE_WORKFLOWS = 100
_INFO = b"agentainer-flow secrets v1"


class SecretUnavailable(InvalidInput):
    """A secret a task refers to is not set, or cannot be decrypted with this process's key."""

    code = "secret_unavailable"


def resolve_key(configured: SecretStr, key_file: str | Path, *, bind_host: str | None = None) -> str | None:
    """The secrets key of this process; None when a non-loopback gateway has none (secrets disabled)."""
    key = configured.get_secret_value().strip()
    if key:
        if len(key) < MIN_KEY_CHARS:
            raise ConfigError(f"FLOW_SECRETS_KEY must have at least {MIN_KEY_CHARS} characters")
        return key
    if bind_host is not None and not is_loopback(bind_host):
        return None
    return pooltoken.read_or_create(Path(key_file))


class SecretCipher:
    def __init__(self, key: str) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(key.encode())
        self._aead = AESGCM(derived)

    def encrypt(self, name: str, value: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, value.encode(), name.encode())
        return base64.b64encode(nonce + sealed).decode()

    def decrypt(self, name: str, token: str) -> str:
        raw = base64.b64decode(token)
        try:
            return self._aead.decrypt(raw[:12], raw[12:], name.encode()).decode()
        except InvalidTag:
            raise SecretUnavailable(
                f"secret {name!r} cannot be decrypted: this process's FLOW_SECRETS_KEY is not the one it was"
                " stored with"
            ) from None


def check_value(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput("value: a string", field="value")
    if len(value) < MIN_SECRET_CHARS:
        raise InvalidInput(
            f"value: at least {MIN_SECRET_CHARS} characters (shorter values cannot be masked in logs)", field="value"
        )
    if len(value.encode()) > MAX_SECRET_BYTES:
        raise InvalidInput(f"value: at most {MAX_SECRET_BYTES} bytes", field="value")
    return value


def check_scope(workflows: Any) -> list[str] | None:
    """``workflows`` of a PUT: None (every workflow) or 1 to 100 workflow ids, deduplicated and sorted."""
    if workflows is None:
        return None
    if not isinstance(workflows, list) or not workflows or len(workflows) > MAX_SCOPE_WORKFLOWS:
        raise InvalidInput(
            f"workflows: a list of 1 to {MAX_SCOPE_WORKFLOWS} workflow ids (leave it out for every workflow)",
            field="workflows",
        )
    for index, wf_id in enumerate(workflows):
        if not isinstance(wf_id, str):
            raise InvalidInput(f"workflows[{index}]: a workflow id", field="workflows")
        check_id(wf_id, f"workflows[{index}]")
    return sorted(set(workflows))


def usable_by(scope: list[str] | None, run_ids: Iterable[str | None]) -> bool:
    """Whether a run known by ``run_ids`` (its id, its template's, its retry root's) may use a secret
    limited to ``scope`` (None: every run may)."""
    if scope is None:
        return True
    allowed = set(scope)
    return any(i is not None and i in allowed for i in run_ids)


def run_ids(wf_id: str | None, origin: Origin) -> tuple[str | None, ...]:
    """What a run is known by for a secret's scope: its id, its template's, its retry root's."""
    return (wf_id, origin.template_id, origin.root_id)


def _meta(name: str, raw: bytes | str) -> dict[str, Any]:
    record = json.loads(raw)
    return {"name": name, "created_at": record.get("created_at"), "updated_at": record.get("updated_at"),
            "workflows": record.get("workflows")}


class SecretStore:
    def __init__(self, redis: Redis, keys: Keyspace, cipher: SecretCipher | None) -> None:
        self.redis = redis
        self.key = keys.secrets
        self.cipher = cipher

    def _need_cipher(self) -> SecretCipher:
        if self.cipher is None:
            raise ServiceUnavailable(
                "secrets are disabled: this gateway listens beyond loopback and FLOW_SECRETS_KEY is not set"
            )
        return self.cipher

    async def put(
        self, name: str, value: str, *, workflows: list[str] | None = None, now: float | None = None
    ) -> dict[str, Any]:
        """Create or replace a secret (and its scope: ``workflows``, None for every workflow); its
        metadata (never the value)."""
        check_id(name, "name")
        cipher = self._need_cipher()
        value = check_value(value)
        scope = check_scope(workflows)
        now = time.time() if now is None else now
        try:
            old = await self.redis.hget(self.key, name)
            if old is None and await self.redis.hlen(self.key) >= MAX_SECRETS:
                raise InvalidInput(f"at most {MAX_SECRETS} secrets", field="name")
            created = json.loads(old)["created_at"] if old is not None else now
            record = {"ct": cipher.encrypt(name, value), "created_at": created, "updated_at": now,
                      "workflows": scope}
            await self.redis.hset(self.key, name, json.dumps(record))
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
        return {"name": name, "created_at": created, "updated_at": now, "workflows": scope}

    async def delete(self, name: str) -> None:
        check_id(name, "name")
        try:
            gone = await self.redis.hdel(self.key, name)
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
        if not gone:
            raise NotFound(f"no secret {name!r}")

    async def describe(self, name: str) -> dict[str, Any]:
        check_id(name, "name")
        raw = await self.redis.hget(self.key, name)
        if raw is None:
            raise NotFound(f"no secret {name!r}")
        return _meta(name, raw)

    async def list(self) -> list[dict[str, Any]]:
        raw = await self.redis.hgetall(self.key)
        items = [_meta(k.decode() if isinstance(k, bytes) else k, v) for k, v in raw.items()]
        return sorted(items, key=lambda item: str(item["name"]))

    async def values(self, names: Iterable[str], run_ids: tuple[str | None, ...]) -> dict[str, str]:
        """The values of ``names`` for one task of the run known by ``run_ids`` (the worker);
        SecretUnavailable naming a missing one or one limited to other workflows."""
        wanted = sorted(set(names))
        if not wanted:
            return {}
        if self.cipher is None:
            raise SecretUnavailable("this worker has no secrets key: set FLOW_SECRETS_KEY (the gateway's)")
        raws = await self.redis.hmget(self.key, wanted)
        out: dict[str, str] = {}
        for name, raw in zip(wanted, raws, strict=True):
            if raw is None:
                raise SecretUnavailable(f"secret {name!r} is not set (PUT /v1/secrets/{name}, or flow secret set)")
            record = json.loads(raw)
            if not usable_by(record.get("workflows"), run_ids):
                raise SecretUnavailable(_limited(name, run_ids[0]))
            out[name] = self.cipher.decrypt(name, record["ct"])
        return out

    async def check_usable(self, names: Iterable[str], run_ids: tuple[str | None, ...]) -> None:
        """Forbidden naming the first of ``names`` that exists and is limited to other workflows (the
        gateway, before it starts a run; a secret that is not set fails the task later, as it may be
        stored meanwhile)."""
        wanted = sorted(set(names))
        if not wanted:
            return
        try:
            raws = await self.redis.hmget(self.key, wanted)
        except RedisError as exc:
            raise ServiceUnavailable(f"redis is unreachable: {exc}") from exc
        for name, raw in zip(wanted, raws, strict=True):
            if raw is not None and not usable_by(json.loads(raw).get("workflows"), run_ids):
                raise Forbidden(_limited(name, run_ids[0]), field="env")


def _limited(name: str, wf_id: str | None) -> str:
    who = f"workflow {wf_id!r}" if wf_id else "a new workflow"
    return (f"secret {name!r} is limited to some workflows and {who} is not one of them, nor fired from or"
            " a retry of one")
