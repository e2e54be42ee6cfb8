"""Conformance suite of :class:`entrepot.metadata.store.MetadataStore`.

Every test runs twice through the ``database_url`` fixture: once on a fresh SQLite file and
once on a fresh PostgreSQL database. The store must behave the same on both.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import IntegrityError

from entrepot.config import database_url as async_database_url
from entrepot.metadata import schema as t
from entrepot.metadata.migrate import alembic_config
from entrepot.metadata.store import MetadataStore

SUB = "00000000-0000-0000-0000-000000000000"
OTHER_SUB = "11111111-1111-1111-1111-111111111111"
NOW = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)


# -- fixtures and row builders ----------------------------------------------------------------
@pytest.fixture
def store_url(database_url: str, tmp_path: Path) -> str:
    return async_database_url(database_url, tmp_path)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[MetadataStore]:
    s = MetadataStore(store_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def _audit(state: str = "Succeeded", when: dt.datetime = NOW) -> dict[str, Any]:
    return {
        "provisioning_state": state,
        "created_at": when,
        "created_by": "tester",
        "modified_at": when,
        "modified_by": "tester",
    }


def registry_values(name: str, resource_group: str = "my-rg", sub: str = SUB) -> dict[str, Any]:
    return {
        "subscription": sub,
        "resource_group": resource_group,
        "resource_group_key": resource_group.lower(),
        "name": name,
        "name_key": name.lower(),
        "location": "local",
        "sku": "Basic",
        "tags": "{}",
        **_audit(),
    }


def set_values(registry_id: int, name: str) -> dict[str, Any]:
    return {
        "registry_id": registry_id,
        "name": name,
        "name_key": name.lower(),
        "login_server": "docker.io",
        "identity_type": "SystemAssigned",
        "principal_id": str(uuid.uuid4()),
        "auth_credentials": "[]",
        **_audit(),
    }


def rule_values(
    registry_id: int,
    name: str,
    target: str,
    *,
    credential_set_id: int | None = None,
) -> dict[str, Any]:
    wildcard = target.endswith("/*") or target == "*"
    target_path = target[:-2] if target.endswith("/*") else ("" if target == "*" else target)
    return {
        "registry_id": registry_id,
        "name": name,
        "name_key": name.lower(),
        "source_repository": f"docker.io/{target}",
        "target_repository": target,
        "target_path": target_path,
        "wildcard": wildcard,
        "credential_set_id": credential_set_id,
        **_audit(),
    }


def operation_values(op_id: str, started_at: dt.datetime = NOW, **extra: Any) -> dict[str, Any]:
    return {
        "id": op_id,
        "resource_id": f"/subscriptions/{SUB}/x/{op_id}",
        "resource_kind": "cacheRules",
        "registry_id": None,
        "row_id": 1,
        "action": "create",
        "status": "InProgress",
        "started_at": started_at,
        **extra,
    }


async def new_registry(store: MetadataStore, name: str = "Registry-One", **kw: Any) -> int:
    async with store.write() as conn:
        return await store.insert(conn, t.registries, registry_values(name, **kw))


# -- opening and migrating --------------------------------------------------------------------
async def _table_names(store: MetadataStore) -> set[str]:
    async with store.read() as conn:
        return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))


async def _current_revision(store: MetadataStore) -> str | None:
    async with store.read() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


async def test_open_migrates_an_empty_database_to_head(store_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    s = MetadataStore(store_url)
    await s.open()
    try:
        assert await _table_names(s) >= {*t.metadata.tables, "alembic_version"}
        assert await _current_revision(s) == head
    finally:
        await s.close()


async def test_open_is_idempotent_and_keeps_data(store_url: str) -> None:
    first = MetadataStore(store_url)
    await first.open()
    async with first.write() as conn:
        await first.put_setting(conn, "kept", "yes")
    await first.close()

    second = MetadataStore(store_url)
    await second.open()  # already at head: no error, nothing re-created
    await second.open()  # and again, on the same instance
    try:
        async with second.read() as conn:
            assert await second.get_setting(conn, "kept") == "yes"
            versions = await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            assert len(versions.all()) == 1
    finally:
        await second.close()


async def test_concurrent_first_opens_migrate_once(store_url: str) -> None:
    stores = [MetadataStore(store_url) for _ in range(3)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        for s in stores:
            assert await _current_revision(s) == head
        async with stores[0].read() as conn:
            versions = await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            assert versions.scalars().all() == [head]
    finally:
        for s in stores:
            await s.close()


async def test_migrated_schema_matches_the_declared_metadata(store: MetadataStore) -> None:
    """Guards migration drift: schema.py and migrations/versions must describe one schema."""

    def diff(sync_conn: sa.Connection) -> list[Any]:
        context = MigrationContext.configure(
            sync_conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, t.metadata))

    async with store.read() as conn:
        diffs = await conn.run_sync(diff)
    assert diffs == []


async def test_compare_metadata_detects_drift(store: MetadataStore) -> None:
    """The drift check above is not vacuous: a column the migrations lack is reported."""
    drifted = sa.MetaData()
    for table in t.metadata.tables.values():
        table.to_metadata(drifted)
    drifted.tables["settings"].append_column(sa.Column("extra", sa.Integer, nullable=True))
    drifted.tables["operations"].c.action.type = sa.String(21)

    def diff(sync_conn: sa.Connection) -> list[Any]:
        context = MigrationContext.configure(
            sync_conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, drifted))

    async with store.read() as conn:
        diffs = await conn.run_sync(diff)
    assert len(diffs) == 2, diffs
    add_column = next(d for d in diffs if isinstance(d, tuple))
    assert add_column[0] == "add_column"
    assert add_column[2] == "settings" and add_column[3].name == "extra"
    (modify,) = next(d for d in diffs if isinstance(d, list))
    assert modify[0] == "modify_type" and modify[2:4] == ("operations", "action")


async def test_unopened_store_refuses_to_work(store_url: str) -> None:
    s = MetadataStore(store_url)
    with pytest.raises(RuntimeError, match="open"):
        async with s.read():
            pass


# -- settings and tokens ----------------------------------------------------------------------
async def test_settings_put_and_get(store: MetadataStore) -> None:
    async with store.read() as conn:
        assert await store.get_setting(conn, "tenant_id") is None
    async with store.write() as conn:
        await store.put_setting(conn, "tenant_id", "first")
        await store.put_setting(conn, "other", "x")
    async with store.write() as conn:
        assert await store.get_setting(conn, "tenant_id") == "first"
        await store.put_setting(conn, "tenant_id", "second")  # overwrite, not a duplicate key
    async with store.read() as conn:
        assert await store.get_setting(conn, "tenant_id") == "second"
        assert await store.get_setting(conn, "other") == "x"
        assert await store.get_setting(conn, "TENANT_ID") is None


async def test_tokens(store: MetadataStore) -> None:
    digest = "a" * 64
    async with store.read() as conn:
        assert await store.count_tokens(conn) == 0
        assert await store.token_description(conn, digest) is None
    async with store.write() as conn:
        await store.add_token(conn, digest, "admin")
        await store.add_token(conn, "b" * 64, "ci")
    async with store.read() as conn:
        assert await store.count_tokens(conn) == 2
        assert await store.token_description(conn, digest) == "admin"
        assert await store.token_description(conn, "b" * 64) == "ci"
        assert await store.token_description(conn, "c" * 64) is None
        created = (await conn.execute(sa.select(t.admin_tokens.c.created_at))).scalars().all()
    assert all(c.tzinfo is not None for c in created)
    with pytest.raises(IntegrityError):
        async with store.write() as conn:
            await store.add_token(conn, digest, "duplicate")
    async with store.read() as conn:
        assert await store.count_tokens(conn) == 2


# -- registries -------------------------------------------------------------------------------
async def test_registries_are_found_case_insensitively(store: MetadataStore) -> None:
    reg_id = await new_registry(store, "My-Registry", resource_group="My-RG")
    async with store.read() as conn:
        for rg, name in [
            ("My-RG", "My-Registry"),
            ("my-rg", "MY-REGISTRY"),
            ("MY-rg", "my-registry"),
        ]:
            row = await store.get_registry(conn, SUB, rg, name)
            assert row is not None
            assert row["id"] == reg_id
            assert row["name"] == "My-Registry"  # the caller's spelling is kept
            assert row["resource_group"] == "My-RG"
        assert await store.get_registry(conn, SUB, "other-rg", "My-Registry") is None
        assert await store.get_registry(conn, OTHER_SUB, "My-RG", "My-Registry") is None
        assert await store.get_registry(conn, SUB, "My-RG", "My-Registry2") is None
        assert await store.all_registry_ids(conn) == [reg_id]
    with pytest.raises(IntegrityError):  # the same name in another case is the same registry
        await new_registry(store, "MY-REGISTRY", resource_group="my-rg")


async def test_list_registries_is_keyset_paged(store: MetadataStore) -> None:
    names = [f"Reg-{c}{i}" for i, c in enumerate("gfedcba")]
    for name in names:
        await new_registry(store, name, resource_group="paged")
    await new_registry(store, "elsewhere", resource_group="other")
    await new_registry(store, "other-sub", resource_group="paged", sub=OTHER_SUB)

    seen: list[str] = []
    after = ""
    pages = 0
    async with store.read() as conn:
        while True:
            rows = await store.list_registries(conn, SUB, "PAGED", after, 3)
            assert len(rows) <= 3
            pages += 1
            if not rows:
                break
            seen += [r["name"] for r in rows]
            after = rows[-1]["name_key"]
            if len(rows) < 3:
                break
    assert seen == sorted(names, key=str.lower)
    assert pages == 3
    async with store.read() as conn:
        rows = await store.list_registries(conn, SUB, "paged", "reg-d3", 100)
    assert [r["name_key"] for r in rows] == sorted(n.lower() for n in names if n.lower() > "reg-d3")


# -- children: rules and credential sets ------------------------------------------------------
async def test_children_insert_get_list_count(store: MetadataStore) -> None:
    reg = await new_registry(store, "reg-one")
    other = await new_registry(store, "reg-two")
    names = ["Rule-E", "rule-d", "Rule-C", "rule-b", "Rule-A"]
    ids: dict[str, int] = {}
    async with store.write() as conn:
        for i, name in enumerate(names):
            ids[name] = await store.insert(conn, t.cache_rules, rule_values(reg, name, f"repo{i}"))
        await store.insert(conn, t.cache_rules, rule_values(other, "rule-b", "repo1"))
        set_id = await store.insert(conn, t.credential_sets, set_values(reg, "Creds-One"))
    assert len(set(ids.values())) == len(names)

    async with store.read() as conn:
        row = await store.get_child(conn, t.cache_rules, reg, "RULE-c")
        assert row is not None and row["id"] == ids["Rule-C"] and row["name"] == "Rule-C"
        assert row["wildcard"] is False
        assert await store.get_child(conn, t.cache_rules, reg, "rule-z") is None
        other_b = await store.get_child(conn, t.cache_rules, other, "RULE-B")
        assert other_b is not None and other_b["id"] != ids["rule-b"]
        got = await store.get_child(conn, t.credential_sets, reg, "creds-ONE")
        assert got is not None and got["id"] == set_id
        assert await store.get_child(conn, t.credential_sets, other, "creds-one") is None

        assert await store.count_children(conn, t.cache_rules, reg) == 5
        assert await store.count_children(conn, t.cache_rules, other) == 1
        assert await store.count_children(conn, t.credential_sets, reg) == 1
        assert await store.count_children(conn, t.credential_sets, other) == 0

        first = await store.list_children(conn, t.cache_rules, reg, "", 2)
        assert [r["name"] for r in first] == ["Rule-A", "rule-b"]
        second = await store.list_children(conn, t.cache_rules, reg, first[-1]["name_key"], 2)
        assert [r["name"] for r in second] == ["Rule-C", "rule-d"]
        third = await store.list_children(conn, t.cache_rules, reg, second[-1]["name_key"], 2)
        assert [r["name"] for r in third] == ["Rule-E"]

        by_id = await store.get_by_id(conn, t.cache_rules, ids["rule-d"])
        assert by_id is not None and by_id["name"] == "rule-d"
        assert await store.get_by_id(conn, t.cache_rules, 999_999) is None

    async with store.write() as conn:
        await store.update(conn, t.cache_rules, ids["rule-d"], {"provisioning_state": "Updating"})
        assert await store.delete(conn, t.cache_rules, ids["Rule-E"]) == 1
        assert await store.delete(conn, t.cache_rules, ids["Rule-E"]) == 0
    async with store.read() as conn:
        updated = await store.get_by_id(conn, t.cache_rules, ids["rule-d"])
        assert updated is not None and updated["provisioning_state"] == "Updating"
        untouched = await store.get_by_id(conn, t.cache_rules, ids["Rule-C"])
        assert untouched is not None and untouched["provisioning_state"] == "Succeeded"
        assert await store.count_children(conn, t.cache_rules, reg) == 4
    with pytest.raises(IntegrityError):
        async with store.write() as conn:
            await store.insert(conn, t.cache_rules, rule_values(reg, "RULE-A", "elsewhere"))


async def test_rules_with_targets(store: MetadataStore) -> None:
    reg = await new_registry(store, "reg-one")
    other = await new_registry(store, "reg-two")
    async with store.write() as conn:
        await store.insert(conn, t.cache_rules, rule_values(reg, "static-a", "team/app"))
        await store.insert(conn, t.cache_rules, rule_values(reg, "wild-a", "team/app/*"))
        await store.insert(conn, t.cache_rules, rule_values(reg, "wild-b", "team/*"))
        await store.insert(conn, t.cache_rules, rule_values(reg, "wild-all", "*"))
        await store.insert(conn, t.cache_rules, rule_values(other, "static-b", "team/app"))
    async with store.read() as conn:
        static = await store.rules_with_targets(conn, reg, ["team/app"], False)
        assert [r["name"] for r in static] == ["static-a"]
        wild = await store.rules_with_targets(conn, reg, ["", "team", "team/app"], True)
        assert sorted(r["name"] for r in wild) == ["wild-a", "wild-all", "wild-b"]
        assert await store.rules_with_targets(conn, reg, ["team/ap"], False) == []
        assert await store.rules_with_targets(conn, reg, ["team/app"], True) != []
        assert await store.rules_with_targets(conn, reg, [], True) == []
        in_other = await store.rules_with_targets(conn, other, ["team/app"], False)
        assert [r["name"] for r in in_other] == ["static-b"]


async def test_wildcard_rules_under_treats_like_metacharacters_literally(
    store: MetadataStore,
) -> None:
    reg = await new_registry(store, "reg-one")
    other = await new_registry(store, "reg-two")
    async with store.write() as conn:
        for name, target in [
            ("under-underscore", "a_b/c/*"),  # below "a_b"
            ("under-x", "axb/c/*"),  # would match "a_b/%" if "_" were a wildcard
            ("under-percent", "p%q/r/*"),  # below "p%q"
            ("under-pxq", "pxxq/r/*"),  # would match "p%q/%" if "%" were a wildcard
            ("same-level", "a_b/*"),  # target_path == "a_b": not strictly below
            ("static-below", "a_b/static"),  # not a wildcard rule
            ("deep", "a_b/c/d/*"),
            ("back", "x\\y/z/*"),
            ("backx", "xy/z/*"),
        ]:
            await store.insert(conn, t.cache_rules, rule_values(reg, name, target))
        await store.insert(conn, t.cache_rules, rule_values(other, "other-reg", "a_b/c/*"))

    async def under(prefix: str, limit: int = 100) -> list[str]:
        async with store.read() as conn:
            rows = await store.wildcard_rules_under(conn, reg, prefix, limit)
        return sorted(r["name"] for r in rows)

    assert await under("a_b") == ["deep", "under-underscore"]
    assert await under("a_b/c") == ["deep"]
    assert await under("p%q") == ["under-percent"]
    assert await under("p%") == []
    assert await under("a_") == []
    assert await under("x\\y") == ["back"]
    assert await under("axb") == ["under-x"]
    everything = await under("")
    assert len(everything) == 8 and "static-below" not in everything
    assert len(await under("", limit=3)) == 3


async def test_rules_using_credential_set(store: MetadataStore) -> None:
    reg = await new_registry(store)
    async with store.write() as conn:
        used = await store.insert(conn, t.credential_sets, set_values(reg, "used-set"))
        unused = await store.insert(conn, t.credential_sets, set_values(reg, "unused-set"))
        for name in ["Rule-C", "rule-a", "Rule-B"]:
            await store.insert(
                conn,
                t.cache_rules,
                rule_values(reg, name, f"{name.lower()}/x", credential_set_id=used),
            )
        await store.insert(conn, t.cache_rules, rule_values(reg, "no-creds", "plain"))
    async with store.read() as conn:
        assert await store.rules_using_credential_set(conn, used) == ["rule-a", "Rule-B", "Rule-C"]
        assert await store.rules_using_credential_set(conn, used, limit=2) == ["rule-a", "Rule-B"]
        assert await store.rules_using_credential_set(conn, unused) == []
        names = await store.credential_set_names(conn, [used, unused, used])
        assert names == {used: "used-set", unused: "unused-set"}
        assert await store.credential_set_names(conn, []) == {}


# -- foreign keys -----------------------------------------------------------------------------
async def test_credential_set_used_by_a_rule_cannot_be_deleted(store: MetadataStore) -> None:
    reg = await new_registry(store)
    async with store.write() as conn:
        set_id = await store.insert(conn, t.credential_sets, set_values(reg, "the-set"))
        rule_id = await store.insert(
            conn, t.cache_rules, rule_values(reg, "the-rule", "app", credential_set_id=set_id)
        )
    with pytest.raises(IntegrityError):
        async with store.write() as conn:
            await store.delete(conn, t.credential_sets, set_id)
    async with store.read() as conn:
        assert await store.get_by_id(conn, t.credential_sets, set_id) is not None
    # Once no rule uses it, it can go.
    async with store.write() as conn:
        await store.update(conn, t.cache_rules, rule_id, {"credential_set_id": None})
        assert await store.delete(conn, t.credential_sets, set_id) == 1


async def test_rule_cannot_reference_a_missing_registry_or_set(store: MetadataStore) -> None:
    reg = await new_registry(store)
    with pytest.raises(IntegrityError):
        async with store.write() as conn:
            await store.insert(conn, t.cache_rules, rule_values(reg + 1000, "orphan", "app"))
    with pytest.raises(IntegrityError):
        async with store.write() as conn:
            await store.insert(
                conn, t.cache_rules, rule_values(reg, "bad-set", "app", credential_set_id=4242)
            )


async def test_deleting_a_registry_cascades_to_its_rules_and_sets(store: MetadataStore) -> None:
    doomed = await new_registry(store, "doomed-reg")
    kept = await new_registry(store, "kept-reg")
    async with store.write() as conn:
        set_id = await store.insert(conn, t.credential_sets, set_values(doomed, "the-set"))
        await store.insert(conn, t.credential_sets, set_values(doomed, "lonely-set"))
        rule_ids = [
            await store.insert(
                conn, t.cache_rules, rule_values(doomed, "with-set", "a", credential_set_id=set_id)
            ),
            await store.insert(conn, t.cache_rules, rule_values(doomed, "no-set", "b")),
        ]
        kept_set = await store.insert(conn, t.credential_sets, set_values(kept, "kept-set"))
        await store.insert(
            conn, t.cache_rules, rule_values(kept, "kept-rule", "a", credential_set_id=kept_set)
        )
    async with store.write() as conn:
        assert await store.delete(conn, t.registries, doomed) == 1
    async with store.read() as conn:
        assert await store.count_children(conn, t.cache_rules, doomed) == 0
        assert await store.count_children(conn, t.credential_sets, doomed) == 0
        for rule_id in rule_ids:
            assert await store.get_by_id(conn, t.cache_rules, rule_id) is None
        assert await store.get_by_id(conn, t.credential_sets, set_id) is None
        assert await store.count_children(conn, t.cache_rules, kept) == 1
        assert await store.count_children(conn, t.credential_sets, kept) == 1
        assert await store.all_registry_ids(conn) == [kept]


# -- operations -------------------------------------------------------------------------------
async def test_operation_claim_lease_and_finish(store: MetadataStore) -> None:
    async with store.write() as conn:
        await store.insert_operation(conn, operation_values("op-1", registry_id=7, row_id=42))
    now = dt.datetime.now(dt.UTC)
    async with store.read() as conn:
        op = await store.get_operation(conn, "op-1")
        assert op is not None and op["status"] == "InProgress" and op["lease_owner"] is None
        assert await store.get_operation(conn, "op-2") is None
        active = await store.active_operation_for(conn, "cacheRules", 42)
        assert active is not None and active["id"] == "op-1"
        assert await store.active_operation_for(conn, "cacheRules", 43) is None
        assert await store.active_operation_for(conn, "credentialSets", 42) is None
        assert await store.claimable_operations(conn) == ["op-1"]

    async with store.write() as conn:
        assert await store.claim_operation(conn, "op-1", "owner-a", now + dt.timedelta(seconds=60))
    async with store.write() as conn:
        # The lease is held and unexpired: another owner cannot take it.
        assert not await store.claim_operation(
            conn, "op-1", "owner-b", now + dt.timedelta(seconds=60)
        )
        # The holder renews it (here: to a time already past).
        assert await store.claim_operation(conn, "op-1", "owner-a", now - dt.timedelta(seconds=1))
    async with store.read() as conn:
        row = await store.get_operation(conn, "op-1")
        assert row is not None and row["lease_owner"] == "owner-a"
        assert await store.claimable_operations(conn) == ["op-1"]  # expired: claimable again
    async with store.write() as conn:
        # After expiry another owner takes over.
        assert await store.claim_operation(conn, "op-1", "owner-b", now + dt.timedelta(seconds=60))
        assert not await store.claim_operation(
            conn, "op-1", "owner-a", now + dt.timedelta(seconds=60)
        )
    async with store.read() as conn:
        assert await store.claimable_operations(conn) == []
        row = await store.get_operation(conn, "op-1")
        assert row is not None and row["lease_owner"] == "owner-b"

    async with store.write() as conn:
        await store.finish_operation(conn, "op-1", "Failed", "CredentialSetInUse", "in use")
    async with store.read() as conn:
        done = await store.get_operation(conn, "op-1")
        assert done is not None
        assert done["status"] == "Failed"
        assert done["error_code"] == "CredentialSetInUse"
        assert done["error_message"] == "in use"
        assert done["lease_owner"] is None and done["lease_expires"] is None
        assert done["ended_at"] is not None
        assert await store.claimable_operations(conn) == []
        assert await store.active_operation_for(conn, "cacheRules", 42) is None
    async with store.write() as conn:  # a finished operation cannot be claimed by anyone
        assert not await store.claim_operation(
            conn, "op-1", "owner-b", now + dt.timedelta(seconds=60)
        )


async def test_claimable_operations_order_and_filter(store: MetadataStore) -> None:
    now = dt.datetime.now(dt.UTC)
    later = now + dt.timedelta(minutes=5)
    async with store.write() as conn:
        await store.insert_operation(conn, operation_values("op-c", NOW + dt.timedelta(3)))
        await store.insert_operation(conn, operation_values("op-a", NOW + dt.timedelta(1)))
        await store.insert_operation(conn, operation_values("op-b", NOW + dt.timedelta(2)))
        await store.insert_operation(
            conn,
            operation_values("op-leased", NOW, lease_owner="someone", lease_expires=later),
        )
        await store.insert_operation(
            conn,
            operation_values(
                "op-expired",
                NOW + dt.timedelta(4),
                lease_owner="someone",
                lease_expires=now - dt.timedelta(seconds=1),
            ),
        )
        await store.insert_operation(
            conn, operation_values("op-done", NOW, status="Succeeded", ended_at=NOW)
        )
    async with store.read() as conn:
        assert await store.claimable_operations(conn) == ["op-a", "op-b", "op-c", "op-expired"]
        assert await store.claimable_operations(conn, limit=2) == ["op-a", "op-b"]


# -- transactions -----------------------------------------------------------------------------
async def test_a_failed_write_leaves_nothing_behind(store: MetadataStore) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with store.write() as conn:
            reg = await store.insert(conn, t.registries, registry_values("half-done"))
            await store.insert(conn, t.cache_rules, rule_values(reg, "half-rule", "app"))
            await store.put_setting(conn, "half", "done")
            await store.insert_operation(conn, operation_values("op-half"))
            raise Boom
    async with store.read() as conn:
        assert await store.all_registry_ids(conn) == []
        assert await store.get_setting(conn, "half") is None
        assert await store.get_operation(conn, "op-half") is None
        count = await conn.execute(sa.select(sa.func.count()).select_from(t.cache_rules))
        assert count.scalar_one() == 0
    # The store is still usable afterwards.
    assert await new_registry(store, "after-boom") > 0


async def test_reads_see_committed_data_only(store: MetadataStore) -> None:
    async with store.write() as conn:
        await store.put_setting(conn, "visible", "old")
    async with store.write() as conn:
        await store.put_setting(conn, "visible", "new")
        await store.put_setting(conn, "pending", "yes")
        async with store.read() as reader:  # another connection, while the write is open
            assert await store.get_setting(reader, "visible") == "old"
            assert await store.get_setting(reader, "pending") is None
    async with store.read() as reader:
        assert await store.get_setting(reader, "visible") == "new"
        assert await store.get_setting(reader, "pending") == "yes"


async def test_concurrent_writers_lose_no_update(store: MetadataStore) -> None:
    async with store.write() as conn:
        await store.put_setting(conn, "counter", "0")

    async def increment() -> None:
        async with store.write() as conn:
            value = int(await store.get_setting(conn, "counter") or "0")
            await asyncio.sleep(0)  # give the other writers every chance to interleave
            await store.put_setting(conn, "counter", str(value + 1))

    await asyncio.gather(*(increment() for _ in range(20)))
    async with store.read() as conn:
        assert await store.get_setting(conn, "counter") == "20"


async def test_concurrent_writers_from_two_stores_lose_no_update(
    store: MetadataStore, store_url: str
) -> None:
    """Two stores on one database behave like two server processes sharing it."""
    other = MetadataStore(store_url)
    await other.open()
    try:
        async with store.write() as conn:
            await store.put_setting(conn, "counter", "0")

        async def increment(s: MetadataStore) -> None:
            async with s.write() as conn:
                value = int(await s.get_setting(conn, "counter") or "0")
                await asyncio.sleep(0)
                await s.put_setting(conn, "counter", str(value + 1))

        await asyncio.gather(*(increment(s) for _ in range(10) for s in (store, other)))
        async with other.read() as conn:
            assert await other.get_setting(conn, "counter") == "20"
    finally:
        await other.close()


# -- datetimes --------------------------------------------------------------------------------
async def test_datetimes_come_back_timezone_aware_utc(store: MetadataStore) -> None:
    reg = await new_registry(store)
    async with store.write() as conn:
        await store.insert_operation(conn, operation_values("op-time", NOW))
        await store.finish_operation(conn, "op-time", "Succeeded")
    async with store.read() as conn:
        op = await store.get_operation(conn, "op-time")
        registry = await store.get_by_id(conn, t.registries, reg)
    assert op is not None and registry is not None
    for value in (
        op["started_at"],
        op["ended_at"],
        registry["created_at"],
        registry["modified_at"],
    ):
        assert isinstance(value, dt.datetime)
        assert value.tzinfo is not None
        assert value.utcoffset() == dt.timedelta(0)
    assert op["started_at"] == NOW
    assert registry["created_at"] == NOW
    assert abs(op["ended_at"] - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
