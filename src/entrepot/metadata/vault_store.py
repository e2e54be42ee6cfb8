"""The SQL implementation of :class:`~entrepot.metadata.protocols.VaultStore` (SQLite, PostgreSQL).

Tables (:mod:`entrepot.metadata.schema`): ``vaults``, ``vault_secrets`` (one row per version),
``vault_grants``, and the ``settings`` row :data:`KEY_CHECK_SETTING`. Names are looked up by
their lower-case ``name_key``; "newest" means most recently added (highest row id).

Each method runs in one transaction of the database's :meth:`read` or :meth:`write`. Methods
that check and then write (create a vault, add a version or a grant, set the key check) do both
in one write transaction and also stand on the tables' unique and foreign keys: if a concurrent
writer gets in first anyway, the constraint fails, the transaction rolls back and the method
answers from what the winner stored, as if it had run second. Operational database failures
(connection refused or lost, lock timeouts) come out as
:class:`~entrepot.metadata.protocols.StoreUnavailable`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from entrepot.metadata import schema as t
from entrepot.metadata.protocols import StoreUnavailable
from entrepot.metadata.records import GrantRecord, SecretVersionRecord, VaultRecord

__all__ = ["KEY_CHECK_SETTING", "SqlDatabase", "SqlVaultStore"]

KEY_CHECK_SETTING = "vault.key_check"
"""The ``settings`` key of the key-check value (the same row :mod:`entrepot.secrets.keys` names)."""

_v = t.vaults.c
_s = t.vault_secrets.c
_g = t.vault_grants.c

_VERSION_COLUMNS = (
    _v.name.label("vault"),
    _s.name,
    _s.version,
    _s.content_type,
    _s.created_at,
    _s.enabled,
)
_SEALED_COLUMNS = (*_VERSION_COLUMNS, _s.nonce, _s.ciphertext)
_SECRETS_OF_VAULTS = t.vault_secrets.join(t.vaults, _v.id == _s.vault_id)
_GRANTS_OF_VAULTS = t.vault_grants.join(t.vaults, _v.id == _g.vault_id)


class SqlDatabase(Protocol):
    """What :class:`SqlVaultStore` needs of the metadata :class:`Database`.

    ``write()`` yields a connection in a transaction that commits when the block ends without
    an exception and rolls back otherwise; ``read()`` yields one that sees committed data.
    """

    def read(self) -> AbstractAsyncContextManager[AsyncConnection]: ...

    def write(self) -> AbstractAsyncContextManager[AsyncConnection]: ...


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@asynccontextmanager
async def _unavailable_as_domain_error() -> AsyncIterator[None]:
    try:
        yield
    except (OperationalError, InterfaceError, OSError) as exc:
        raise StoreUnavailable(
            f"the metadata database is unavailable ({type(exc).__name__})"
        ) from exc


def _vault_id(name: str) -> sa.ScalarSelect[Any]:
    """The id of vault ``name`` as a scalar subquery (NULL, matching nothing, when absent)."""
    return sa.select(_v.id).where(_v.name_key == name.lower()).scalar_subquery()


def _version(m: RowMapping, sealed: bool = False) -> SecretVersionRecord:
    return SecretVersionRecord(
        vault=m["vault"],
        name=m["name"],
        version=m["version"],
        content_type=m["content_type"],
        created_at=m["created_at"],
        enabled=bool(m["enabled"]),
        nonce=bytes(m["nonce"]) if sealed else None,
        ciphertext=bytes(m["ciphertext"]) if sealed else None,
    )


class SqlVaultStore:
    """:class:`~entrepot.metadata.protocols.VaultStore` over a :class:`SqlDatabase`.

    :param db: the open metadata database; only its ``read()`` and ``write()`` are used.
    """

    def __init__(self, db: SqlDatabase) -> None:
        self._db = db

    # -- vaults -------------------------------------------------------------------------------
    async def create_vault(self, name: str) -> tuple[VaultRecord, bool]:
        try:
            async with self._write() as conn:
                existing = await self._vault_row(conn, name)
                if existing is not None:
                    return VaultRecord(existing["name"], existing["created_at"]), False
                now = _now()
                await conn.execute(
                    sa.insert(t.vaults).values(name=name, name_key=name.lower(), created_at=now)
                )
        except IntegrityError:  # created concurrently: the winner's vault stands
            winner = await self.get_vault(name)
            if winner is None:
                raise
            return winner, False
        return VaultRecord(name, now), True

    async def get_vault(self, name: str) -> VaultRecord | None:
        async with self._read() as conn:
            row = await self._vault_row(conn, name)
        return None if row is None else VaultRecord(row["name"], row["created_at"])

    async def list_vaults(self) -> list[VaultRecord]:
        query = sa.select(_v.name, _v.created_at).order_by(_v.name_key)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [VaultRecord(r.name, r.created_at) for r in rows]

    async def delete_vault(self, name: str) -> bool:
        async with self._write() as conn:
            row = await self._vault_row(conn, name)
            if row is None:
                return False
            await conn.execute(sa.delete(t.vault_grants).where(_g.vault_id == row["id"]))
            await conn.execute(sa.delete(t.vault_secrets).where(_s.vault_id == row["id"]))
            await conn.execute(sa.delete(t.vaults).where(_v.id == row["id"]))
        return True

    # -- secret versions ----------------------------------------------------------------------
    async def add_secret_version(
        self,
        vault: str,
        name: str,
        version: str,
        nonce: bytes,
        ciphertext: bytes,
        content_type: str | None,
        enabled: bool = True,
    ) -> SecretVersionRecord | None:
        """See the protocol.

        :raises ValueError: that version of that secret exists already (versions are meant
            to be unique ids, so this is a caller's bug).
        """
        try:
            async with self._write() as conn:
                vrow = await self._vault_row(conn, vault)
                if vrow is None:
                    return None
                now = _now()
                await conn.execute(
                    sa.insert(t.vault_secrets).values(
                        vault_id=vrow["id"],
                        name=name,
                        name_key=name.lower(),
                        version=version,
                        nonce=nonce,
                        ciphertext=ciphertext,
                        content_type=content_type,
                        created_at=now,
                        enabled=enabled,
                    )
                )
        except IntegrityError:  # the vault was deleted meanwhile, or a duplicate version
            if await self.get_vault(vault) is None:
                return None
            raise ValueError(
                f"version {version} of secret {name!r} exists already in vault {vault!r}"
            ) from None
        return SecretVersionRecord(vrow["name"], name, version, content_type, now, enabled)

    async def newest_versions(self, vault: str) -> list[SecretVersionRecord]:
        newest = (
            sa.select(sa.func.max(_s.id).label("id"))
            .where(_s.vault_id == _vault_id(vault))
            .group_by(_s.name_key)
            .subquery()
        )
        query = (
            sa.select(*_VERSION_COLUMNS)
            .select_from(_SECRETS_OF_VAULTS.join(newest, newest.c.id == _s.id))
            .order_by(_s.name_key)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_version(r) for r in rows]

    async def versions(self, vault: str, name: str) -> list[SecretVersionRecord]:
        query = (
            sa.select(*_VERSION_COLUMNS)
            .select_from(_SECRETS_OF_VAULTS)
            .where(_v.name_key == vault.lower(), _s.name_key == name.lower())
            .order_by(_s.id.desc())
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_version(r) for r in rows]

    async def secret_version(
        self, vault: str, name: str, version: str | None, *, with_ciphertext: bool = False
    ) -> SecretVersionRecord | None:
        query = (
            sa.select(*(_SEALED_COLUMNS if with_ciphertext else _VERSION_COLUMNS))
            .select_from(_SECRETS_OF_VAULTS)
            .where(_v.name_key == vault.lower(), _s.name_key == name.lower())
        )
        if version is not None:
            query = query.where(_s.version == version)
        query = query.order_by(_s.id.desc()).limit(1)
        async with self._read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _version(row, sealed=with_ciphertext)

    async def delete_secret(self, vault: str, name: str) -> int:
        query = sa.delete(t.vault_secrets).where(
            _s.vault_id == _vault_id(vault), _s.name_key == name.lower()
        )
        async with self._write() as conn:
            return int((await conn.execute(query)).rowcount)

    async def has_any_secret(self) -> bool:
        async with self._read() as conn:
            row = (await conn.execute(sa.select(_s.id).limit(1))).first()
        return row is not None

    # -- grants -------------------------------------------------------------------------------
    async def add_grant(
        self, vault: str, principal_id: str, permission: str
    ) -> tuple[GrantRecord, bool] | None:
        try:
            async with self._write() as conn:
                vrow = await self._vault_row(conn, vault)
                if vrow is None:
                    return None
                granted_at = (
                    await conn.execute(
                        sa.select(_g.created_at).where(
                            _g.vault_id == vrow["id"],
                            _g.principal_id == principal_id,
                            _g.permission == permission,
                        )
                    )
                ).scalar_one_or_none()
                if granted_at is not None:
                    return GrantRecord(vrow["name"], principal_id, permission, granted_at), False
                now = _now()
                await conn.execute(
                    sa.insert(t.vault_grants).values(
                        vault_id=vrow["id"],
                        principal_id=principal_id,
                        permission=permission,
                        created_at=now,
                    )
                )
        except IntegrityError:  # granted concurrently, or the vault was deleted meanwhile
            for grant in await self.list_grants(vault):
                if grant.principal_id == principal_id and grant.permission == permission:
                    return grant, False
            return None
        return GrantRecord(vrow["name"], principal_id, permission, now), True

    async def list_grants(self, vault: str) -> list[GrantRecord]:
        query = (
            sa.select(_v.name, _g.principal_id, _g.permission, _g.created_at)
            .select_from(_GRANTS_OF_VAULTS)
            .where(_v.name_key == vault.lower())
            .order_by(_g.principal_id, _g.permission)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [GrantRecord(r.name, r.principal_id, r.permission, r.created_at) for r in rows]

    async def delete_grant(self, vault: str, principal_id: str, permission: str) -> bool:
        query = sa.delete(t.vault_grants).where(
            _g.vault_id == _vault_id(vault),
            _g.principal_id == principal_id,
            _g.permission == permission,
        )
        async with self._write() as conn:
            return int((await conn.execute(query)).rowcount) > 0

    async def has_grant(self, vault: str, principal_id: str, permission: str) -> bool:
        query = (
            sa.select(_g.vault_id)
            .select_from(_GRANTS_OF_VAULTS)
            .where(
                _v.name_key == vault.lower(),
                _g.principal_id == principal_id,
                _g.permission == permission,
            )
        )
        async with self._read() as conn:
            return (await conn.execute(query)).first() is not None

    # -- key check ----------------------------------------------------------------------------
    async def key_check(self) -> str | None:
        async with self._read() as conn:
            return await self._key_check(conn)

    async def set_key_check(self, value: str) -> str:
        try:
            async with self._write() as conn:
                current = await self._key_check(conn)
                if current is not None:
                    return current
                await conn.execute(sa.insert(t.settings).values(key=KEY_CHECK_SETTING, value=value))
        except IntegrityError:  # set concurrently: the first value stands
            winner = await self.key_check()
            if winner is None:
                raise
            return winner
        return value

    # -- helpers ------------------------------------------------------------------------------
    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        async with _unavailable_as_domain_error(), self._db.read() as conn:
            yield conn

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with _unavailable_as_domain_error(), self._db.write() as conn:
            yield conn

    @staticmethod
    async def _vault_row(conn: AsyncConnection, name: str) -> RowMapping | None:
        query = sa.select(_v.id, _v.name, _v.created_at).where(_v.name_key == name.lower())
        return (await conn.execute(query)).mappings().first()

    @staticmethod
    async def _key_check(conn: AsyncConnection) -> str | None:
        query = sa.select(t.settings.c.value).where(t.settings.c.key == KEY_CHECK_SETTING)
        value = (await conn.execute(query)).scalar_one_or_none()
        return None if value is None else str(value)
