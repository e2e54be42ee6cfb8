"""The metadata store: one implementation for SQLite (embedded default) and PostgreSQL.

Contract:

* :meth:`MetadataStore.open` creates the database if needed and migrates it to the newest
  revision (serialised across processes by a lock: an advisory lock on PostgreSQL, the
  database's write lock on SQLite).
* :meth:`MetadataStore.write` yields a connection inside one transaction that either commits
  whole or not at all. On SQLite it takes the write lock at ``BEGIN`` (``BEGIN IMMEDIATE``) so
  concurrent writers wait instead of failing half-way; on PostgreSQL it takes a
  transaction-scoped advisory lock to the same effect; within one process writers are queued.
* :meth:`MetadataStore.read` yields a connection for reads; it sees committed data only.
* Rows come back as :class:`sqlalchemy.RowMapping`; datetimes are timezone-aware UTC on both
  databases.
* Listing is keyset-paged on ``name_key``: the cost of a page does not depend on how many rows
  come before it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from entrepot.metadata import schema as t

_MIGRATION_LOCK_ID = 0x656E747265706F74  # "entrepot"
_WRITE_LOCK_ID = _MIGRATION_LOCK_ID + 1  # one writer at a time on PostgreSQL


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """``value`` with UTC attached when the database returned it naive (SQLite)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


def escape_like(text: str) -> str:
    """``text`` escaped for a ``LIKE ... ESCAPE '\\'`` pattern."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class MetadataStore:
    """Registries, rules, credential sets, operations, tokens and settings, in one database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._engine: AsyncEngine | None = None
        self._write_lock = asyncio.Lock()

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("MetadataStore.open() has not been called")
        return self._engine

    async def open(self) -> None:
        """Connect and migrate to the newest schema revision."""
        if self.is_sqlite:
            path = self.url.split(":///", 1)[1]
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_async_engine(
                self.url, connect_args={"timeout": 30}, pool_size=5, max_overflow=5
            )
            _sqlite_transactions(engine)
        else:
            engine = create_async_engine(self.url, pool_size=10, max_overflow=10)
        self._engine = engine
        from entrepot.metadata.migrate import upgrade

        async with self.write() as conn:
            if not self.is_sqlite:
                await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_ID})"))
            await conn.run_sync(upgrade)

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        if self.is_sqlite:
            async with self._write_lock, self.engine.connect() as conn:
                conn = await conn.execution_options(sqlite_immediate=True)
                async with conn.begin():
                    yield conn
        else:
            # Like SQLite's write lock: writers queue (in-process, then across processes on a
            # transaction-scoped advisory lock) so read-check-write transactions never interleave.
            async with self._write_lock, self.engine.begin() as conn:
                await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_WRITE_LOCK_ID})"))
                yield conn

    # -- settings and tokens ----------------------------------------------------------------
    async def get_setting(self, conn: AsyncConnection, key: str) -> str | None:
        row = (
            await conn.execute(sa.select(t.settings.c.value).where(t.settings.c.key == key))
        ).first()
        return None if row is None else str(row[0])

    async def put_setting(self, conn: AsyncConnection, key: str, value: str) -> None:
        await conn.execute(sa.delete(t.settings).where(t.settings.c.key == key))
        await conn.execute(sa.insert(t.settings).values(key=key, value=value))

    async def count_tokens(self, conn: AsyncConnection) -> int:
        return int(
            (
                await conn.execute(sa.select(sa.func.count()).select_from(t.admin_tokens))
            ).scalar_one()
        )

    async def add_token(self, conn: AsyncConnection, token_hash: str, description: str) -> None:
        await conn.execute(
            sa.insert(t.admin_tokens).values(
                token_hash=token_hash, description=description, created_at=utcnow()
            )
        )

    async def token_description(self, conn: AsyncConnection, token_hash: str) -> str | None:
        row = (
            await conn.execute(
                sa.select(t.admin_tokens.c.description).where(
                    t.admin_tokens.c.token_hash == token_hash
                )
            )
        ).first()
        return None if row is None else str(row[0])

    # -- registries -------------------------------------------------------------------------
    async def get_registry(
        self, conn: AsyncConnection, subscription: str, resource_group: str, name: str
    ) -> RowMapping | None:
        r = t.registries.c
        query = sa.select(t.registries).where(
            r.subscription == subscription,
            r.resource_group_key == resource_group.lower(),
            r.name_key == name.lower(),
        )
        return (await conn.execute(query)).mappings().first()

    async def list_registries(
        self, conn: AsyncConnection, subscription: str, resource_group: str, after: str, limit: int
    ) -> Sequence[RowMapping]:
        r = t.registries.c
        query = (
            sa.select(t.registries)
            .where(
                r.subscription == subscription,
                r.resource_group_key == resource_group.lower(),
                r.name_key > after,
            )
            .order_by(r.name_key)
            .limit(limit)
        )
        return (await conn.execute(query)).mappings().all()

    async def registry_names(
        self, conn: AsyncConnection, name: str | None = None, limit: int = 2
    ) -> list[str]:
        """Names of at most ``limit`` registries of any subscription and group, in name order;
        only those named ``name`` (case-insensitive) when it is given."""
        r = t.registries.c
        query = sa.select(r.name).order_by(r.name_key, r.id).limit(limit)
        if name is not None:
            query = query.where(r.name_key == name.lower())
        return [str(x) for x in (await conn.execute(query)).scalars()]

    async def all_registry_ids(self, conn: AsyncConnection) -> list[int]:
        return [int(x) for x in (await conn.execute(sa.select(t.registries.c.id))).scalars()]

    # -- generic rows (rules, credential sets, registries) -----------------------------------
    async def insert(self, conn: AsyncConnection, table: sa.Table, values: dict[str, Any]) -> int:
        result = await conn.execute(sa.insert(table).values(**values).returning(table.c.id))
        return int(result.scalar_one())

    async def update(
        self, conn: AsyncConnection, table: sa.Table, row_id: int, values: dict[str, Any]
    ) -> None:
        await conn.execute(sa.update(table).where(table.c.id == row_id).values(**values))

    async def delete(self, conn: AsyncConnection, table: sa.Table, row_id: int) -> int:
        result = await conn.execute(sa.delete(table).where(table.c.id == row_id))
        return int(result.rowcount)

    async def get_by_id(
        self, conn: AsyncConnection, table: sa.Table, row_id: int
    ) -> RowMapping | None:
        return (await conn.execute(sa.select(table).where(table.c.id == row_id))).mappings().first()

    async def get_child(
        self, conn: AsyncConnection, table: sa.Table, registry_id: int, name: str
    ) -> RowMapping | None:
        query = sa.select(table).where(
            table.c.registry_id == registry_id, table.c.name_key == name.lower()
        )
        return (await conn.execute(query)).mappings().first()

    async def list_children(
        self, conn: AsyncConnection, table: sa.Table, registry_id: int, after: str, limit: int
    ) -> Sequence[RowMapping]:
        query = (
            sa.select(table)
            .where(table.c.registry_id == registry_id, table.c.name_key > after)
            .order_by(table.c.name_key)
            .limit(limit)
        )
        return (await conn.execute(query)).mappings().all()

    async def count_children(self, conn: AsyncConnection, table: sa.Table, registry_id: int) -> int:
        query = (
            sa.select(sa.func.count()).select_from(table).where(table.c.registry_id == registry_id)
        )
        return int((await conn.execute(query)).scalar_one())

    # -- cache-rule specifics -----------------------------------------------------------------
    async def rules_with_targets(
        self, conn: AsyncConnection, registry_id: int, target_paths: Sequence[str], wildcard: bool
    ) -> Sequence[RowMapping]:
        """Rules of ``registry_id`` whose target path is one of ``target_paths``."""
        c = t.cache_rules.c
        query = sa.select(t.cache_rules).where(
            c.registry_id == registry_id, c.wildcard == wildcard, c.target_path.in_(target_paths)
        )
        return (await conn.execute(query)).mappings().all()

    async def wildcard_rules_under(
        self, conn: AsyncConnection, registry_id: int, prefix: str, limit: int = 5
    ) -> Sequence[RowMapping]:
        """Wildcard rules whose target path lies strictly below ``prefix`` (all, for ``""``)."""
        c = t.cache_rules.c
        query = sa.select(t.cache_rules).where(c.registry_id == registry_id, c.wildcard.is_(True))
        if prefix:
            query = query.where(c.target_path.like(escape_like(prefix) + "/%", escape="\\"))
        return (await conn.execute(query.limit(limit))).mappings().all()

    async def rules_using_credential_set(
        self, conn: AsyncConnection, credential_set_id: int, limit: int = 5
    ) -> list[str]:
        c = t.cache_rules.c
        query = (
            sa.select(c.name)
            .where(c.credential_set_id == credential_set_id)
            .order_by(c.name_key)
            .limit(limit)
        )
        return [str(x) for x in (await conn.execute(query)).scalars()]

    async def credential_set_names(
        self, conn: AsyncConnection, ids: Sequence[int]
    ) -> dict[int, str]:
        if not ids:
            return {}
        c = t.credential_sets.c
        rows = await conn.execute(sa.select(c.id, c.name).where(c.id.in_(set(ids))))
        return {int(i): str(n) for i, n in rows}

    async def credential_sets_after(
        self, conn: AsyncConnection, after_id: int, limit: int
    ) -> Sequence[RowMapping]:
        """Credential sets of all registries with ``id > after_id``, in id order."""
        c = t.credential_sets.c
        query = sa.select(t.credential_sets).where(c.id > after_id).order_by(c.id).limit(limit)
        return (await conn.execute(query)).mappings().all()

    # -- operations ---------------------------------------------------------------------------
    async def insert_operation(self, conn: AsyncConnection, values: dict[str, Any]) -> None:
        await conn.execute(sa.insert(t.operations).values(**values))

    async def get_operation(self, conn: AsyncConnection, op_id: str) -> RowMapping | None:
        query = sa.select(t.operations).where(t.operations.c.id == op_id)
        return (await conn.execute(query)).mappings().first()

    async def active_operation_for(
        self, conn: AsyncConnection, resource_kind: str, row_id: int
    ) -> RowMapping | None:
        o = t.operations.c
        query = sa.select(t.operations).where(
            o.resource_kind == resource_kind, o.row_id == row_id, o.status == "InProgress"
        )
        return (await conn.execute(query.limit(1))).mappings().first()

    async def claim_operation(
        self, conn: AsyncConnection, op_id: str, owner: str, until: dt.datetime
    ) -> bool:
        """Take or renew the lease of an in-progress operation; False if another owner holds it."""
        o = t.operations.c
        now = utcnow()
        query = (
            sa.update(t.operations)
            .where(
                o.id == op_id,
                o.status == "InProgress",
                sa.or_(o.lease_owner.is_(None), o.lease_owner == owner, o.lease_expires < now),
            )
            .values(lease_owner=owner, lease_expires=until)
        )
        return int((await conn.execute(query)).rowcount) == 1

    async def finish_operation(
        self,
        conn: AsyncConnection,
        op_id: str,
        status: str,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        await conn.execute(
            sa.update(t.operations)
            .where(t.operations.c.id == op_id)
            .values(
                status=status,
                ended_at=utcnow(),
                error_code=error_code,
                error_message=error_message,
                lease_owner=None,
                lease_expires=None,
            )
        )

    async def claimable_operations(self, conn: AsyncConnection, limit: int = 100) -> list[str]:
        """Ids of in-progress operations whose lease is free or expired."""
        o = t.operations.c
        query = (
            sa.select(o.id)
            .where(
                o.status == "InProgress",
                sa.or_(o.lease_owner.is_(None), o.lease_expires < utcnow()),
            )
            .order_by(o.started_at)
            .limit(limit)
        )
        return [str(x) for x in (await conn.execute(query)).scalars()]


def _sqlite_transactions(engine: AsyncEngine) -> None:
    """Let SQLAlchemy, not the driver, issue BEGIN; writers use BEGIN IMMEDIATE, and WAL."""

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
