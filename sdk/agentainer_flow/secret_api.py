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
    """A stored secret's name and times (the API never returns its value)."""

    name: str
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
    async def set_secret(self, name: str, value: str) -> SecretInfo:
        """Store (or replace) a secret; needs an admin token. Values shorter than 4 characters are refused."""
        return SecretInfo.read(await self._request("PUT", f"/v1/secrets/{seg(name)}", json={"value": value}))

    async def list_secrets(self) -> list[SecretInfo]:
        data = await self._request("GET", "/v1/secrets")
        return [SecretInfo.read(item) for item in data.get("items", [])]

    async def delete_secret(self, name: str) -> None:
        await self._request("DELETE", f"/v1/secrets/{seg(name)}")
