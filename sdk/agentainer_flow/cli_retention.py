"""``flow delete``: delete workflows by id, or by filter (``DELETE /v1/workflows``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from agentainer_flow.cli_commands import UsageError, dump, out

if TYPE_CHECKING:
    from agentainer_flow.client import WorkflowClient

MAX_PAGES = 1000


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rm = sub.add_parser(
        "delete",
        help="delete workflows by id, or every finished one a filter selects (e.g. --status failed --older-than 7d)",
    )
    rm.add_argument("ids", nargs="*", help="workflow ids (finished or never started)")
    rm.add_argument("--status", action="append", choices=["pending", "completed", "failed", "cancelled"],
                    help="only these statuses (repeat it; default: the finished ones)")
    rm.add_argument("--name", help="only workflows of this name")
    rm.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="only with this label (repeat it)")
    rm.add_argument("--older-than", help="finished more than this long ago (7d, 12h, 30m)")
    rm.add_argument("--created-before", help="created before this ISO-8601 time")
    rm.add_argument("--finished-before", help="finished before this ISO-8601 time")
    rm.add_argument("--limit", type=int, default=100, help="at most this many per request (1..1000, default 100)")
    rm.add_argument("--all", action="store_true", help="repeat until nothing more matches")
    rm.add_argument("--dry-run", action="store_true", help="only list what would be deleted")


def _labels(pairs: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--label takes KEY=VALUE, got {pair!r}")
        labels[key] = value
    return labels


async def delete(client: WorkflowClient, args: argparse.Namespace) -> int:
    filtering = any((args.status, args.name, args.label, args.older_than, args.created_before, args.finished_before))
    if args.ids and filtering:
        raise UsageError("give workflow ids or a filter, not both")
    if args.ids:
        for wf_id in args.ids:
            if not args.dry_run:
                await client.delete_workflow(wf_id)
            out(f"{wf_id} {'would be deleted' if args.dry_run else 'deleted'}")
        return 0
    if not filtering:
        raise UsageError("say what to delete: ids, or --status/--name/--label/--older-than/--created-before/"
                         "--finished-before")
    ids: list[str] = []
    skipped_templates = skipped_running = 0
    for _ in range(MAX_PAGES):
        result = await client.delete_workflows(
            status=args.status, name=args.name, labels=_labels(args.label), older_than=args.older_than,
            created_before=args.created_before, finished_before=args.finished_before, limit=args.limit,
            dry_run=args.dry_run,
        )
        ids += result.would_delete if args.dry_run else result.deleted
        skipped_templates, skipped_running = result.skipped_templates, skipped_running + result.skipped_running
        if not (args.all and result.more) or args.dry_run:
            break
    if args.json:
        dump({"dry_run": args.dry_run, "ids": ids, "skipped_templates": skipped_templates,
              "skipped_running": skipped_running})
        return 0
    for wf_id in ids:
        out(wf_id)
    verb = "would delete" if args.dry_run else "deleted"
    kept = f"; kept {skipped_templates} trigger template(s)" if skipped_templates else ""
    out(f"{verb} {len(ids)} workflow(s){kept}")
    return 0
