"""Stored secrets (``/v1/secrets``): set, list and delete; a value can be written, never read back.

A step uses one through its env: ``{"env": {"DATABASE_URL": "${{ secrets.db_url }}"}}``. See
docs/security.md#secrets.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import field_validator

from agentainer_flow._base import BaseClient, seg
from agentainer_flow.models import _Reader


class SecretInfo(_Reader):
    """A stored secret's name, scope and times (the API never returns its value)."""

    name: str
    workflows: list[str] | None = None  # the workflows or templates that may use it; None: every workflow
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @field_validator("created_at", "updated_at", mode="before")
    @classmethod
    def _epoch(cls, value: Any) -> Any:
        return datetime.fromtimestamp(value, UTC) if isinstance(value, int | float) else value


def reference(name: str) -> str:
    """What a step's env holds to receive the secret ``name``: ``${{ secrets.name }}``."""
    return "${{ secrets." + name + " }}"


class SecretsAPI(BaseClient):
    async def set_secret(self, name: str, value: str, *, workflows: list[str] | None = None) -> SecretInfo:
        """Store (or replace) a secret; needs an admin token. Values shorter than 4 characters are refused.

        ``workflows`` limits it to runs of those workflows or templates (their fires, child runs and
        retries); left out, every workflow may use it. Setting it again replaces the scope too."""
        body: dict[str, Any] = {"value": value}
        if workflows is not None:
            body["workflows"] = list(workflows)
        return SecretInfo.read(await self._request("PUT", f"/v1/secrets/{seg(name)}", json=body))

    async def list_secrets(self) -> list[SecretInfo]:
        data = await self._request("GET", "/v1/secrets")
        return [SecretInfo.read(item) for item in data.get("items", [])]

    async def delete_secret(self, name: str) -> None:
        await self._request("DELETE", f"/v1/secrets/{seg(name)}")
