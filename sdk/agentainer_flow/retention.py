"""Deleting workflows by filter (``DELETE /v1/workflows``): old runs, failed runs, a project's runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic import Field

from agentainer_flow._base import BaseClient
from agentainer_flow.models import WorkflowStatus, _Reader


class BulkDeleteResult(_Reader):
    """What a delete by filter did (or, with ``dry_run``, would do)."""

    dry_run: bool = False
    deleted: list[str] = Field(default_factory=list, description="Ids deleted by this call.")
    would_delete: list[str] = Field(default_factory=list, description="With dry_run: the ids it would delete.")
    count: int = 0
    matched: int = 0
    scanned: int = 0
    skipped_running: int = Field(0, description="Matched, but started before they could be deleted.")
    skipped_templates: int = Field(0, description="Matched, but templates of triggers: never deleted by a filter.")
    more: bool = Field(False, description="Another call would find more (limit or scan bound reached).")


def _when(value: datetime | float | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("give a timezone-aware datetime (e.g. datetime.now(UTC))")
        return value.isoformat()
    return str(value)


class RetentionAPI(BaseClient):
    async def delete_workflows(
        self,
        *,
        status: WorkflowStatus | str | Iterable[WorkflowStatus | str] | None = None,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        created_before: datetime | float | str | None = None,
        finished_before: datetime | float | str | None = None,
        older_than: str | None = None,
        limit: int = 100,
        dry_run: bool = False,
    ) -> BulkDeleteResult:
        """Delete up to ``limit`` finished (or never-started) workflows that match every given condition.

        At least one condition is required (the server answers 422 otherwise). Running workflows and
        templates of triggers are never deleted; ``dry_run=True`` only lists what would go.
        ``older_than`` is a duration (``"7d"``): finished more than that long ago.
        """
        statuses = [status] if isinstance(status, str | WorkflowStatus) else list(status or [])
        params: list[tuple[str, Any]] = [("status", str(WorkflowStatus(str(s).lower()))) for s in statuses]
        if name is not None:
            params.append(("name", name))
        params += [("label", f"{key}={value}") for key, value in (labels or {}).items()]
        for key, value in (("created_before", _when(created_before)), ("finished_before", _when(finished_before)),
                           ("older_than", older_than)):
            if value is not None:
                params.append((key, value))
        params += [("limit", limit), ("dry_run", "true" if dry_run else "false")]
        return BulkDeleteResult.read(await self._request("DELETE", "/v1/workflows", params=params))
