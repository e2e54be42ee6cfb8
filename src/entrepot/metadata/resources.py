"""Registries, cache rules, credential sets, API tokens and settings in SQL.

:class:`SqlResourceStore` implements :class:`entrepot.metadata.protocols.ResourceStore`.
Reads that answer one request (a registry, a rule with its registry, a token) are prebuilt
point queries run without a transaction (:meth:`Database.fetch_one`); everything that checks
and then writes goes through :meth:`SqlResourceStore.write`, one serialised transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from entrepot.metadata import schema as t
from entrepot.metadata.database import Database, PointQuery, Row, as_utc, escape_like, utcnow
from entrepot.metadata.leases import acquire_lease, release_lease
from entrepot.metadata.records import (
    Action,
    Audit,
    CacheRuleRecord,
    Changes,
    ChildRecord,
    CredentialSetRecord,
    NewCacheRule,
    NewCredentialSet,
    NewRegistry,
    NewToken,
    OperationRecord,
    OperationState,
    RegistryHead,
    RegistryKey,
    RegistryRecord,
    ResourceChanges,
    ResourceKind,
    State,
    TokenRecord,
    TokenRole,
)

__all__ = ["ResourceTransaction", "SqlResourceStore"]

_TABLES: dict[ResourceKind, sa.Table] = {
    ResourceKind.REGISTRY: t.registries,
    ResourceKind.CACHE_RULE: t.cache_rules,
    ResourceKind.CREDENTIAL_SET: t.credential_sets,
}
_AUDIT = "provisioning_state, created_at, created_by, modified_at, modified_by"
_REGISTRY_COLUMNS = f"id, subscription, resource_group, name, location, sku, tags, {_AUDIT}"
_RULE_COLUMNS = (
    "id, registry_id, name, source_repository, target_repository, target_path, wildcard, "
    f"credential_set_id, {_AUDIT}"
)
_SET_COLUMNS = (
    f"id, registry_id, name, login_server, identity_type, principal_id, auth_credentials, {_AUDIT}"
)
_REGISTRY_WHERE = (
    "subscription = :subscription AND resource_group_key = :resource_group AND name_key = :name"
)


def _prefixed(columns: str, alias: str, prefix: str) -> str:
    return ", ".join(f"{alias}.{c.strip()} AS {prefix}{c.strip()}" for c in columns.split(","))


_GET_REGISTRY = PointQuery(f"SELECT {_REGISTRY_COLUMNS} FROM registries WHERE {_REGISTRY_WHERE}")
_GET_REGISTRIES_NAMED = PointQuery(
    f"SELECT {_REGISTRY_COLUMNS} FROM registries WHERE name_key = :name ORDER BY id LIMIT 2"
)
_GET_REGISTRY_WITH_RULE = PointQuery(
    f"SELECT {_prefixed(_REGISTRY_COLUMNS, 'r', 'r_')}, {_prefixed(_RULE_COLUMNS, 'c', 'c_')}, "
    "s.name AS c_credential_set_name "
    "FROM registries r "
    "LEFT JOIN cache_rules c ON c.registry_id = r.id AND c.name_key = :child "
    "LEFT JOIN credential_sets s ON s.id = c.credential_set_id "
    "WHERE r.subscription = :subscription AND r.resource_group_key = :resource_group "
    "AND r.name_key = :name"
)
_GET_REGISTRY_WITH_SET = PointQuery(
    f"SELECT {_prefixed(_REGISTRY_COLUMNS, 'r', 'r_')}, {_prefixed(_SET_COLUMNS, 'c', 'c_')} "
    "FROM registries r "
    "LEFT JOIN credential_sets c ON c.registry_id = r.id AND c.name_key = :child "
    "WHERE r.subscription = :subscription AND r.resource_group_key = :resource_group "
    "AND r.name_key = :name"
)
_TOKEN_COLUMNS = "id, name, role, description, created_at, created_by"
_GET_TOKEN = PointQuery(f"SELECT {_TOKEN_COLUMNS} FROM admin_tokens WHERE token_hash = :token_hash")
_GET_OPERATION = PointQuery(
    "SELECT id, resource_id, resource_kind, registry_id, row_id, action, status, started_at, "
    "ended_at, error_code, error_message FROM operations WHERE id = :id"
)
_COUNT_REGISTRIES = PointQuery("SELECT id, name FROM registries ORDER BY id LIMIT 2")
_HEADS_NAMED = PointQuery(
    "SELECT id, name, rules_version FROM registries WHERE name_key = :name ORDER BY id LIMIT 2"
)
_FIRST_HEADS = PointQuery("SELECT id, name, rules_version FROM registries ORDER BY id LIMIT 2")
_RULES_OF_REGISTRY = PointQuery(
    f"SELECT {_prefixed(_RULE_COLUMNS, 'c', '')}, s.name AS credential_set_name "
    "FROM cache_rules c LEFT JOIN credential_sets s ON s.id = c.credential_set_id "
    "WHERE c.registry_id = :registry_id ORDER BY c.id"
)
_BUMP_RULES_VERSION = sa.text(
    "UPDATE registries SET rules_version = rules_version + 1 WHERE id = :registry_id"
)
_REGISTRY_OF_RULE = sa.text("SELECT registry_id FROM cache_rules WHERE id = :row_id")
_COUNT_RESOURCES = PointQuery(
    "SELECT (SELECT count(*) FROM registries) AS registries, "
    "(SELECT count(*) FROM cache_rules) AS cache_rules, "
    "(SELECT count(*) FROM credential_sets) AS credential_sets"
)


# -- row -> record ------------------------------------------------------------------------------
def _audit(row: Row, p: str = "") -> Audit:
    created, modified = as_utc(row[p + "created_at"]), as_utc(row[p + "modified_at"])
    assert created is not None and modified is not None
    return Audit(created, row[p + "created_by"], modified, row[p + "modified_by"])


def registry_record(row: Row, p: str = "") -> RegistryRecord:
    return RegistryRecord(
        id=int(row[p + "id"]),
        subscription=row[p + "subscription"],
        resource_group=row[p + "resource_group"],
        name=row[p + "name"],
        location=row[p + "location"],
        sku=row[p + "sku"],
        tags=json.loads(row[p + "tags"]),
        state=State(row[p + "provisioning_state"]),
        audit=_audit(row, p),
    )


def rule_record(row: Row, p: str = "") -> CacheRuleRecord:
    set_id = row[p + "credential_set_id"]
    return CacheRuleRecord(
        id=int(row[p + "id"]),
        registry_id=int(row[p + "registry_id"]),
        name=row[p + "name"],
        source_repository=row[p + "source_repository"],
        target_repository=row[p + "target_repository"],
        target_path=row[p + "target_path"],
        wildcard=bool(row[p + "wildcard"]),
        credential_set_id=None if set_id is None else int(set_id),
        credential_set_name=row.get(p + "credential_set_name"),
        state=State(row[p + "provisioning_state"]),
        audit=_audit(row, p),
    )


def set_record(row: Row, p: str = "") -> CredentialSetRecord:
    return CredentialSetRecord(
        id=int(row[p + "id"]),
        registry_id=int(row[p + "registry_id"]),
        name=row[p + "name"],
        login_server=row[p + "login_server"],
        identity_type=row[p + "identity_type"],
        principal_id=row[p + "principal_id"],
        auth_credentials=json.loads(row[p + "auth_credentials"]),
        state=State(row[p + "provisioning_state"]),
        audit=_audit(row, p),
    )


def operation_record(row: Row) -> OperationRecord:
    started = as_utc(row["started_at"])
    assert started is not None
    return OperationRecord(
        id=row["id"],
        resource_id=row["resource_id"],
        kind=ResourceKind(row["resource_kind"]),
        registry_id=None if row["registry_id"] is None else int(row["registry_id"]),
        row_id=int(row["row_id"]),
        action=Action(row["action"]),
        status=OperationState(row["status"]),
        started_at=started,
        ended_at=as_utc(row["ended_at"]),
        error_code=row["error_code"],
        error_message=row["error_message"],
    )


def token_record(row: Row) -> TokenRecord:
    created = as_utc(row["created_at"])
    assert created is not None
    return TokenRecord(
        id=int(row["id"]),
        name=row["name"],
        role=TokenRole(row["role"]),
        description=row["description"],
        created_at=created,
        created_by=row["created_by"],
    )


def _child_record(kind: ResourceKind, row: Row) -> ChildRecord:
    return rule_record(row) if kind is ResourceKind.CACHE_RULE else set_record(row)


def _audit_values(actor: str, now: dt.datetime, state: State) -> dict[str, Any]:
    return {
        "provisioning_state": state.value,
        "created_at": now,
        "created_by": actor,
        "modified_at": now,
        "modified_by": actor,
    }


# -- transactions -------------------------------------------------------------------------------
class ResourceTransaction:
    """Reads and writes of resources inside one serialised transaction (see ``write()``).

    Every method sees the writes made earlier in the same transaction. Names are matched
    case-insensitively.
    """

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._registries_changed = False
        self._rules_changed: set[int] = set()

    @property
    def changes(self) -> ResourceChanges:
        """What this transaction changed so far (registries created or deleted, rules)."""
        return ResourceChanges(self._registries_changed, frozenset(self._rules_changed))

    async def _rules_changing(self, registry_id: int | None = None, rule_id: int = 0) -> None:
        """Bump the ``rules_version`` of the registry (given, or that of rule ``rule_id``)."""
        if registry_id is None:
            found = (await self._conn.execute(_REGISTRY_OF_RULE, {"row_id": rule_id})).first()
            if found is None:
                return
            registry_id = int(found[0])
        await self._conn.execute(_BUMP_RULES_VERSION, {"registry_id": registry_id})
        self._rules_changed.add(registry_id)

    async def _rows(self, query: Any) -> Sequence[Row]:
        return (await self._conn.execute(query)).mappings().all()

    async def _row(self, query: Any) -> Row | None:
        return (await self._conn.execute(query)).mappings().first()

    # registries
    async def registry(self, key: RegistryKey) -> RegistryRecord | None:
        r = t.registries.c
        row = await self._row(
            sa.select(t.registries).where(
                r.subscription == key.subscription,
                r.resource_group_key == key.resource_group.lower(),
                r.name_key == key.name.lower(),
            )
        )
        return None if row is None else registry_record(row)

    async def registry_by_id(self, registry_id: int) -> RegistryRecord | None:
        row = await self._row(sa.select(t.registries).where(t.registries.c.id == registry_id))
        return None if row is None else registry_record(row)

    async def registries_named(self, name: str) -> list[RegistryRecord]:
        """Registries called ``name`` in any subscription and resource group."""
        rows = await self._rows(
            sa.select(t.registries).where(t.registries.c.name_key == name.lower())
        )
        return [registry_record(r) for r in rows]

    async def registries(
        self, subscription: str, resource_group: str, after: str, limit: int
    ) -> list[RegistryRecord]:
        """Registries of a resource group with lower-cased names after ``after``, by name."""
        r = t.registries.c
        rows = await self._rows(
            sa.select(t.registries)
            .where(
                r.subscription == subscription,
                r.resource_group_key == resource_group.lower(),
                r.name_key > after,
            )
            .order_by(r.name_key)
            .limit(limit)
        )
        return [registry_record(row) for row in rows]

    async def insert_registry(self, new: NewRegistry) -> int:
        values = {
            "subscription": new.key.subscription,
            "resource_group": new.key.resource_group,
            "resource_group_key": new.key.resource_group.lower(),
            "name": new.key.name,
            "name_key": new.key.name.lower(),
            "location": new.location,
            "sku": new.sku,
            "tags": json.dumps(new.tags),
            **_audit_values(new.actor, new.now, new.state),
        }
        self._registries_changed = True
        return await self._insert(t.registries, values)

    # children (cache rules, credential sets)
    async def child(self, kind: ResourceKind, registry_id: int, name: str) -> ChildRecord | None:
        table = _TABLES[kind]
        row = await self._row(
            self._child_select(kind).where(
                table.c.registry_id == registry_id, table.c.name_key == name.lower()
            )
        )
        return None if row is None else _child_record(kind, row)

    async def by_id(self, kind: ResourceKind, row_id: int) -> Any:
        """The record of ``kind`` with ``row_id`` (registry, rule or set), or ``None``."""
        if kind is ResourceKind.REGISTRY:
            return await self.registry_by_id(row_id)
        table = _TABLES[kind]
        row = await self._row(self._child_select(kind).where(table.c.id == row_id))
        return None if row is None else _child_record(kind, row)

    async def children(
        self, kind: ResourceKind, registry_id: int, after: str, limit: int
    ) -> list[ChildRecord]:
        """Rules or sets of a registry with lower-cased names after ``after``, by name."""
        table = _TABLES[kind]
        rows = await self._rows(
            self._child_select(kind)
            .where(table.c.registry_id == registry_id, table.c.name_key > after)
            .order_by(table.c.name_key)
            .limit(limit)
        )
        return [_child_record(kind, r) for r in rows]

    async def count_children(self, kind: ResourceKind, registry_id: int) -> int:
        table = _TABLES[kind]
        query = (
            sa.select(sa.func.count()).select_from(table).where(table.c.registry_id == registry_id)
        )
        return int((await self._conn.execute(query)).scalar_one())

    async def insert_cache_rule(self, new: NewCacheRule) -> int:
        values = {
            "registry_id": new.registry_id,
            "name": new.name,
            "name_key": new.name.lower(),
            "source_repository": new.source_repository,
            "target_repository": new.target_repository,
            "target_path": new.target_path,
            "wildcard": new.wildcard,
            "credential_set_id": new.credential_set_id,
            **_audit_values(new.actor, new.now, State.CREATING),
        }
        await self._rules_changing(new.registry_id)
        return await self._insert(t.cache_rules, values)

    async def insert_credential_set(self, new: NewCredentialSet) -> int:
        values = {
            "registry_id": new.registry_id,
            "name": new.name,
            "name_key": new.name.lower(),
            "login_server": new.login_server,
            "identity_type": new.identity_type,
            "principal_id": new.principal_id,
            "auth_credentials": json.dumps(new.auth_credentials),
            **_audit_values(new.actor, new.now, State.CREATING),
        }
        return await self._insert(t.credential_sets, values)

    async def update(self, kind: ResourceKind, row_id: int, changes: Changes) -> None:
        """Write ``changes`` to resource ``row_id`` of ``kind`` (nothing if it is gone)."""
        values: dict[str, Any] = {}
        if changes.state is not None:
            values["provisioning_state"] = changes.state.value
        if changes.actor is not None:
            values["modified_by"] = changes.actor
            values["modified_at"] = changes.now or utcnow()
        if changes.sku is not None:
            values["sku"] = changes.sku
        if changes.tags is not None:
            values["tags"] = json.dumps(changes.tags)
        if changes.identity_type is not None:
            values["identity_type"] = changes.identity_type
        if changes.auth_credentials is not None:
            values["auth_credentials"] = json.dumps(changes.auth_credentials)
        if changes.set_credential_set:
            values["credential_set_id"] = changes.credential_set_id
        if values:
            table = _TABLES[kind]
            if kind is ResourceKind.CACHE_RULE:
                await self._rules_changing(rule_id=row_id)
            await self._conn.execute(sa.update(table).where(table.c.id == row_id).values(values))

    async def delete(self, kind: ResourceKind, row_id: int) -> bool:
        table = _TABLES[kind]
        if kind is ResourceKind.CACHE_RULE:
            await self._rules_changing(rule_id=row_id)
        elif kind is ResourceKind.REGISTRY:
            self._registries_changed = True
        result = await self._conn.execute(sa.delete(table).where(table.c.id == row_id))
        return int(result.rowcount) > 0

    # cache-rule specifics
    async def rules_with_targets(
        self, registry_id: int, target_paths: Sequence[str], wildcard: bool
    ) -> list[CacheRuleRecord]:
        """Rules of ``registry_id`` (wildcard or static) whose target path is in the list."""
        c = t.cache_rules.c
        rows = await self._rows(
            self._child_select(ResourceKind.CACHE_RULE).where(
                c.registry_id == registry_id,
                c.wildcard == wildcard,
                c.target_path.in_(list(target_paths)),
            )
        )
        return [rule_record(r) for r in rows]

    async def wildcard_rules_under(
        self, registry_id: int, prefix: str, limit: int = 5
    ) -> list[CacheRuleRecord]:
        """Wildcard rules whose target path lies strictly below ``prefix`` (all, for ``""``)."""
        c = t.cache_rules.c
        query = self._child_select(ResourceKind.CACHE_RULE).where(
            c.registry_id == registry_id, c.wildcard.is_(True)
        )
        if prefix:
            query = query.where(c.target_path.like(escape_like(prefix) + "/%", escape="\\"))
        return [rule_record(r) for r in await self._rows(query.limit(limit))]

    async def rules_using_credential_set(self, credential_set_id: int, limit: int = 5) -> list[str]:
        """Names of rules that reference the credential set, by name (at most ``limit``)."""
        c = t.cache_rules.c
        query = (
            sa.select(c.name)
            .where(c.credential_set_id == credential_set_id)
            .order_by(c.name_key)
            .limit(limit)
        )
        return [str(x) for x in (await self._conn.execute(query)).scalars()]

    async def credential_set_ids(self) -> list[int]:
        """The ids of every credential set of every registry, in id order."""
        query = sa.select(t.credential_sets.c.id).order_by(t.credential_sets.c.id)
        return [int(x) for x in (await self._conn.execute(query)).scalars()]

    # settings and tokens
    async def setting(self, key: str) -> str | None:
        query = sa.select(t.settings.c.value).where(t.settings.c.key == key)
        row = (await self._conn.execute(query)).first()
        return None if row is None else str(row[0])

    async def put_setting(self, key: str, value: str) -> None:
        await self._conn.execute(sa.delete(t.settings).where(t.settings.c.key == key))
        await self._conn.execute(sa.insert(t.settings).values(key=key, value=value))

    async def count_tokens(self, role: TokenRole | None = None) -> int:
        """How many tokens exist (of ``role``, when given)."""
        query = sa.select(sa.func.count()).select_from(t.admin_tokens)
        if role is not None:
            query = query.where(t.admin_tokens.c.role == role.value)
        return int((await self._conn.execute(query)).scalar_one())

    async def token_named(self, name: str) -> TokenRecord | None:
        """The token called ``name`` (any case), or ``None``."""
        query = sa.select(*_token_columns()).where(t.admin_tokens.c.name_key == name.lower())
        row = await self._row(query)
        return None if row is None else token_record(row)

    async def tokens(self) -> list[TokenRecord]:
        """Every token, by lower-cased name."""
        query = sa.select(*_token_columns()).order_by(t.admin_tokens.c.name_key)
        return [token_record(r) for r in await self._rows(query)]

    async def insert_token(self, new: NewToken) -> int:
        """Store a token; its name (any case) and hash must be new (a unique constraint holds
        them: check :meth:`token_named` first in the same transaction)."""
        values = {
            "token_hash": new.token_hash,
            "name": new.name,
            "name_key": new.name.lower(),
            "role": new.role.value,
            "description": new.description,
            "created_at": new.now,
            "created_by": new.actor,
        }
        return await self._insert(t.admin_tokens, values)

    async def replace_token_hash(
        self, token_id: int, token_hash: str, actor: str, now: dt.datetime
    ) -> bool:
        """Give token ``token_id`` a new secret (the old one stops working when this commits);
        ``created_at``/``created_by`` become ``now``/``actor``. Whether the token exists."""
        result = await self._conn.execute(
            sa.update(t.admin_tokens)
            .where(t.admin_tokens.c.id == token_id)
            .values(token_hash=token_hash, created_at=now, created_by=actor)
        )
        return int(result.rowcount) > 0

    async def delete_token(self, token_id: int) -> bool:
        """Revoke token ``token_id`` (its row is deleted); whether it existed."""
        result = await self._conn.execute(
            sa.delete(t.admin_tokens).where(t.admin_tokens.c.id == token_id)
        )
        return int(result.rowcount) > 0

    # operations (accepted in the same transaction as the change they carry out)
    async def insert_operation(self, op: OperationRecord) -> None:
        await self._conn.execute(
            sa.insert(t.operations).values(
                id=op.id,
                resource_id=op.resource_id,
                resource_kind=op.kind.value,
                registry_id=op.registry_id,
                row_id=op.row_id,
                action=op.action.value,
                status=op.status.value,
                started_at=op.started_at,
            )
        )

    async def active_operation(self, kind: ResourceKind, row_id: int) -> str | None:
        """The id of an in-progress operation on the resource, if any."""
        o = t.operations.c
        query = (
            sa.select(o.id)
            .where(
                o.resource_kind == kind.value,
                o.row_id == row_id,
                o.status == OperationState.IN_PROGRESS.value,
            )
            .limit(1)
        )
        row = (await self._conn.execute(query)).first()
        return None if row is None else str(row[0])

    async def operation(self, op_id: str) -> OperationRecord | None:
        row = await self._row(sa.select(t.operations).where(t.operations.c.id == op_id))
        return None if row is None else operation_record(row)

    async def finish_operation(
        self,
        op_id: str,
        status: OperationState,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        await self._conn.execute(
            sa.update(t.operations)
            .where(t.operations.c.id == op_id)
            .values(
                status=status.value,
                ended_at=utcnow(),
                error_code=error_code,
                error_message=error_message,
            )
        )

    async def acquire_lease(self, key: str, owner: str, until: dt.datetime) -> bool:
        """Take or renew lease ``key`` for ``owner`` inside this transaction (see Leases)."""
        return await acquire_lease(self._conn, key, owner, until)

    async def release_lease(self, key: str, owner: str) -> None:
        await release_lease(self._conn, key, owner)

    # internals
    @staticmethod
    def _child_select(kind: ResourceKind) -> Any:
        if kind is ResourceKind.CACHE_RULE:
            c = t.cache_rules
            s = t.credential_sets
            return sa.select(c, s.c.name.label("credential_set_name")).select_from(
                c.outerjoin(s, s.c.id == c.c.credential_set_id)
            )
        return sa.select(_TABLES[kind])

    async def _insert(self, table: sa.Table, values: dict[str, Any]) -> int:
        result = await self._conn.execute(sa.insert(table).values(**values).returning(table.c.id))
        return int(result.scalar_one())

    @property
    def connection(self) -> AsyncConnection:
        """The transaction's connection, for other stores of this package that join it."""
        return self._conn


class SqlResourceStore:
    """The :class:`ResourceStore` over a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._listeners: list[Callable[[ResourceChanges], None]] = []

    def subscribe(self, listener: Callable[[ResourceChanges], None]) -> None:
        """Call ``listener`` after every ``write()`` of this store that commits a change to
        registries (created or deleted) or to cache rules, with what changed. It runs on the
        event loop right after the commit and must not block or raise. Other processes learn
        of the change from ``rules_version`` (:meth:`registry_heads`)."""
        self._listeners.append(listener)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[ResourceTransaction]:
        """A read-only view of committed data (writes through it are an error)."""
        async with self.db.read() as conn:
            yield ResourceTransaction(conn)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[ResourceTransaction]:
        """One serialised transaction: commits when the block ends, rolls back if it raises."""
        async with self.db.write() as conn:
            tx = ResourceTransaction(conn)
            yield tx
        changes = tx.changes
        if changes:
            for listener in self._listeners:
                listener(changes)

    # -- point reads (hot paths: no transaction, no thread hand-off) ---------------------------
    async def get_registry(self, key: RegistryKey) -> RegistryRecord | None:
        row = await self.db.fetch_one(_GET_REGISTRY, **_key_params(key))
        return None if row is None else registry_record(row)

    async def registries_named(self, name: str) -> list[RegistryRecord]:
        """At most two registries called ``name`` (two means the name is ambiguous)."""
        rows = await self.db.fetch_all(_GET_REGISTRIES_NAMED, name=name.lower())
        return [registry_record(r) for r in rows]

    async def registry_heads(self, name: str) -> list[RegistryHead]:
        """At most two registries called ``name`` (any case; two: ambiguous), by row id, with
        their rules' version. One prebuilt point read."""
        rows = await self.db.fetch_all(_HEADS_NAMED, name=name.lower())
        return [RegistryHead(int(r["id"]), str(r["name"]), int(r["rules_version"])) for r in rows]

    async def first_registry_heads(self) -> list[RegistryHead]:
        """The first two registries of the server by row id (to tell "exactly one")."""
        rows = await self.db.fetch_all(_FIRST_HEADS)
        return [RegistryHead(int(r["id"]), str(r["name"]), int(r["rules_version"])) for r in rows]

    async def cache_rules(self, registry_id: int) -> list[CacheRuleRecord]:
        """Every cache rule of registry ``registry_id`` (any state) with its credential set's
        name, by row id. Read ``rules_version`` before this: the rules are then at least as
        new as the version read."""
        rows = await self.db.fetch_all(_RULES_OF_REGISTRY, registry_id=registry_id)
        return [rule_record(r) for r in rows]

    async def first_registries(self) -> list[str]:
        """The names of at most two registries (to tell 'exactly one' from 'several')."""
        return [str(r["name"]) for r in await self.db.fetch_all(_COUNT_REGISTRIES)]

    async def get_with_child(
        self, kind: ResourceKind, key: RegistryKey, name: str
    ) -> tuple[RegistryRecord | None, ChildRecord | None]:
        """A registry and its rule or credential set called ``name``, in one statement."""
        query = (
            _GET_REGISTRY_WITH_RULE if kind is ResourceKind.CACHE_RULE else (_GET_REGISTRY_WITH_SET)
        )
        row = await self.db.fetch_one(query, **_key_params(key), child=name.lower())
        if row is None:
            return None, None
        registry = registry_record(row, "r_")
        if row["c_id"] is None:
            return registry, None
        child = rule_record(row, "c_") if kind is ResourceKind.CACHE_RULE else set_record(row, "c_")
        return registry, child

    async def counts(self) -> dict[str, int]:
        """How many ``registries``, ``cache_rules`` and ``credential_sets`` exist (on the whole
        server, whatever their provisioning state), read in one statement."""
        row = await self.db.fetch_one(_COUNT_RESOURCES)
        assert row is not None
        return {key: int(row[key]) for key in ("registries", "cache_rules", "credential_sets")}

    async def token(self, token_hash: str) -> TokenRecord | None:
        """The token whose secret has SHA-256 hex ``token_hash``, or ``None`` (no such token, or
        revoked). One prebuilt point read: it sees every write committed before the call, by
        any process, so a revocation holds from the moment it commits."""
        row = await self.db.fetch_one(_GET_TOKEN, token_hash=token_hash)
        return None if row is None else token_record(row)


def _token_columns() -> list[sa.Column[Any]]:
    c = t.admin_tokens.c
    return [c.id, c.name, c.role, c.description, c.created_at, c.created_by]


def _key_params(key: RegistryKey) -> dict[str, str]:
    return {
        "subscription": key.subscription,
        "resource_group": key.resource_group.lower(),
        "name": key.name.lower(),
    }
