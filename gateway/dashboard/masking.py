"""Secrets in environment values never reach the dashboard.

A step's ``env``, an agent's ``env``: whatever a browser session reads from the API has the values
of secret-looking variables replaced by :data:`MASK`. :func:`mask_secrets` does it on a JSON value
(pure); :class:`MaskSecrets` applies it to the JSON answers of requests that a dashboard session
cookie authenticated (``scope["state"]["auth"] == "session"``, set by :class:`gateway.middleware.
TokenAuth`). Bearer-token clients (the SDK, the CLI) get the values unchanged: they hold the token
that could read them anyway, and a definition must survive a round trip through them.

A variable is secret when its name matches :data:`SECRET_NAME` (token, secret, password, key,
credential, auth, private, cookie, session, signature, certificate, dsn, ...). Within an env
mapping every such value is masked, whatever it holds; ``["NAME=value"]`` lists are handled too.
Server-sent events and streamed text (logs) are not rewritten: they carry no env mappings.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MASK = "••••••••"
SECRET_NAME = re.compile(
    r"token|secret|passw|pwd|passphrase|key|credential|auth|private|cookie|session|signature|cert|dsn|salt",
    re.IGNORECASE,
)
ENV_FIELDS = frozenset({"env", "environment", "env_vars"})


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def _mask_env(env: Any) -> Any:
    if isinstance(env, dict):
        return {
            k: (MASK if isinstance(k, str) and is_secret_name(k) and v not in (None, "") else mask_secrets(v))
            for k, v in env.items()
        }
    if isinstance(env, list):
        out: list[Any] = []
        for item in env:
            if isinstance(item, str) and "=" in item:
                name, _, value = item.partition("=")
                out.append(f"{name}={MASK}" if is_secret_name(name) and value else item)
            else:
                out.append(mask_secrets(item))
        return out
    return mask_secrets(env)


def mask_secrets(value: Any) -> Any:
    """``value`` with the secret values of every env mapping in it masked (a new value; input unchanged)."""
    if isinstance(value, dict):
        return {k: _mask_env(v) if k in ENV_FIELDS else mask_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name.lower() == b"content-type":
            ctype = value.split(b";")[0].strip().lower()
            return ctype == b"application/json" or ctype.endswith(b"+json")
    return False


class MaskSecrets:
    """Rewrites the JSON answers of dashboard sessions with :func:`mask_secrets` (pure ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("state")
        session = isinstance(state, dict) and state.get("auth") == "session"
        if scope["type"] != "http" or not session or scope.get("method") == "HEAD":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def masking_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                if _is_json(list(message.get("headers", []))):
                    start = message  # held until the whole body is here
                    return
                await send(message)
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            await self._send_masked(send, start, b"".join(chunks))

        await self.app(scope, receive, masking_send)

    @staticmethod
    async def _send_masked(send: Send, start: Message, body: bytes) -> None:
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        if not body.strip():
            masked = body  # an empty answer holds nothing to mask
        else:
            try:
                masked = json.dumps(mask_secrets(json.loads(body)), ensure_ascii=False, separators=(",", ":")).encode()
            except ValueError:  # unreadable (compressed, broken upstream): fail closed, it could hold secrets
                start = {**start, "status": 502}
                headers = [(k, v) for k, v in headers if k.lower() not in (b"content-encoding", b"content-type")]
                headers.append((b"content-type", b"application/json"))
                masked = json.dumps(
                    {"error": "unmaskable_answer", "message": "the answer is not readable JSON, so it is not shown to a browser session"}
                ).encode()
        headers.append((b"content-length", str(len(masked)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": masked})
