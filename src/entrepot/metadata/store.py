"""Temporary: the vault's view of the database until it has its own VaultStore."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from entrepot.metadata import schema as t
from entrepot.metadata.database import Database, as_utc, utcnow

__all__ = ["MetadataStore", "as_utc", "utcnow"]


class MetadataStore(Database):
    async def get_setting(self, conn: AsyncConnection, key: str) -> str | None:
        row = (
            await conn.execute(sa.select(t.settings.c.value).where(t.settings.c.key == key))
        ).first()
        return None if row is None else str(row[0])

    async def put_setting(self, conn: AsyncConnection, key: str, value: str) -> None:
        await conn.execute(sa.delete(t.settings).where(t.settings.c.key == key))
        await conn.execute(sa.insert(t.settings).values(key=key, value=value))
