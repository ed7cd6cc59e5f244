"""Kept containers (``/v1/kept``): task containers a cleanup policy ``keep`` quarantined for inspection.

A workflow (``config.cleanup``) or a step (``cleanup``) says what happens to a task's container:
``{"on_success": "return", "on_failure": "keep", "keep_for": "1h"}``. A kept container is frozen
(paused), never reused, and removed when its time is up, when its workflow is deleted, or now with
:meth:`KeptAPI.remove_kept_container`. Its logs and files stay readable meanwhile.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

from pydantic import Field

from agentainer_flow._base import BaseClient, seg
from agentainer_flow.errors import ValidationError
from agentainer_flow.models import _Reader


class KeptContainer(_Reader):
    """A container kept after its task (see the module docstring)."""

    container_id: str
    name: str = ""
    service_id: str = ""
    workflow_id: str = ""
    step_id: str = ""
    task_id: str = ""
    index: int = 0
    attempt: int = 1
    outcome: str = Field("failed", description="succeeded or failed: which policy kept it.")
    reason: str = ""
    error_kind: str | None = None
    image: str = ""
    kept_at: str = ""
    expires_at: str = ""
    status: str = Field("paused", description="paused (frozen), or exited when it had died.")


class KeptAPI(BaseClient):
    async def list_kept_containers(self, workflow_id: str | None = None) -> list[KeptContainer]:
        """The kept containers (oldest first), of one workflow when ``workflow_id`` is given."""
        params = {"workflow_id": workflow_id} if workflow_id else None
        data = await self._request("GET", "/v1/kept", params=params)
        return [KeptContainer.read(k) for k in (data or {}).get("kept", [])]

    async def get_kept_container(self, container_id: str) -> KeptContainer:
        """One kept container, by its id or a unique prefix of 12 or more characters."""
        return KeptContainer.read(await self._request("GET", f"/v1/kept/{seg(container_id)}"))

    async def remove_kept_container(self, container_id: str) -> None:
        """Remove a kept container now (``DELETE /v1/kept/{id}``)."""
        await self._request("DELETE", f"/v1/kept/{seg(container_id)}")

    async def get_kept_logs(self, container_id: str, tail: int | None = None) -> str:
        """The kept container's own output (its task's lines are in the workflow's logs)."""
        params = {"tail": tail} if tail is not None else None
        response = await self._send("GET", f"/v1/kept/{seg(container_id)}/logs", params=params)
        return response.text

    async def copy_from_kept(self, container_id: str, path: str | None = None) -> bytes:
        """A tar of ``path`` in the kept container (default ``/flow/task``, the tasks' directories;
        relative paths are taken under it): regular files and directories only, size-capped."""
        params = {"path": path} if path else None
        response = await self._send("GET", f"/v1/kept/{seg(container_id)}/files", params=params)
        return response.content


def extract_archive(data: bytes, dest: str | Path) -> list[str]:
    """Extract a tar from :meth:`KeptAPI.copy_from_kept` into ``dest``; the names written.

    Defence in depth (the pool already re-packs regular files and directories only): each member is
    checked to stay inside ``dest``; links, devices and absolute or ``..`` names are refused.
    """
    root = Path(dest).resolve()
    root.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for member in archive.getmembers():
            target = (root / member.name).resolve()
            if not (member.isreg() or member.isdir()) or not target.is_relative_to(root) or target == root:
                raise ValidationError(f"refusing to extract {member.name!r}: not a plain file inside {root}")
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source: Any = archive.extractfile(member)
            with open(target, "wb") as out:
                out.write(source.read() if source is not None else b"")
            written.append(member.name)
    return written
