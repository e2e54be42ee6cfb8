"""Conformance suite of :class:`entrepot.metadata.database.Database`: migrations, transactions.

Every test runs twice through the ``database_url`` fixture: once on a fresh SQLite file and
once on a fresh PostgreSQL database. The database must behave the same on both. Settings (the
simplest rows there are) stand in for data wherever a test needs some.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from entrepot.metadata import schema as t
from entrepot.metadata.database import Database, PointQuery, utcnow
from entrepot.metadata.migrate import alembic_config
from entrepot.metadata.operations import SqlOperationStore
from entrepot.metadata.records import Changes, RegistryKey, ResourceKind
from entrepot.metadata.resources import SqlResourceStore
from tests.metadata_support import (
    SUB,
    add_registry,
    cache_rule,
    opened,
    operation,
    registry,
    store_url,
)
from tests.metadata_support import token as new_token

_GET_SETTING = PointQuery("SELECT value FROM settings WHERE key = :key")


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture
def db_url(database_url: str, tmp_path: Path) -> str:
    return store_url(database_url, tmp_path)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    async with opened(db_url) as database:
        yield database


@pytest.fixture
def store(db: Database) -> SqlResourceStore:
    return SqlResourceStore(db)


async def _setting(store: SqlResourceStore, key: str) -> str | None:
    async with store.read() as tx:
        return await tx.setting(key)


async def _put_setting(store: SqlResourceStore, key: str, value: str) -> None:
    async with store.write() as tx:
        await tx.put_setting(key, value)


# -- opening and migrating --------------------------------------------------------------------
async def _table_names(db: Database) -> set[str]:
    async with db.read() as conn:
        return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))


async def _current_revision(db: Database) -> str | None:
    async with db.read() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


async def test_open_migrates_an_empty_database_to_head(db_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    async with opened(db_url) as db:
        assert await _table_names(db) >= {*t.metadata.tables, "alembic_version"}
        assert await _current_revision(db) == head
        # 0003 moved operation leases into their own table.
        async with db.read() as conn:
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in sa.inspect(c).get_columns("operations")}
            )
        assert "lease_owner" not in columns and "lease_expires" not in columns


async def test_open_is_idempotent_and_keeps_data(db_url: str) -> None:
    async with opened(db_url) as first:
        await _put_setting(SqlResourceStore(first), "kept", "yes")

    second = Database(db_url)
    await second.open()  # already at head: no error, nothing re-created
    await second.open()  # and again, on the same instance
    try:
        assert await _setting(SqlResourceStore(second), "kept") == "yes"
        assert await second.fetch_one(_GET_SETTING, key="kept") == {"value": "yes"}
        async with second.read() as conn:
            versions = await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            assert len(versions.all()) == 1
    finally:
        await second.close()
    await second.close()  # closing twice is harmless
    if not second.is_sqlite:  # the second open() left no engine or pool behind
        assert await _other_connections(db_url) == 0


async def _other_connections(url: str) -> int:
    """Connections to the PostgreSQL database of ``url`` other than the asking one."""
    import asyncpg

    plain = sa.engine.make_url(url).set(drivername="postgresql")
    conn = await asyncpg.connect(plain.render_as_string(hide_password=False))
    try:
        for _ in range(50):  # a closed connection's backend may linger for a moment
            count = int(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            if count == 0:
                break
            await asyncio.sleep(0.1)
        return count
    finally:
        await conn.close()


async def test_concurrent_first_opens_migrate_once(db_url: str) -> None:
    dbs = [Database(db_url) for _ in range(3)]
    try:
        await asyncio.gather(*(d.open() for d in dbs))
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        for d in dbs:
            assert await _current_revision(d) == head
        async with dbs[0].read() as conn:
            versions = await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            assert versions.scalars().all() == [head]
    finally:
        for d in dbs:
            await d.close()


def _diff(metadata: sa.MetaData) -> Any:
    def diff(sync_conn: sa.Connection) -> list[Any]:
        context = MigrationContext.configure(
            sync_conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, metadata))

    return diff


async def test_migrated_schema_matches_the_declared_metadata(db: Database) -> None:
    """Guards migration drift: schema.py and migrations/versions must describe one schema."""
    async with db.read() as conn:
        diffs = await conn.run_sync(_diff(t.metadata))
    assert diffs == []


async def test_compare_metadata_detects_drift(db: Database) -> None:
    """The drift check above is not vacuous: a column the migrations lack is reported."""
    drifted = sa.MetaData()
    for table in t.metadata.tables.values():
        table.to_metadata(drifted)
    drifted.tables["settings"].append_column(sa.Column("extra", sa.Integer, nullable=True))
    drifted.tables["operations"].c.action.type = sa.String(21)

    async with db.read() as conn:
        diffs = await conn.run_sync(_diff(drifted))
    assert len(diffs) == 2, diffs
    add_column = next(d for d in diffs if isinstance(d, tuple))
    assert add_column[0] == "add_column"
    assert add_column[2] == "settings" and add_column[3].name == "extra"
    (modify,) = next(d for d in diffs if isinstance(d, list))
    assert modify[0] == "modify_type" and modify[2:4] == ("operations", "action")


async def test_unopened_database_refuses_to_work(db_url: str) -> None:
    db = Database(db_url)
    with pytest.raises(RuntimeError, match="open"):
        async with db.read():
            pass
    with pytest.raises(RuntimeError, match="open"):
        async with db.write():
            pass
    with pytest.raises(RuntimeError, match="open"):
        async with db.transaction():
            pass
    with pytest.raises(RuntimeError, match="open"):
        await db.fetch_one(_GET_SETTING, key="x")


# -- point queries ----------------------------------------------------------------------------
async def test_point_queries_bind_named_parameters_on_both_databases(
    store: SqlResourceStore, db: Database
) -> None:
    async with store.write() as tx:
        await tx.put_setting("a", "1")
        await tx.put_setting("b", "2")
        await tx.put_setting("c", "3")
    # A repeated name binds one value; names bind by name, not by position.
    query = PointQuery(
        """
        SELECT key, value FROM settings
        WHERE key IN (:first, :second) OR (key = :third AND key <> :first)
        ORDER BY key
        """
    )
    assert query.names == ["first", "second", "third"]
    rows = await db.fetch_all(query, third="c", second="b", first="a")
    assert rows == [
        {"key": "a", "value": "1"},
        {"key": "b", "value": "2"},
        {"key": "c", "value": "3"},
    ]
    assert await db.fetch_one(query, first="a", second="a", third="a") == {"key": "a", "value": "1"}
    assert await db.fetch_one(query, first="x", second="y", third="z") is None
    assert await db.fetch_all(query, first="x", second="y", third="z") == []


# -- settings ---------------------------------------------------------------------------------
async def test_settings_put_and_get(store: SqlResourceStore) -> None:
    assert await _setting(store, "tenant_id") is None
    async with store.write() as tx:
        await tx.put_setting("tenant_id", "first")
        await tx.put_setting("other", "x")
    async with store.write() as tx:
        assert await tx.setting("tenant_id") == "first"
        await tx.put_setting("tenant_id", "second")  # overwrite, not a duplicate key
        assert await tx.setting("tenant_id") == "second"  # a transaction sees its own writes
    async with store.read() as tx:
        assert await tx.setting("tenant_id") == "second"
        assert await tx.setting("other") == "x"
        assert await tx.setting("TENANT_ID") is None


# -- transactions -----------------------------------------------------------------------------
async def test_a_failed_write_leaves_nothing_behind(store: SqlResourceStore, db: Database) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with store.write() as tx:
            reg = await tx.insert_registry(registry("half-done"))
            await tx.insert_cache_rule(cache_rule(reg, "half-rule", "app"))
            await tx.put_setting("half", "done")
            await tx.insert_token(new_token("h" * 64, "half"))
            await tx.insert_operation(operation("op-half"))
            assert await tx.acquire_lease("half-lease", "me", utcnow() + dt.timedelta(seconds=60))
            raise Boom
    async with store.read() as tx:
        assert await tx.registries(SUB, "my-rg", "", 100) == []
        assert await tx.registries_named("half-done") == []
        assert await tx.setting("half") is None
        assert await tx.count_tokens() == 0
        assert await tx.operation("op-half") is None
        assert await tx.active_operation(ResourceKind.CACHE_RULE, 1) is None
    async with db.read() as conn:
        for table in (t.cache_rules, t.leases):
            count = await conn.execute(sa.select(sa.func.count()).select_from(table))
            assert count.scalar_one() == 0, table.name
    assert await store.get_registry(RegistryKey(SUB, "my-rg", "half-done")) is None
    assert await store.token("h" * 64) is None
    assert await SqlOperationStore(db).get("op-half") is None
    # The store is still usable afterwards.
    assert await add_registry(store, "after-boom") > 0


async def test_a_failed_transaction_leaves_nothing_behind(db: Database) -> None:
    with pytest.raises(ZeroDivisionError):
        async with db.transaction() as conn:
            await conn.execute(sa.insert(t.settings).values(key="half", value="done"))
            _ = 1 / 0
    assert await db.fetch_one(_GET_SETTING, key="half") is None


async def test_reads_see_committed_data_only(store: SqlResourceStore, db: Database) -> None:
    key = RegistryKey(SUB, "my-rg", "the-registry")
    await add_registry(store, "the-registry")
    await _put_setting(store, "visible", "old")
    ops = SqlOperationStore(db)
    async with store.write() as tx:
        await tx.put_setting("visible", "new")
        await tx.put_setting("pending", "yes")
        reg = await tx.registry(key)
        assert reg is not None
        await tx.update(ResourceKind.REGISTRY, reg.id, Changes(sku="Premium"))
        await tx.insert_token(new_token("p" * 64, "pending"))
        await tx.insert_operation(operation("op-pending"))
        # Other connections, while the write is open: the transaction reader ...
        async with store.read() as reader:
            assert await reader.setting("visible") == "old"
            assert await reader.setting("pending") is None
        # ... and the point reads, which use no transaction at all.
        assert await db.fetch_one(_GET_SETTING, key="visible") == {"value": "old"}
        assert await db.fetch_one(_GET_SETTING, key="pending") is None
        before = await store.get_registry(key)
        assert before is not None and before.sku == "Basic"
        assert await store.token("p" * 64) is None
        assert await ops.get("op-pending") is None
    async with store.read() as reader:
        assert await reader.setting("visible") == "new"
        assert await reader.setting("pending") == "yes"
    assert await db.fetch_one(_GET_SETTING, key="visible") == {"value": "new"}
    assert await db.fetch_one(_GET_SETTING, key="pending") == {"value": "yes"}
    after = await store.get_registry(key)
    assert after is not None and after.sku == "Premium"
    token = await store.token("p" * 64)
    assert token is not None and token.description == "pending"
    op = await ops.get("op-pending")
    assert op is not None and op.id == "op-pending"


async def test_a_read_sees_one_snapshot_and_refuses_writes(
    store: SqlResourceStore, db: Database
) -> None:
    await _put_setting(store, "a", "old")
    async with store.read() as tx:
        assert await tx.setting("a") == "old"
        await _put_setting(store, "a", "new")  # committed while the read is open
        assert await tx.setting("a") == "old"  # the read keeps its snapshot
        assert await tx.count_tokens() == 0
    assert await _setting(store, "a") == "new"
    for _ in range(3):  # pooled connections go back to read-write after a read
        with pytest.raises(sa.exc.DBAPIError):
            async with store.read() as tx:
                await tx.put_setting("b", "through a read")
        assert await _setting(store, "b") is None
        with pytest.raises(sa.exc.DBAPIError):
            async with db.read() as conn:
                await conn.execute(sa.insert(t.settings).values(key="b", value="raw"))
        await _put_setting(store, "b", "through a write")
        async with db.transaction() as conn:
            await conn.execute(sa.delete(t.settings).where(t.settings.c.key == "b"))
    assert await db.fetch_one(_GET_SETTING, key="b") is None


async def test_concurrent_writers_lose_no_update(store: SqlResourceStore) -> None:
    await _put_setting(store, "counter", "0")

    async def increment() -> None:
        async with store.write() as tx:
            value = int(await tx.setting("counter") or "0")
            await asyncio.sleep(0)  # give the other writers every chance to interleave
            await tx.put_setting("counter", str(value + 1))

    await asyncio.gather(*(increment() for _ in range(20)))
    assert await _setting(store, "counter") == "20"


async def test_concurrent_writers_from_two_databases_lose_no_update(
    store: SqlResourceStore, db_url: str
) -> None:
    """Two Databases on one database behave like two server processes sharing it."""
    async with opened(db_url) as other_db:
        other = SqlResourceStore(other_db)
        await _put_setting(store, "counter", "0")

        async def increment(s: SqlResourceStore) -> None:
            async with s.write() as tx:
                value = int(await tx.setting("counter") or "0")
                await asyncio.sleep(0)
                await tx.put_setting("counter", str(value + 1))

        await asyncio.gather(*(increment(s) for _ in range(10) for s in (store, other)))
        assert await _setting(other, "counter") == "20"
        assert await other_db.fetch_one(_GET_SETTING, key="counter") == {"value": "20"}


@pytest.mark.postgres
async def test_reads_and_writes_survive_the_server_dropping_every_connection(
    postgres_database: str, tmp_path: Path
) -> None:
    """A restart or failover of PostgreSQL drops pooled connections: the next call reconnects."""

    async with opened(store_url(postgres_database, tmp_path)) as db:
        await _survive_dropped_connections(postgres_database, SqlResourceStore(db))


async def _survive_dropped_connections(database_url: str, store: SqlResourceStore) -> None:
    import asyncpg

    key = RegistryKey(SUB, "my-rg", "dropped-reg")
    async with store.write() as tx:
        await tx.insert_registry(registry("dropped-reg"))
    for _ in range(3):  # fill both pools
        assert await store.get_registry(key) is not None
        assert await _setting(store, "absent") is None
    admin = await asyncpg.connect(database_url)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
    assert killed > 0
    found = await store.get_registry(key)  # the point-read path (asyncpg)
    assert found is not None and found.name == "dropped-reg"
    await _put_setting(store, "after-drop", "yes")  # the SQLAlchemy path
    assert await _setting(store, "after-drop") == "yes"
