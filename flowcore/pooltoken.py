"""The pool token: the secret the gateway, the workers and the pool services share.

It authenticates every call to the pool API (``Authorization: Bearer <token>``) and keys the HMAC
that signs pool registrations in Redis (:mod:`flowcore.poolsigning`). It is not a user token: nothing
outside the stack's own processes ever holds it.

:func:`resolve` decides which token a process uses, once, at start-up:

- ``FLOW_POOL_TOKEN`` when it is set (any deployment beyond one machine sets it);
- otherwise, for a pool service bound to a non-loopback address, nothing: :class:`ConfigError`;
- otherwise (a loopback dev stack) the random token kept in ``pool_token_file`` (default
  ``.flow/pool.token``), created ``0600`` by whichever process starts first. Every process of the
  stack runs from the checkout, so they all read the same file, and a web page or another user of
  the machine cannot guess it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from pydantic import SecretStr

from flowcore.errors import ConfigError
from flowcore.settings import is_loopback

TOKEN_BYTES = 32
MAX_TOKEN_FILE_BYTES = 4096


def resolve(configured: SecretStr, token_file: str | Path, *, bind_host: str | None = None) -> str:
    """The pool token of this process. ``bind_host``: the address a pool service listens on."""
    token = configured.get_secret_value().strip()
    if token:
        return token
    if bind_host is not None and not is_loopback(bind_host):
        raise ConfigError(
            f"the pool service binds {bind_host}, which is not loopback, and no pool token is configured: "
            "set FLOW_POOL_TOKEN (the same value for the gateway, the workers and every pool service)"
        )
    return read_or_create(Path(token_file))


def read_or_create(path: Path) -> str:
    """The token in ``path``; a new random one written there (mode 0600) when there is none yet."""
    existing = _read(path)
    if existing:
        return existing
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
        # link() fails when another process won the race: then its token is the one to use. The file
        # only ever appears complete, so a concurrent reader never sees a half-written token.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    winner = _read(path)
    if not winner:
        raise ConfigError(f"cannot keep the pool token in {path}: set FLOW_POOL_TOKEN")
    return winner


def _read(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the pool token file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"the pool token file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise ConfigError(f"the pool token file {path} is readable by others: chmod 600 it or remove it")
        text = handle.read(MAX_TOKEN_FILE_BYTES).decode(errors="replace").strip()
    return text or None


def bearer(token: str) -> dict[str, str]:
    """The header that authenticates a call to the pool API."""
    return {"Authorization": f"Bearer {token}"}

