"""``flow secret set|list|rm``: stored secrets. A value is read from stdin (or a hidden prompt), never
taken from the command line, where shell history and ``ps`` would keep it."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

from agentainer_flow.cli_commands import UsageError, dump, out, table

if TYPE_CHECKING:
    from agentainer_flow.client import WorkflowClient


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    secret = sub.add_parser("secret", help="stored secrets: set (value from stdin), list, rm")
    ssub = secret.add_subparsers(dest="action", required=True, metavar="ACTION")
    setter = ssub.add_parser("set", help="store a secret; the value is read from stdin (or prompted)")
    setter.add_argument("name")
    setter.add_argument("--workflow", action="append", dest="workflows", metavar="ID",
                        help="only runs of this workflow or template may use it (repeat for several)")
    ssub.add_parser("list", help="names and times (values are never shown)")
    ssub.add_parser("rm", help="delete a secret").add_argument("name")


def _read_value() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("value: ")
    value = sys.stdin.read()
    return value[:-1] if value.endswith("\n") else value  # `echo v | flow secret set`: no trailing newline


async def secret(client: WorkflowClient, args: argparse.Namespace) -> int:
    if args.action == "set":
        value = _read_value()
        if not value:
            raise UsageError("no value on stdin")
        info = await client.set_secret(args.name, value, workflows=args.workflows)
        scope = f" (usable by {', '.join(info.workflows)})" if info.workflows else ""
        out(f"{info.name} set{scope}; refer to it as ${{{{ secrets.{info.name} }}}} in a step's env")
        return 0
    if args.action == "rm":
        await client.delete_secret(args.name)
        out(f"{args.name} deleted")
        return 0
    items = await client.list_secrets()
    if args.json:
        dump([i.model_dump(mode="json") for i in items])
        return 0
    rows = [[i.name, ",".join(i.workflows) if i.workflows else "*", str(i.created_at or "-")[:19],
             str(i.updated_at or "-")[:19]] for i in items]
    out(table(rows, ["NAME", "WORKFLOWS", "CREATED", "UPDATED"]))
    return 0
