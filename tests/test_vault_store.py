"""Conformance suite of :class:`entrepot.metadata.protocols.VaultStore`.

Every test runs through the ``database_url`` fixture on a fresh SQLite file and on a fresh
PostgreSQL database, against :class:`~entrepot.metadata.vault_store.SqlVaultStore`; a second
implementation of the protocol would join the ``vaults`` fixture and pass the same tests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from entrepot import errors as e
from entrepot.config import database_url as async_database_url
from entrepot.metadata import schema as t
from entrepot.metadata.database import Database as MetadataStore
from entrepot.metadata.protocols import StoreUnavailable, VaultStore
from entrepot.metadata.vault_store import KEY_CHECK_SETTING, SqlDatabase, SqlVaultStore
from entrepot.secrets import BuiltinVault
from entrepot.secrets import keys as secret_keys

NONCE = bytes(range(12))
SEALED = b"\x00\x01sealed-bytes\xff" * 3
PRINCIPAL = "6a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
OTHER = "11111111-2222-4333-8444-555555555555"


def _version(n: int) -> str:
    return f"{n:032x}"


@pytest.fixture
def store_url(database_url: str, tmp_path: Path) -> str:
    return async_database_url(database_url, tmp_path)


@pytest.fixture
async def db(store_url: str) -> AsyncIterator[MetadataStore]:
    s = MetadataStore(store_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def vaults(db: MetadataStore) -> VaultStore:
    return SqlVaultStore(db)


def _assert_recent(when: dt.datetime, since: dt.datetime) -> None:
    assert when.tzinfo is not None and when.utcoffset() == dt.timedelta(0)
    assert since - dt.timedelta(seconds=1) <= when <= dt.datetime.now(dt.UTC)


async def _count(db: MetadataStore, table: sa.Table) -> int:
    async with db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


# -- vaults ----------------------------------------------------------------------------------------
async def test_vaults_are_created_once_and_found_case_insensitively(vaults: VaultStore) -> None:
    since = dt.datetime.now(dt.UTC)
    record, created = await vaults.create_vault("MyVault")
    assert created and record.name == "MyVault"
    _assert_recent(record.created_at, since)

    again, created = await vaults.create_vault("myVAULT")
    assert not created
    assert again == (await vaults.get_vault("MYVAULT")) == record  # the first spelling stays
    assert await vaults.get_vault("other-vault") is None


async def test_list_vaults_by_lower_case_name(vaults: VaultStore) -> None:
    assert await vaults.list_vaults() == []
    for name in ("b-vault", "A-vault", "c-vault", "Bb-vault"):
        await vaults.create_vault(name)
    assert [v.name for v in await vaults.list_vaults()] == [
        "A-vault",
        "b-vault",
        "Bb-vault",
        "c-vault",
    ]


async def test_delete_vault(vaults: VaultStore) -> None:
    await vaults.create_vault("MyVault")
    await vaults.create_vault("kept-vault")
    assert await vaults.delete_vault("MYVAULT")
    assert not await vaults.delete_vault("myvault")
    assert await vaults.get_vault("myvault") is None
    assert [v.name for v in await vaults.list_vaults()] == ["kept-vault"]


async def test_deleting_a_vault_deletes_its_secrets_and_grants(
    vaults: VaultStore, db: MetadataStore
) -> None:
    await vaults.create_vault("gone-vault")
    await vaults.create_vault("kept-vault")
    for vault in ("gone-vault", "kept-vault"):
        await vaults.add_secret_version(vault, "pw", _version(1), NONCE, SEALED, None)
        await vaults.add_grant(vault, PRINCIPAL, "get")
    assert await vaults.delete_vault("gone-vault")
    assert await _count(db, t.vault_secrets) == 1
    assert await _count(db, t.vault_grants) == 1
    # re-created under the same name (on SQLite possibly with the same row id) it is empty
    _, created = await vaults.create_vault("gone-vault")
    assert created
    assert await vaults.newest_versions("gone-vault") == []
    assert await vaults.secret_version("gone-vault", "pw", None) is None
    assert await vaults.list_grants("gone-vault") == []
    assert not await vaults.has_grant("gone-vault", PRINCIPAL, "get")
    assert [s.vault for s in await vaults.newest_versions("kept-vault")] == ["kept-vault"]
    assert await vaults.has_grant("kept-vault", PRINCIPAL, "get")


# -- secret versions -------------------------------------------------------------------------------
async def test_add_secret_version_returns_metadata_without_ciphertext(vaults: VaultStore) -> None:
    await vaults.create_vault("MyVault")
    since = dt.datetime.now(dt.UTC)
    record = await vaults.add_secret_version(
        "myvault", "Pw", _version(1), NONCE, SEALED, "text/plain"
    )
    assert record is not None
    assert (record.vault, record.name, record.version) == ("MyVault", "Pw", _version(1))
    assert (record.content_type, record.enabled) == ("text/plain", True)
    assert record.nonce is None and record.ciphertext is None
    _assert_recent(record.created_at, since)
    assert await vaults.secret_version("MYVAULT", "PW", _version(1)) == record
    disabled = await vaults.add_secret_version(
        "myvault", "pw", _version(2), NONCE, SEALED, None, enabled=False
    )
    assert disabled is not None and not disabled.enabled
    assert await vaults.secret_version("myvault", "pw", None) == disabled


async def test_add_secret_version_to_a_missing_vault_stores_nothing(vaults: VaultStore) -> None:
    assert (
        await vaults.add_secret_version("no-vault", "pw", _version(1), NONCE, SEALED, None) is None
    )
    assert not await vaults.has_any_secret()


async def test_a_version_is_stored_once(vaults: VaultStore) -> None:
    await vaults.create_vault("myvault")
    await vaults.add_secret_version("myvault", "pw", _version(1), NONCE, SEALED, None)
    with pytest.raises(ValueError, match="exists already"):
        await vaults.add_secret_version("myvault", "PW", _version(1), NONCE, b"other", None)
    assert [r.version for r in await vaults.versions("myvault", "pw")] == [_version(1)]
    # the same version id under another secret name is another version
    assert await vaults.add_secret_version("myvault", "pw2", _version(1), NONCE, SEALED, None)


async def test_versions_newest_first(vaults: VaultStore) -> None:
    await vaults.create_vault("myvault")
    await vaults.create_vault("other-vault")
    # versions are ordered by when they were added, not by their id
    for n in (3, 1, 2):
        await vaults.add_secret_version("myvault", "pw", _version(n), NONCE, SEALED, None)
    await vaults.add_secret_version("myvault", "pw-2", _version(9), NONCE, SEALED, None)
    await vaults.add_secret_version("other-vault", "pw", _version(8), NONCE, SEALED, None)
    records = await vaults.versions("MyVault", "PW")
    assert [r.version for r in records] == [_version(2), _version(1), _version(3)]
    assert all(r.vault == "myvault" and r.name == "pw" for r in records)
    assert all(r.ciphertext is None and r.nonce is None for r in records)
    assert await vaults.versions("myvault", "missing") == []
    assert await vaults.versions("no-vault", "pw") == []


async def test_newest_versions_one_per_secret_by_lower_case_name(vaults: VaultStore) -> None:
    await vaults.create_vault("myvault")
    await vaults.create_vault("other-vault")
    await vaults.add_secret_version("myvault", "b-secret", _version(1), NONCE, SEALED, None)
    await vaults.add_secret_version("myvault", "A-secret", _version(2), NONCE, SEALED, None)
    await vaults.add_secret_version("myvault", "B-SECRET", _version(3), NONCE, SEALED, "x/y")
    await vaults.add_secret_version("myvault", "c-secret", _version(4), NONCE, SEALED, None)
    await vaults.add_secret_version("myvault", "a-secret", _version(5), NONCE, SEALED, None)
    await vaults.add_secret_version("other-vault", "z", _version(6), NONCE, SEALED, None)
    newest = await vaults.newest_versions("MYVAULT")
    assert [(r.name, r.version) for r in newest] == [
        ("a-secret", _version(5)),
        ("B-SECRET", _version(3)),  # each version keeps the spelling it was written with
        ("c-secret", _version(4)),
    ]
    assert newest[1].content_type == "x/y"
    assert all(r.ciphertext is None and r.nonce is None for r in newest)
    assert await vaults.newest_versions("no-vault") == []


async def test_ciphertext_only_when_asked(vaults: VaultStore) -> None:
    await vaults.create_vault("myvault")
    await vaults.add_secret_version("myvault", "pw", _version(1), NONCE, SEALED, None)
    await vaults.add_secret_version("myvault", "pw", _version(2), NONCE[::-1], b"newer", None)

    plain = await vaults.secret_version("myvault", "pw", None)
    assert plain is not None and plain.version == _version(2)
    assert plain.nonce is None and plain.ciphertext is None

    sealed = await vaults.secret_version("MyVault", "PW", None, with_ciphertext=True)
    assert sealed is not None and sealed.version == _version(2)
    assert (sealed.nonce, sealed.ciphertext) == (NONCE[::-1], b"newer")
    assert "newer" not in repr(sealed)

    older = await vaults.secret_version("myvault", "pw", _version(1), with_ciphertext=True)
    assert older is not None
    assert (older.version, older.nonce, older.ciphertext) == (_version(1), NONCE, SEALED)
    assert isinstance(older.ciphertext, bytes) and isinstance(older.nonce, bytes)

    assert await vaults.secret_version("myvault", "pw", _version(7)) is None
    assert await vaults.secret_version("myvault", "other", None) is None
    assert await vaults.secret_version("no-vault", "pw", None, with_ciphertext=True) is None


async def test_delete_secret_counts_versions(vaults: VaultStore) -> None:
    await vaults.create_vault("myvault")
    await vaults.create_vault("other-vault")
    for n in range(3):
        await vaults.add_secret_version("myvault", "gone", _version(n), NONCE, SEALED, None)
    await vaults.add_secret_version("myvault", "kept", _version(9), NONCE, SEALED, None)
    await vaults.add_secret_version("other-vault", "gone", _version(8), NONCE, SEALED, None)
    assert await vaults.delete_secret("MYVAULT", "GONE") == 3
    assert await vaults.delete_secret("myvault", "gone") == 0
    assert await vaults.delete_secret("no-vault", "gone") == 0
    assert [r.name for r in await vaults.newest_versions("myvault")] == ["kept"]
    assert [r.name for r in await vaults.newest_versions("other-vault")] == ["gone"]


async def test_has_any_secret(vaults: VaultStore) -> None:
    assert not await vaults.has_any_secret()
    await vaults.create_vault("myvault")
    assert not await vaults.has_any_secret()
    await vaults.add_secret_version("myvault", "pw", _version(1), NONCE, SEALED, None)
    assert await vaults.has_any_secret()
    await vaults.delete_secret("myvault", "pw")
    assert not await vaults.has_any_secret()


# -- grants ----------------------------------------------------------------------------------------
async def test_grants_add_is_idempotent(vaults: VaultStore) -> None:
    await vaults.create_vault("MyVault")
    since = dt.datetime.now(dt.UTC)
    added = await vaults.add_grant("myvault", PRINCIPAL, "get")
    assert added is not None
    grant, new = added
    assert new
    assert (grant.vault, grant.principal_id, grant.permission) == ("MyVault", PRINCIPAL, "get")
    _assert_recent(grant.created_at, since)
    assert await vaults.add_grant("MYVAULT", PRINCIPAL, "get") == (grant, False)
    assert await vaults.list_grants("myvault") == [grant]
    assert await vaults.add_grant("no-vault", PRINCIPAL, "get") is None
    assert await vaults.list_grants("no-vault") == []


async def test_grants_list_has_and_delete(vaults: VaultStore) -> None:
    await vaults.create_vault("myvault")
    await vaults.create_vault("other-vault")
    await vaults.add_grant("myvault", PRINCIPAL, "get")
    await vaults.add_grant("myvault", OTHER, "get")
    await vaults.add_grant("myvault", OTHER, "list")
    await vaults.add_grant("other-vault", PRINCIPAL, "get")
    assert [(g.principal_id, g.permission) for g in await vaults.list_grants("MyVault")] == [
        (OTHER, "get"),
        (OTHER, "list"),
        (PRINCIPAL, "get"),
    ]
    assert await vaults.has_grant("MYVAULT", PRINCIPAL, "get")
    assert not await vaults.has_grant("myvault", PRINCIPAL, "list")
    assert not await vaults.has_grant("no-vault", PRINCIPAL, "get")
    assert not await vaults.has_grant("myvault", PRINCIPAL.upper(), "get")  # compared as given

    assert await vaults.delete_grant("MyVault", PRINCIPAL, "get")
    assert not await vaults.delete_grant("myvault", PRINCIPAL, "get")
    assert not await vaults.delete_grant("no-vault", PRINCIPAL, "get")
    assert not await vaults.has_grant("myvault", PRINCIPAL, "get")
    assert await vaults.has_grant("other-vault", PRINCIPAL, "get")  # other vaults untouched
    assert [g.principal_id for g in await vaults.list_grants("myvault")] == [OTHER, OTHER]


# -- key check -------------------------------------------------------------------------------------
async def test_key_check_is_set_once(vaults: VaultStore) -> None:
    assert await vaults.key_check() is None
    assert await vaults.set_key_check("v1:first") == "v1:first"
    assert await vaults.set_key_check("v1:second") == "v1:first"
    assert await vaults.key_check() == "v1:first"


def test_key_check_row_is_the_one_the_key_module_names() -> None:
    assert KEY_CHECK_SETTING == secret_keys.KEY_CHECK_SETTING


# -- concurrency: two replicas (separate connection pools) on one database --------------------
@pytest.fixture
async def replicas(store_url: str, db: MetadataStore) -> AsyncIterator[list[VaultStore]]:
    second = MetadataStore(store_url)
    await second.open()
    try:
        yield [SqlVaultStore(db), SqlVaultStore(second)]
    finally:
        await second.close()


async def test_concurrent_create_vault_exactly_one_wins(replicas: list[VaultStore]) -> None:
    names = ["MyVault", "myvault", "MYVAULT", "myVault"]
    results = await asyncio.gather(
        *(replicas[i % 2].create_vault(name) for i, name in enumerate(names * 2))
    )
    assert sum(created for _, created in results) == 1
    winner = next(record for record, created in results if created)
    assert all(record == winner for record, _ in results)
    assert await replicas[0].list_vaults() == [winner]


async def test_concurrent_add_grant_exactly_one_adds(replicas: list[VaultStore]) -> None:
    await replicas[0].create_vault("myvault")
    results = await asyncio.gather(
        *(replicas[i % 2].add_grant("myvault", PRINCIPAL, "get") for i in range(8))
    )
    assert all(r is not None for r in results)
    added = [r for r in results if r is not None]
    assert sum(new for _, new in added) == 1
    assert len({grant for grant, _ in added}) == 1
    assert len(await replicas[1].list_grants("myvault")) == 1


async def test_concurrent_set_key_check_first_writer_wins(replicas: list[VaultStore]) -> None:
    values = [f"v1:check-{i}" for i in range(8)]
    results = await asyncio.gather(
        *(replicas[i % 2].set_key_check(value) for i, value in enumerate(values))
    )
    stored = await replicas[1].key_check()
    assert stored in values
    assert results == [stored] * len(values)


async def test_concurrent_versions_are_all_kept_in_order(replicas: list[VaultStore]) -> None:
    await replicas[0].create_vault("myvault")
    await asyncio.gather(
        *(
            replicas[i % 2].add_secret_version("myvault", "pw", _version(i), NONCE, SEALED, None)
            for i in range(8)
        )
    )
    records = await replicas[0].versions("myvault", "pw")
    assert sorted(r.version for r in records) == [_version(i) for i in range(8)]
    newest = await replicas[1].secret_version("myvault", "pw", None)
    assert newest == records[0]


# -- an unreachable database -----------------------------------------------------------------------
class _EngineDatabase:
    """The least :class:`SqlDatabase`: transactions straight on an engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    def read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self.engine.connect()

    def write(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self.engine.begin()


class _Switch:
    """A database that forwards to ``target``, which the test swaps."""

    def __init__(self, target: SqlDatabase) -> None:
        self.target = target

    def read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self.target.read()

    def write(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self.target.write()


@pytest.fixture
async def unreachable(database_url: str, tmp_path: Path) -> AsyncIterator[SqlDatabase]:
    """A database of the same kind that cannot be used: a SQLite file another connection holds
    an exclusive lock on (past a short busy timeout), a PostgreSQL port nothing listens on."""
    holder = None
    if database_url.startswith("sqlite"):
        path = tmp_path / "locked.db"
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("CREATE TABLE t (x INTEGER)")
        holder.execute("BEGIN EXCLUSIVE")
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 0.1})
    else:
        engine = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:1/postgres")
    try:
        yield _EngineDatabase(engine)
    finally:
        await engine.dispose()
        if holder is not None:
            holder.close()


Call = Callable[[VaultStore], Awaitable[object]]


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.create_vault("myvault"),
        lambda s: s.get_vault("myvault"),
        lambda s: s.secret_version("myvault", "pw", None, with_ciphertext=True),
        lambda s: s.add_grant("myvault", PRINCIPAL, "get"),
        lambda s: s.key_check(),
        lambda s: s.set_key_check("v1:x"),
    ],
    ids=["create_vault", "get_vault", "secret_version", "add_grant", "key_check", "set_key_check"],
)
async def test_an_unreachable_database_is_store_unavailable(
    unreachable: SqlDatabase, call: Call
) -> None:
    with pytest.raises(StoreUnavailable) as info:
        await call(SqlVaultStore(unreachable))
    assert "unavailable" in str(info.value)


async def test_vault_reports_an_unreachable_database_as_secret_store_unavailable(
    db: MetadataStore, unreachable: SqlDatabase
) -> None:
    switch = _Switch(db)
    vault = BuiltinVault(SqlVaultStore(switch), bytes(range(32)))
    await vault.open()
    await vault.create_vault("myvault")
    await vault.grant("myvault", PRINCIPAL)
    info = await vault.set_secret("myvault", "pw", "the-value")
    assert (await vault.resolve(info.id, PRINCIPAL)).reveal() == "the-value"
    switch.target = unreachable
    with pytest.raises(e.SecretStoreUnavailable) as raised:
        await vault.resolve(info.id, PRINCIPAL)
    assert raised.value.status == 503
    assert "the-value" not in str(raised.value)
