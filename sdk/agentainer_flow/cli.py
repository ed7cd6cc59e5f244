"""``flow``: the command line of Agentainer Flow (see docs/cli.md).

Exit codes: 0 success (``run --wait``: the workflow completed), 1 the workflow failed or was
cancelled, 2 a usage error, an API error answer or an unreachable API. ``--json`` prints machine-
readable JSON on stdout instead of tables. ``--url`` / ``--token`` default to ``$FLOW_URL`` /
``$FLOW_TOKEN``, then to ``http://localhost:8081`` and ``default-token``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import httpx

from agentainer_flow import cli_commands as cmd
from agentainer_flow import cli_kept, cli_retention, cli_secrets
from agentainer_flow.errors import AgentainerError

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flow", description="Agentainer Flow: run and inspect workflows.")
    parser.add_argument("--url", help="API base URL (default $FLOW_URL or http://localhost:8081)")
    parser.add_argument("--token", help="API token (default $FLOW_TOKEN or default-token)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument("--timeout", type=float, default=30.0, help="request timeout in seconds (default 30)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("up", help="start the local stack (make up / scripts/stack.sh up)")
    sub.add_parser("down", help="stop the local stack")
    sub.add_parser("status", help="health of the gateway and workflow counts")

    run = sub.add_parser("run", help="submit a workflow definition (YAML or JSON) and start it")
    run.add_argument("file", help="definition file, or - for stdin")
    run.add_argument("--wait", action="store_true", help="follow it until it finishes; exit 1 if it fails")
    run.add_argument("--input", help="workflow input as JSON (replaces the file's input)")
    run.add_argument("--wait-timeout", type=float, default=None, help="give up waiting after this many seconds")

    ls = sub.add_parser("list", help="list workflows, newest first")
    ls.add_argument("--status", choices=["pending", "queued", "running", "completed", "failed", "cancelled"])
    ls.add_argument("--limit", type=int, default=50)

    get = sub.add_parser("get", help="a workflow with its steps")
    get.add_argument("id")

    logs = sub.add_parser("logs", help="the output lines of a workflow's tasks")
    logs.add_argument("id")
    logs.add_argument("step", nargs="?")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the workflow finishes")

    cancel = sub.add_parser("cancel", help="cancel a workflow")
    cancel.add_argument("id")

    cli_retention.add_parser(sub)
    cli_secrets.add_parser(sub)
    cli_kept.add_parsers(sub)

    for verb in ("approve", "reject"):  # approval steps (a token with the approve scope)
        decide = sub.add_parser(verb, help=f"{verb} a waiting approval step")
        decide.add_argument("id")
        decide.add_argument("step")
        decide.add_argument("--comment", "-m", help="recorded with who decided and when")

    state = sub.add_parser("state", help="read or set a workflow's state")
    state.add_argument("id")
    state.add_argument("key", nargs="?")
    state.add_argument("--set", dest="value", metavar="VALUE", help="set KEY to VALUE (JSON, else a string)")

    trig = sub.add_parser("trigger", help="triggers: list, schedule, fire, enable, disable, delete")
    tsub = trig.add_subparsers(dest="action", required=True, metavar="ACTION")
    tsub.add_parser("list", help="triggers of a workflow").add_argument("workflow_id")
    sched = tsub.add_parser("schedule", help="run a workflow on a cron schedule")
    sched.add_argument("workflow_id")
    sched.add_argument("cron")
    sched.add_argument("--timezone", default="UTC")
    sched.add_argument("--input", help="input as JSON")
    fire = tsub.add_parser("fire", help="start a new run of a workflow now; prints its id")
    fire.add_argument("workflow_id")
    fire.add_argument("--input", help="input as JSON")
    for action in ("get", "enable", "disable", "delete"):
        tsub.add_parser(action, help=f"{action} a trigger").add_argument("trigger_id")

    agents = sub.add_parser("agents", help="agents: list, deploy, get, start, stop, logs, rm")
    asub = agents.add_subparsers(dest="action", required=True, metavar="ACTION")
    asub.add_parser("list", help="all agents")
    deploy = asub.add_parser("deploy", help="create an agent")
    deploy.add_argument("name")
    deploy.add_argument("image")
    deploy.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    deploy.add_argument("--workflow-id")
    deploy.add_argument("--start", action="store_true", help="start it at once")
    for action in ("get", "start", "stop", "rm"):
        asub.add_parser(action, help=f"{action} an agent").add_argument("agent_id")
    alogs = asub.add_parser("logs", help="an agent's logs")
    alogs.add_argument("agent_id")
    alogs.add_argument("--follow", "-f", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None, *, transport: httpx.AsyncBaseTransport | None = None) -> int:
    """Run ``flow`` with ``argv``; returns the exit code. ``transport`` is for tests."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help is 0, usage errors 2
        return int(exc.code or 0)
    try:
        if args.command in ("up", "down"):
            return cmd.stack(args.command)
        result: int = asyncio.run(_dispatch(args, transport))
        return result
    except cmd.UsageError as exc:
        print(f"flow: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except AgentainerError as exc:
        print(f"flow: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


async def _dispatch(args: argparse.Namespace, transport: httpx.AsyncBaseTransport | None) -> int:
    from agentainer_flow.client import WorkflowClient

    async with WorkflowClient(args.url, args.token, args.timeout, transport=transport) as client:
        handler: Any = {
            "status": cmd.status,
            "run": cmd.run,
            "list": cmd.list_workflows,
            "get": cmd.get,
            "logs": cmd.logs,
            "cancel": cmd.cancel,
            "delete": cli_retention.delete,
            "secret": cli_secrets.secret,
            "approve": cmd.decide,
            "reject": cmd.decide,
            "state": cmd.state,
            "trigger": cmd.trigger,
            "agents": cmd.agents,
            "kept": cli_kept.kept,
            "inspect": cli_kept.inspect,
        }[args.command]
        code: int = await handler(client, args)
        return code


if __name__ == "__main__":
    sys.exit(main())
