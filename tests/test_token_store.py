"""API tokens in the metadata store, the token service over it, and migration 0004.

Every test runs through the ``database_url`` fixture on a fresh SQLite file and on a fresh
PostgreSQL database, against :class:`~entrepot.metadata.resources.SqlResourceStore` (the token
part of the :class:`~entrepot.metadata.protocols.ResourceStore` conformance) and
:class:`~entrepot.management.tokens.TokenService`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from entrepot import errors as e
from entrepot.config import database_url as async_database_url
from entrepot.management.tokens import (
    ADMIN_TOKEN_NAME,
    TokenService,
    check_token_name,
    hash_token,
    parse_role,
)
from entrepot.metadata import Database, SqlResourceStore
from entrepot.metadata import schema as t
from entrepot.metadata.migrate import alembic_config
from entrepot.metadata.protocols import ResourceStore
from entrepot.metadata.records import NewToken, TokenRecord, TokenRole

NOW = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)


@pytest.fixture
def store_url(database_url: str, tmp_path: Path) -> str:
    return async_database_url(database_url, tmp_path)


@pytest.fixture
async def db(store_url: str) -> AsyncIterator[Database]:
    database = Database(store_url)
    await database.open()
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def store(db: Database) -> ResourceStore:
    return SqlResourceStore(db)


def new_token(name: str, role: TokenRole = TokenRole.PULL, secret: str = "") -> NewToken:
    return NewToken(name, role, hash_token(secret or f"secret-of-{name}"), "desc", "tester", NOW)


# -- the store ------------------------------------------------------------------------------------
async def test_token_point_read_answers_name_and_role(store: ResourceStore) -> None:
    assert await store.token(hash_token("secret-of-CI-Puller")) is None
    async with store.write() as tx:
        token_id = await tx.insert_token(new_token("CI-Puller"))
        await tx.insert_token(new_token("ops", TokenRole.ADMIN))
    record = await store.token(hash_token("secret-of-CI-Puller"))
    assert record == TokenRecord(token_id, "CI-Puller", TokenRole.PULL, "desc", NOW, "tester")
    assert record is not None and record.created_at.tzinfo is not None
    admin = await store.token(hash_token("secret-of-ops"))
    assert admin is not None and (admin.name, admin.role) == ("ops", TokenRole.ADMIN)
    assert await store.token(hash_token("secret-of-ci-puller")) is None  # secrets are exact
    assert await store.token("0" * 64) is None


async def test_tokens_by_name_list_and_count(store: ResourceStore) -> None:
    async with store.write() as tx:
        for name, role in [
            ("zeta", TokenRole.PULL),
            ("Alpha", TokenRole.ADMIN),
            ("mid", TokenRole.PULL),
        ]:
            await tx.insert_token(new_token(name, role))
    async with store.read() as tx:
        assert [r.name for r in await tx.tokens()] == ["Alpha", "mid", "zeta"]
        found = await tx.token_named("ALPHA")
        assert found is not None and found.name == "Alpha" and found.role is TokenRole.ADMIN
        assert await tx.token_named("alph") is None
        assert await tx.count_tokens() == 3
        assert await tx.count_tokens(TokenRole.ADMIN) == 1
        assert await tx.count_tokens(TokenRole.PULL) == 2


async def test_names_and_hashes_are_unique(store: ResourceStore) -> None:
    async with store.write() as tx:
        await tx.insert_token(new_token("ci"))
    with pytest.raises(sa.exc.IntegrityError):
        async with store.write() as tx:
            await tx.insert_token(new_token("CI", secret="another-secret"))  # name, any case
    with pytest.raises(sa.exc.IntegrityError):
        async with store.write() as tx:
            await tx.insert_token(new_token("other", secret="secret-of-ci"))  # same secret
    async with store.read() as tx:
        assert [r.name for r in await tx.tokens()] == ["ci"]


async def test_delete_and_replace_hash_take_effect_on_commit(store: ResourceStore) -> None:
    async with store.write() as tx:
        token_id = await tx.insert_token(new_token("ci"))
    later = NOW + dt.timedelta(days=1)
    async with store.write() as tx:
        assert await tx.replace_token_hash(token_id, hash_token("new"), "rotator", later)
        assert await store.token(hash_token("secret-of-ci")) is not None  # not committed yet
    assert await store.token(hash_token("secret-of-ci")) is None
    rotated = await store.token(hash_token("new"))
    assert rotated is not None
    assert (rotated.id, rotated.name, rotated.created_at, rotated.created_by) == (
        token_id,
        "ci",
        later,
        "rotator",
    )
    async with store.write() as tx:
        assert await tx.delete_token(token_id)
        assert not await tx.delete_token(token_id)
        assert not await tx.replace_token_hash(token_id, hash_token("x"), "a", NOW)
    assert await store.token(hash_token("new")) is None


async def test_a_revocation_is_seen_at_once_by_another_database_handle(store_url: str) -> None:
    """Two handles on one database stand for two processes: no stale positive answer."""
    first, second = Database(store_url), Database(store_url)
    await first.open()
    await second.open()
    try:
        a, b = SqlResourceStore(first), SqlResourceStore(second)
        async with a.write() as tx:
            token_id = await tx.insert_token(new_token("ci"))
        for _ in range(3):
            assert await b.token(hash_token("secret-of-ci")) is not None
        async with a.write() as tx:
            await tx.delete_token(token_id)
        assert await b.token(hash_token("secret-of-ci")) is None
    finally:
        await first.close()
        await second.close()


# -- the service ----------------------------------------------------------------------------------
async def test_service_create_list_revoke_rotate(store: ResourceStore) -> None:
    tokens = TokenService(store)
    assert await tokens.bootstrap() is not None
    assert await tokens.bootstrap() is None  # once only
    issued = await tokens.create("ci-Puller", TokenRole.PULL, "admin", "for CI")
    assert len(issued.value) == 43 and issued.value not in repr(issued)
    assert (issued.record.name, issued.record.role, issued.record.created_by) == (
        "ci-Puller",
        TokenRole.PULL,
        "admin",
    )
    assert issued.view()["value"] == issued.value
    assert await store.token(hash_token(issued.value)) == issued.record
    with pytest.raises(e.ResourceExists):
        await tokens.create("CI-PULLER", TokenRole.ADMIN, "admin")
    assert [r.name for r in await tokens.list()] == ["admin", "ci-Puller"]
    assert (await tokens.get("CI-puller")).description == "for CI"

    rotated = await tokens.rotate("ci-puller", "ops")
    assert rotated.value != issued.value
    assert (rotated.record.id, rotated.record.role) == (issued.record.id, TokenRole.PULL)
    assert await store.token(hash_token(issued.value)) is None
    assert await store.token(hash_token(rotated.value)) == rotated.record

    await tokens.revoke("CI-Puller")
    assert await store.token(hash_token(rotated.value)) is None
    for call in (tokens.revoke("ci-puller"), tokens.get("ci-puller"), tokens.rotate("x", "a")):
        with pytest.raises(e.NotFound):
            await call


async def test_the_last_admin_token_cannot_be_revoked(store: ResourceStore) -> None:
    tokens = TokenService(store)
    first = await tokens.bootstrap()
    assert first is not None
    await tokens.create("puller", TokenRole.PULL, "admin")
    with pytest.raises(e.Conflict) as info:
        await tokens.revoke("admin")
    assert info.value.status == 409 and "last admin token" in info.value.message
    second = await tokens.create("ops", TokenRole.ADMIN, "admin")
    await tokens.revoke("ADMIN")
    assert await store.token(hash_token(first)) is None
    with pytest.raises(e.Conflict):
        await tokens.revoke("ops")
    assert await store.token(hash_token(second.value)) is not None


async def test_names_roles_and_descriptions_are_validated(store: ResourceStore) -> None:
    tokens = TokenService(store)
    for bad in ["", "-ci", "ci-", "a b", "ci/x", "é", "x" * 64, "ci:pull"]:
        with pytest.raises(e.InvalidResourceName):
            check_token_name(bad)
        with pytest.raises(e.InvalidResourceName):
            await tokens.create(bad, TokenRole.PULL, "admin")
    for good in ["a", "ci", "CI.pull_1-x", "x" * 63]:
        check_token_name(good)
    assert parse_role("PULL") is TokenRole.PULL
    for bad_role in ["root", "", None, 1, ["admin"]]:
        with pytest.raises(e.InvalidPropertyValue):
            parse_role(bad_role)
    with pytest.raises(e.InvalidPropertyValue):
        await tokens.create("ci", TokenRole.PULL, "admin", "d" * 201)
    with pytest.raises(e.InvalidPropertyValue):  # "admin" is kept for an admin token
        await tokens.create("Admin", TokenRole.PULL, "admin")
    async with store.read() as tx:
        assert await tx.count_tokens() == 0  # nothing was written


async def test_rotate_admin_writes_the_file_and_recreates_the_token(
    store: ResourceStore, tmp_path: Path
) -> None:
    token_file = tmp_path / "admin-token"
    tokens = TokenService(store, token_file)
    first = await tokens.bootstrap()
    assert first is not None and token_file.read_text() == first + "\n"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600

    token_file.unlink()  # lost
    recovered = await tokens.rotate_admin("offline")
    assert token_file.read_text() == recovered.value + "\n"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert await store.token(hash_token(first)) is None
    record = await store.token(hash_token(recovered.value))
    assert record is not None and (record.name, record.role, record.created_by) == (
        ADMIN_TOKEN_NAME,
        TokenRole.ADMIN,
        "offline",
    )

    # Revoked (another admin exists): rotate_admin re-creates it.
    await tokens.create("ops", TokenRole.ADMIN, "admin")
    await tokens.revoke("admin")
    again = await tokens.rotate_admin()
    assert (again.record.name, again.record.role) == ("admin", TokenRole.ADMIN)
    assert token_file.read_text() == again.value + "\n"
    assert await store.token(hash_token(again.value)) is not None

    # Online rotation of "admin" rewrites the file only when it exists.
    online = await tokens.rotate("admin", "ops")
    assert token_file.read_text() == online.value + "\n"
    token_file.unlink()
    await tokens.rotate("admin", "ops")
    assert not token_file.exists()
    other = await tokens.rotate("ops", "ops")
    assert not token_file.exists() and other.record.name == "ops"


async def test_no_file_no_rotation(store: ResourceStore, tmp_path: Path) -> None:
    """The token file is written inside the transaction: if it cannot be, nothing changes."""
    tokens = TokenService(store, tmp_path / "missing-dir" / "admin-token")
    with pytest.raises(OSError):
        await tokens.bootstrap()
    async with store.read() as tx:
        assert await tx.count_tokens() == 0
    ok = TokenService(store, tmp_path / "admin-token")
    first = await ok.bootstrap()
    assert first is not None
    with pytest.raises(OSError):
        await tokens.rotate_admin()
    assert await store.token(hash_token(first)) is not None


# -- migration 0004 -------------------------------------------------------------------------------
def _at_revision(store_url: str, revision: str) -> None:
    def migrate(connection: sa.Connection) -> None:
        command.upgrade(alembic_config(connection), revision)

    async def run() -> None:
        engine = create_async_engine(store_url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(migrate)
        finally:
            await engine.dispose()

    asyncio.run(run())


async def _old_tokens(store_url: str, *rows: tuple[str, str]) -> None:
    engine = create_async_engine(store_url)
    try:
        async with engine.begin() as conn:
            for secret, description in rows:
                await conn.execute(
                    sa.text(
                        "INSERT INTO admin_tokens (token_hash, description, created_at) "
                        "VALUES (:h, :d, :c)"
                    ),
                    {"h": hash_token(secret), "d": description, "c": NOW},
                )
    finally:
        await engine.dispose()


def test_migration_0004_keeps_old_tokens_working_as_admin(store_url: str) -> None:
    _at_revision(store_url, "0003")
    asyncio.run(_old_tokens(store_url, ("bootstrap-secret", "admin"), ("second-secret", "ci")))

    async def check() -> None:
        db = Database(store_url)
        await db.open()  # migrates to the newest revision
        try:
            store = SqlResourceStore(db)
            first = await store.token(hashlib.sha256(b"bootstrap-secret").hexdigest())
            second = await store.token(hash_token("second-secret"))
            assert first is not None and second is not None
            assert (first.name, first.role, first.description, first.created_at) == (
                "admin",
                TokenRole.ADMIN,
                "admin",
                NOW,
            )
            assert (second.name, second.role, second.created_by) == (
                f"admin-{second.id}",
                TokenRole.ADMIN,
                "entrepot",
            )
            async with store.write() as tx:  # the unique name constraint exists
                with pytest.raises(sa.exc.IntegrityError):
                    await tx.insert_token(new_token("ADMIN", TokenRole.ADMIN))

            def drift(connection: sa.Connection) -> list[object]:
                context = MigrationContext.configure(connection)
                diffs = compare_metadata(context, t.metadata)
                return [d for d in diffs if "admin_tokens" in repr(d)]

            async with db.engine.connect() as conn:
                assert await conn.run_sync(drift) == []
        finally:
            await db.close()

    asyncio.run(check())


def test_migration_0004_downgrades(store_url: str) -> None:
    _at_revision(store_url, "head")

    def down(connection: sa.Connection) -> list[str]:
        command.downgrade(alembic_config(connection), "0003")
        return [c["name"] for c in sa.inspect(connection).get_columns("admin_tokens")]

    async def run() -> list[str]:
        engine = create_async_engine(store_url)
        try:
            async with engine.begin() as conn:
                return await conn.run_sync(down)
        finally:
            await engine.dispose()

    assert sorted(asyncio.run(run())) == ["created_at", "description", "id", "token_hash"]
