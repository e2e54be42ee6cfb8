"""Builders shared by the metadata conformance suites (``tests/test_metadata_*.py``).

The suites run on both SQLite and PostgreSQL through the ``database_url`` fixture of
``tests/conftest.py``; :func:`opened` turns that into an open :class:`Database`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from entrepot.config import database_url as async_database_url
from entrepot.metadata.database import Database
from entrepot.metadata.records import (
    Action,
    NewCacheRule,
    NewCredentialSet,
    NewRegistry,
    NewToken,
    OperationRecord,
    OperationState,
    RegistryKey,
    ResourceKind,
    State,
    TokenRole,
)
from entrepot.metadata.resources import SqlResourceStore

SUB = "00000000-0000-0000-0000-000000000000"
OTHER_SUB = "11111111-1111-1111-1111-111111111111"
NOW = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)


def store_url(database_url: str, tmp_path: Path) -> str:
    """The async SQLAlchemy URL of the ``database_url`` fixture's database."""
    return async_database_url(database_url, tmp_path)


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Database]:
    """An opened (migrated) :class:`Database` on ``url``, closed afterwards."""
    db = Database(url)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


def registry(
    name: str,
    resource_group: str = "my-rg",
    sub: str = SUB,
    *,
    state: State = State.SUCCEEDED,
    now: dt.datetime = NOW,
    tags: dict[str, str] | None = None,
) -> NewRegistry:
    return NewRegistry(
        key=RegistryKey(sub, resource_group, name),
        location="local",
        sku="Basic",
        tags={} if tags is None else tags,
        state=state,
        actor="tester",
        now=now,
    )


def credential_set(registry_id: int, name: str, *, now: dt.datetime = NOW) -> NewCredentialSet:
    return NewCredentialSet(
        registry_id=registry_id,
        name=name,
        login_server="docker.io",
        identity_type="SystemAssigned",
        principal_id=str(uuid.uuid4()),
        auth_credentials=[],
        actor="tester",
        now=now,
    )


def cache_rule(
    registry_id: int,
    name: str,
    target: str,
    *,
    credential_set_id: int | None = None,
    now: dt.datetime = NOW,
) -> NewCacheRule:
    """A rule for ``target`` (``"team/*"`` and ``"*"`` are wildcard targets)."""
    wildcard = target.endswith("/*") or target == "*"
    target_path = target[:-2] if target.endswith("/*") else ("" if target == "*" else target)
    return NewCacheRule(
        registry_id=registry_id,
        name=name,
        source_repository=f"docker.io/{target}",
        target_repository=target,
        target_path=target_path,
        wildcard=wildcard,
        credential_set_id=credential_set_id,
        actor="tester",
        now=now,
    )


def operation(
    op_id: str,
    started_at: dt.datetime = NOW,
    *,
    kind: ResourceKind = ResourceKind.CACHE_RULE,
    registry_id: int | None = None,
    row_id: int = 1,
    action: Action = Action.CREATE,
) -> OperationRecord:
    return OperationRecord(
        id=op_id,
        resource_id=f"/subscriptions/{SUB}/x/{op_id}",
        kind=kind,
        registry_id=registry_id,
        row_id=row_id,
        action=action,
        status=OperationState.IN_PROGRESS,
        started_at=started_at,
    )


async def add_registry(
    store: SqlResourceStore,
    name: str = "Registry-One",
    resource_group: str = "my-rg",
    sub: str = SUB,
) -> int:
    """Insert a registry (state Succeeded) in its own write transaction; its id."""
    async with store.write() as tx:
        return await tx.insert_registry(registry(name, resource_group, sub))


def assert_aware_utc(*values: dt.datetime | None) -> None:
    for value in values:
        assert isinstance(value, dt.datetime), value
        assert value.tzinfo is not None, value
        assert value.utcoffset() == dt.timedelta(0), value


def token(token_hash: str, name: str, role: TokenRole = TokenRole.ADMIN) -> NewToken:
    """A token named ``name`` (its description too) with the given hash, created now."""
    return NewToken(
        name=name,
        role=role,
        token_hash=token_hash,
        description=name,
        actor="tester",
        now=dt.datetime.now(dt.UTC),
    )
