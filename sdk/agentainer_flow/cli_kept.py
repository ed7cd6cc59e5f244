"""``flow kept`` and ``flow inspect``: containers a cleanup policy ``keep`` quarantined (``/v1/kept``).

- ``flow kept [WORKFLOW]``: list them (all, or one workflow's);
- ``flow kept rm CONTAINER``: remove one now;
- ``flow inspect WORKFLOW STEP [--copy PATH DEST] [--tail N]``: the latest kept container of that
  step: its record and logs, and with ``--copy`` the files under PATH extracted into DEST.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from agentainer_flow.cli_commands import UsageError, dump, out, table
from agentainer_flow.kept import KeptContainer, extract_archive

if TYPE_CHECKING:
    from agentainer_flow.client import WorkflowClient


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kept = sub.add_parser("kept", help="containers kept for inspection: list them, or 'rm CONTAINER'")
    kept.add_argument("args", nargs="*", metavar="WORKFLOW | rm CONTAINER")
    inspect = sub.add_parser("inspect", help="the kept container of a workflow's step: record, logs, files")
    inspect.add_argument("workflow_id")
    inspect.add_argument("step")
    inspect.add_argument("--copy", nargs=2, metavar=("PATH", "DEST"), help="extract PATH's files into DEST")
    inspect.add_argument("--tail", type=int, default=50, help="log lines to print (default 50)")


def _rows(items: list[KeptContainer]) -> list[list[str]]:
    return [
        [k.container_id[:12], k.workflow_id, f"{k.step_id}#{k.index}", str(k.attempt), k.outcome, k.status,
         k.expires_at]
        for k in items
    ]


async def kept(client: WorkflowClient, args: argparse.Namespace) -> int:
    words: list[str] = list(args.args)
    if words[:1] == ["rm"]:
        if len(words) != 2:
            raise UsageError("usage: flow kept rm CONTAINER")
        await client.remove_kept_container(words[1])
        out(f"removed {words[1]}")
        return 0
    if len(words) > 1:
        raise UsageError("usage: flow kept [WORKFLOW] | flow kept rm CONTAINER")
    items = await client.list_kept_containers(words[0] if words else None)
    if args.json:
        dump([k.model_dump(mode="json") for k in items])
    elif not items:
        out("no kept containers")
    else:
        out(table(_rows(items), ["CONTAINER", "WORKFLOW", "STEP", "ATTEMPT", "OUTCOME", "STATUS", "EXPIRES"]))
    return 0


async def inspect(client: WorkflowClient, args: argparse.Namespace) -> int:
    found = [k for k in await client.list_kept_containers(args.workflow_id) if k.step_id == args.step]
    if not found:
        raise UsageError(f"no kept container for step {args.step!r} of {args.workflow_id}")
    latest = found[-1]  # oldest first: the last one is the latest attempt kept
    written: list[str] = []
    if args.copy:
        path, dest = args.copy
        written = extract_archive(await client.copy_from_kept(latest.container_id, path), dest)
    logs = await client.get_kept_logs(latest.container_id, tail=args.tail)
    if args.json:
        dump({"kept": latest.model_dump(mode="json"), "logs": logs, "copied": written})
        return 0
    out(table(_rows([latest]), ["CONTAINER", "WORKFLOW", "STEP", "ATTEMPT", "OUTCOME", "STATUS", "EXPIRES"]))
    out(f"reason: {latest.reason}")
    if logs.strip():
        out("--- container logs ---")
        out(logs.rstrip("\n"))
    for name in written:
        out(f"copied {name}")
    return 0
