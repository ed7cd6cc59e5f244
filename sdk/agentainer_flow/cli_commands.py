"""The commands of ``flow`` (:mod:`agentainer_flow.cli` parses the arguments and maps exit codes)."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentainer_flow.errors import ClientError
from agentainer_flow.execution import WorkflowExecution
from agentainer_flow.models import Step, Workflow, WorkflowStatus

if TYPE_CHECKING:
    from agentainer_flow.client import WorkflowClient

POLL_S = 0.2


class UsageError(Exception):
    """A command line that cannot be acted on (exit code 2)."""


def out(text: str = "") -> None:
    print(text, flush=True)


def dump(data: Any) -> None:
    out(json.dumps(data, indent=2, default=str, sort_keys=False))


def parse_json(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} must be JSON: {exc}") from None


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


# ---- the local stack ------------------------------------------------------------------------------
def repo_root(start: Path | None = None) -> Path | None:
    for path in [start or Path.cwd(), *(start or Path.cwd()).parents]:
        if (path / "scripts" / "stack.sh").is_file() and (path / "Makefile").is_file():
            return path
    return None


def stack(action: str) -> int:
    root = repo_root()
    if root is None:
        raise UsageError(f"`flow {action}` runs the project's scripts/stack.sh: run it inside the checkout")
    return subprocess.call([str(root / "scripts" / "stack.sh"), action], cwd=root)


async def status(client: WorkflowClient, args: argparse.Namespace) -> int:
    health = await client.health()
    counts: dict[str, int] = {}
    for s in WorkflowStatus:
        data = await client._request("GET", "/v1/workflows", params={"status": s.value, "limit": 1})
        counts[s.value] = int(data.get("total", 0))
    if args.json:
        dump({"url": client.base_url, "health": health, "workflows": counts})
    else:
        out(f"gateway  {client.base_url}  {health.get('status', '?')} (redis {health.get('redis', '?')})")
        out("workflows  " + "  ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


# ---- workflows ------------------------------------------------------------------------------------
def read_definition(path: str, input_json: str | None) -> dict[str, Any] | str:
    text = sys.stdin.read() if path == "-" else _read(path)
    data_input = parse_json(input_json, "--input")
    if text.lstrip().startswith("{"):
        definition = parse_json(text, path)
    elif input_json is None:
        return text  # YAML as it is: the gateway parses it and names any mistake
    else:
        try:
            import yaml
        except ImportError:
            raise UsageError("--input with a YAML file needs PyYAML (pip install 'agentainer-flow[yaml]')") from None
        try:
            definition = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"{path}: malformed YAML: {exc}") from None
    if not isinstance(definition, dict):
        raise UsageError(f"{path}: a definition is a mapping with name and steps")
    if data_input is not None:
        definition["input"] = data_input
    return definition


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def progress_line(s: Step) -> str:
    bar = ""
    if s.total:
        done = (s.succeeded or 0) + (s.failed or 0)
        filled = int(20 * done / s.total)
        bar = f" [{'#' * filled}{'.' * (20 - filled)}] {done}/{s.total}"
    return f"  {time.strftime('%H:%M:%S')}  {s.id:<20} {s.status.value:<10}{bar} {secs(s.duration_s) if s.status.finished else ''}"


def final_table(wf: Workflow) -> str:
    rows = []
    for s in wf.steps:
        pooled = sum(1 for t in s.tasks if t.pooled)
        rows.append([s.id, s.type.value, s.status.value, secs(s.duration_s), str(s.attempts), f"{pooled}/{len(s.tasks)}"])
    return table(rows, ["STEP", "TYPE", "STATUS", "DURATION", "ATTEMPTS", "POOLED"])


async def run(client: WorkflowClient, args: argparse.Namespace) -> int:
    wf = await client.submit(read_definition(args.file, args.input), start=True)
    if not args.wait:
        dump(wf.model_dump(mode="json")) if args.json else out(wf.id)
        return 0
    if not args.json:
        out(f"workflow {wf.id} ({wf.name}) started")
    seen: dict[str, str] = {}

    def show(current: Workflow, _metrics: dict[str, Any]) -> None:
        for s in current.steps:
            key = f"{s.status.value}:{s.succeeded}:{s.failed}"
            if seen.get(s.id) != key and not (s.status.value == "pending" and s.id not in seen):
                seen[s.id] = key
                if not args.json:
                    out(progress_line(s))

    # The live event stream drives the refreshes; the SDK polls only when the stream is unavailable.
    execution = WorkflowExecution(client, wf)
    try:
        wf = await asyncio.wait_for(execution.monitor(callback=show, interval=POLL_S), args.wait_timeout)
    except TimeoutError:
        out(f"still {execution.status.value} after {args.wait_timeout:g}s: {wf.id}")
        return 1
    if args.json:
        dump(wf.model_dump(mode="json"))
    else:
        out()
        out(final_table(wf))
        out(f"\nworkflow {wf.id} {wf.status.value} in {secs(wf.duration_s)}")
        for sid, error in wf.failed_steps().items():
            out(f"  {sid}: {error}")
    return 0 if wf.status == WorkflowStatus.COMPLETED else 1


async def list_workflows(client: WorkflowClient, args: argparse.Namespace) -> int:
    items = await client.list_workflows(status=args.status, limit=args.limit)
    if args.json:
        dump([w.model_dump(mode="json") for w in items])
        return 0
    rows = [[w.id, w.name, w.status.value, str(w.created_at or "-")[:19], secs(w.duration_s), w.queued_reason or ""]
            for w in items]
    out(table(rows, ["ID", "NAME", "STATUS", "CREATED", "DURATION", "REASON"]))
    return 0


async def get(client: WorkflowClient, args: argparse.Namespace) -> int:
    wf = await client.get_workflow(args.id)
    if args.json:
        dump(wf.model_dump(mode="json"))
        return 0
    out(f"{wf.id}  {wf.name}  {wf.status.value}  {secs(wf.duration_s)}")
    if wf.queued_reason:
        eta = f" (estimated start {wf.estimated_start:%H:%M:%S})" if wf.estimated_start else ""
        out(f"{wf.status.value}: {wf.queued_reason}{eta}")
    if wf.error:
        out(f"error: {wf.error}")
    out(final_table(wf))
    return 0


async def logs(client: WorkflowClient, args: argparse.Namespace) -> int:
    """The workflow's log lines (``GET /v1/workflows/{id}/logs``); followed live with ``--follow``."""
    try:
        if args.follow:
            stream = await client.get_workflow_logs(args.id, args.step, follow=True)
            async for line in stream:
                sys.stdout.write(line)
                sys.stdout.flush()
        else:
            sys.stdout.write(await client.get_workflow_logs(args.id, args.step))
            sys.stdout.flush()
        return 0
    except ClientError as exc:
        if exc.status_code == 422 and exc.field == "step":
            raise UsageError(exc.message) from None
        if not _no_route(exc):
            raise
    return await _log_tails(client, args)


def _no_route(exc: ClientError) -> bool:
    """A gateway without the logs route (older than the SDK) answers 404 'no route' or 405."""
    return exc.status_code in (405, 501) or (exc.status_code == 404 and exc.message.startswith("no route"))


async def _log_tails(client: WorkflowClient, args: argparse.Namespace) -> int:
    """The fallback for gateways without the logs route: the 4 KB tails kept in the task records."""
    printed: dict[tuple[str, int], int] = {}
    while True:
        wf = await client.get_workflow(args.id)
        steps = [s for s in wf.steps if args.step in (None, s.id)]
        if args.step and not steps:
            raise UsageError(f"workflow {wf.id} has no step {args.step!r}")
        for s in steps:
            for t in s.tasks:
                text = t.log_tail or ""
                start = printed.get((s.id, t.index), 0)
                if len(text) > start:
                    prefix = f"[{s.id}]" if len(s.tasks) == 1 else f"[{s.id}#{t.index}]"
                    for line in text[start:].splitlines():
                        out(f"{prefix} {line}")
                    printed[(s.id, t.index)] = len(text)
        if not args.follow or wf.status.finished:
            return 0
        await asyncio.sleep(0.5)


async def cancel(client: WorkflowClient, args: argparse.Namespace) -> int:
    wf = await client.cancel_workflow(args.id)
    dump(wf.model_dump(mode="json")) if args.json else out(f"{wf.id} {wf.status.value}")
    return 0


async def decide(client: WorkflowClient, args: argparse.Namespace) -> int:
    """``flow approve ID STEP`` / ``flow reject ID STEP`` with an optional ``--comment``."""
    call = client.approve if args.command == "approve" else client.reject
    wf = await call(args.id, args.step, args.comment)
    step = next((s for s in wf.steps if s.id == args.step), None)
    if args.json:
        dump(step.model_dump(mode="json") if step is not None else wf.model_dump(mode="json"))
    else:
        out(f"{wf.id} {args.step} {step.status.value if step else '?'} ({args.command}d); workflow {wf.status.value}")
    return 0


async def state(client: WorkflowClient, args: argparse.Namespace) -> int:
    if args.value is not None:
        if args.key is None:
            raise UsageError("--set needs a KEY: flow state ID KEY --set VALUE")
        try:
            value = json.loads(args.value)
        except json.JSONDecodeError:
            value = args.value
        result = await client.update_workflow_state(args.id, args.key, value)
    else:
        result = await client.get_workflow_state(args.id, key=args.key)
    dump(result) if args.json or not isinstance(result, str) else out(result)
    return 0


async def trigger(client: WorkflowClient, args: argparse.Namespace) -> int:
    a = args.action
    result: Any
    if a == "list":
        result = [t.model_dump(mode="json") for t in await client.list_triggers(args.workflow_id)]
    elif a == "schedule":
        t = await client.schedule_workflow(args.workflow_id, args.cron, args.timezone, parse_json(args.input, "--input"))
        result = t.model_dump(mode="json")
    elif a == "fire":
        result = {"workflow_id": await client.trigger_workflow(args.workflow_id, parse_json(args.input, "--input"))}
    elif a == "get":
        result = (await client.get_trigger(args.trigger_id)).model_dump(mode="json")
    elif a == "delete":
        await client.delete_trigger(args.trigger_id)
        result = {"deleted": args.trigger_id}
    else:
        t2 = await (client.enable_trigger if a == "enable" else client.disable_trigger)(args.trigger_id)
        result = t2.model_dump(mode="json") if t2 else {"id": args.trigger_id, "enabled": a == "enable"}
    if a == "fire" and not args.json:
        out(result["workflow_id"])
    else:
        dump(result)
    return 0


async def agents(client: WorkflowClient, args: argparse.Namespace) -> int:
    a = args.action
    result: Any
    if a == "list":
        result = [x.model_dump(mode="json") for x in await client.list_agents()]
    elif a == "deploy":
        env = dict(item.split("=", 1) for item in args.env if "=" in item)
        agent = await client.deploy_agent(args.name, args.image, env_vars=env, workflow_id=args.workflow_id)
        if args.start:
            agent = await client.start_agent(agent.id)
        result = agent.model_dump(mode="json")
    elif a == "logs":
        if args.follow:
            stream = await client.get_agent_logs(args.agent_id, follow=True)
            async for line in stream:
                sys.stdout.write(line)
                sys.stdout.flush()
            return 0
        sys.stdout.write(await client.get_agent_logs(args.agent_id))
        return 0
    elif a == "rm":
        await client.remove_agent(args.agent_id)
        result = {"deleted": args.agent_id}
    else:
        fn = {"get": client.get_agent, "start": client.start_agent, "stop": client.stop_agent}[a]
        result = (await fn(args.agent_id)).model_dump(mode="json")
    dump(result)
    return 0
