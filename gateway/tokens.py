"""``python -m gateway.tokens``: make a scoped API token, or hash one, for ``FLOW_API_TOKENS``.

- ``python -m gateway.tokens new NAME [--scope read ...] [--workflow ID ...]`` prints a new random
  token (256 bits; give it to its holder, it is shown once) and the settings entry that accepts it.
- ``python -m gateway.tokens hash`` reads a token from standard input (never from the command line,
  which other users can see in the process list) and prints its ``sha256:`` hash.

The gateway never holds a scoped token in clear: only its hash is configured (docs/security.md).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys

from pydantic import ValidationError

from flowcore.settings import TOKEN_SCOPES, ApiToken
from gateway.scopes import hash_token

MIN_TOKEN_CHARS = 24
TOKEN_BYTES = 32


def entry(name: str, token: str, scopes: list[str], workflows: list[str] | None) -> dict[str, object]:
    """The ``FLOW_API_TOKENS`` item of ``token`` (validated like the settings would)."""
    doc: dict[str, object] = {"name": name, "hash": hash_token(token), "scopes": scopes}
    if workflows:
        doc["workflows"] = workflows
    ApiToken.model_validate(doc)
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.tokens", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new", help="make a random token and print its settings entry")
    new.add_argument("name", help="the token's name (letters, digits, '.', '_', '-')")
    new.add_argument("--scope", action="append", choices=TOKEN_SCOPES, help="repeatable; default: read")
    new.add_argument("--workflow", action="append", help="limit the token to this workflow or template (repeatable)")
    sub.add_parser("hash", help="print the sha256: hash of a token read from standard input")
    args = parser.parse_args(argv)
    if args.command == "hash":
        token = sys.stdin.readline().strip()
        if len(token) < MIN_TOKEN_CHARS:
            print(f"error: a token needs at least {MIN_TOKEN_CHARS} characters (use `new` to make one)", file=sys.stderr)
            return 2
        print(hash_token(token))
        return 0
    token = secrets.token_urlsafe(TOKEN_BYTES)
    try:
        doc = entry(args.name, token, args.scope or ["read"], args.workflow)
    except ValidationError as exc:
        print(f"error: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    print(f"token (give it to its holder; it is not shown again): {token}")
    print(f"FLOW_API_TOKENS item: {json.dumps(doc)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
