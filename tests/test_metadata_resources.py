"""Conformance suite of :class:`entrepot.metadata.resources.SqlResourceStore` (ResourceStore).

Registries, cache rules, credential sets, tokens and operation records, through the write/read
transactions (:class:`ResourceTransaction`) and the point reads. Every test runs on a fresh
SQLite file and on a fresh PostgreSQL database.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from entrepot.metadata.database import Database
from entrepot.metadata.operations import SqlOperationStore
from entrepot.metadata.protocols import ResourceStore
from entrepot.metadata.records import (
    Action,
    CacheRuleRecord,
    Changes,
    CredentialSetRecord,
    OperationState,
    RegistryKey,
    RegistryRecord,
    ResourceKind,
    State,
)
from entrepot.metadata.resources import SqlResourceStore
from tests.metadata_support import (
    NOW,
    OTHER_SUB,
    SUB,
    add_registry,
    assert_aware_utc,
    cache_rule,
    credential_set,
    opened,
    operation,
    registry,
    store_url,
)
from tests.metadata_support import token as new_token

RULE = ResourceKind.CACHE_RULE
CREDS = ResourceKind.CREDENTIAL_SET


@pytest.fixture
async def db(database_url: str, tmp_path: Path) -> AsyncIterator[Database]:
    async with opened(store_url(database_url, tmp_path)) as database:
        yield database


@pytest.fixture
def store(db: Database) -> SqlResourceStore:
    return SqlResourceStore(db)


def _rule(record: object) -> CacheRuleRecord:
    assert isinstance(record, CacheRuleRecord), record
    return record


def _set(record: object) -> CredentialSetRecord:
    assert isinstance(record, CredentialSetRecord), record
    return record


def test_sql_store_is_a_resource_store(store: SqlResourceStore) -> None:
    typed: ResourceStore = store  # mypy checks the protocol; this keeps the check honest
    assert typed is store


# -- tokens -----------------------------------------------------------------------------------
async def test_tokens(store: SqlResourceStore) -> None:
    digest = "a" * 64
    async with store.read() as tx:
        assert await tx.count_tokens() == 0
    assert await store.token(digest) is None
    before = dt.datetime.now(dt.UTC)
    async with store.write() as tx:
        await tx.insert_token(new_token(digest, "admin"))
        await tx.insert_token(new_token("b" * 64, "ci"))
        assert await tx.count_tokens() == 2  # the transaction sees its own inserts
    async with store.read() as tx:
        assert await tx.count_tokens() == 2
    admin = await store.token(digest)
    ci = await store.token("b" * 64)
    assert admin is not None and admin.description == "admin"
    assert ci is not None and ci.description == "ci" and ci.id != admin.id
    assert await store.token("c" * 64) is None
    assert await store.token(digest.upper()) is None  # hashes match exactly
    for token in (admin, ci):
        assert_aware_utc(token.created_at)
        assert before - dt.timedelta(seconds=5) <= token.created_at <= dt.datetime.now(dt.UTC)
    with pytest.raises(IntegrityError):
        async with store.write() as tx:
            await tx.insert_token(new_token(digest, "duplicate"))
    async with store.read() as tx:
        assert await tx.count_tokens() == 2
    again = await store.token(digest)
    assert again is not None and again.description == "admin"


# -- registries -------------------------------------------------------------------------------
async def test_registries_are_found_case_insensitively(store: SqlResourceStore) -> None:
    reg_id = await add_registry(store, "My-Registry", resource_group="My-RG")
    spellings = [("My-RG", "My-Registry"), ("my-rg", "MY-REGISTRY"), ("MY-rg", "my-registry")]
    async with store.read() as tx:
        for rg, name in spellings:
            found = await tx.registry(RegistryKey(SUB, rg, name))
            assert found is not None
            assert found.id == reg_id
            assert found.name == "My-Registry"  # the caller's spelling is kept
            assert found.resource_group == "My-RG"
            assert found.key == RegistryKey(SUB, "My-RG", "My-Registry")
        assert await tx.registry(RegistryKey(SUB, "other-rg", "My-Registry")) is None
        assert await tx.registry(RegistryKey(OTHER_SUB, "My-RG", "My-Registry")) is None
        assert await tx.registry(RegistryKey(SUB, "My-RG", "My-Registry2")) is None
        by_id = await tx.registry_by_id(reg_id)
        assert by_id is not None and by_id.name == "My-Registry"
        assert await tx.registry_by_id(reg_id + 1000) is None
        assert await tx.by_id(ResourceKind.REGISTRY, reg_id) == by_id
        assert [r.id for r in await tx.registries_named("MY-registry")] == [reg_id]
        assert await tx.registries_named("My-Registry2") == []
    # The same through the point reads (no transaction).
    for rg, name in spellings:
        point = await store.get_registry(RegistryKey(SUB, rg, name))
        assert point is not None and point == by_id
    assert await store.get_registry(RegistryKey(SUB, "other-rg", "My-Registry")) is None
    assert await store.get_registry(RegistryKey(OTHER_SUB, "My-RG", "My-Registry")) is None
    assert await store.get_registry(RegistryKey(SUB, "My-RG", "My-Registry2")) is None
    assert [r.id for r in await store.registries_named("my-REGISTRY")] == [reg_id]
    assert await store.first_registries() == ["My-Registry"]
    with pytest.raises(IntegrityError):  # the same name in another case is the same registry
        await add_registry(store, "MY-REGISTRY", resource_group="my-rg")


async def test_registry_records_carry_every_field(store: SqlResourceStore) -> None:
    async with store.write() as tx:
        reg_id = await tx.insert_registry(
            registry("Tagged", state=State.CREATING, tags={"env": "test", "team": "a"})
        )
    point = await store.get_registry(RegistryKey(SUB, "my-rg", "tagged"))
    async with store.read() as tx:
        in_tx = await tx.registry_by_id(reg_id)
    assert point is not None and point == in_tx
    assert point.id == reg_id
    assert (point.subscription, point.resource_group, point.name) == (SUB, "my-rg", "Tagged")
    assert (point.location, point.sku, point.tags) == (
        "local",
        "Basic",
        {"env": "test", "team": "a"},
    )
    assert point.state is State.CREATING
    assert (point.audit.created_by, point.audit.modified_by) == ("tester", "tester")
    assert point.audit.created_at == point.audit.modified_at == NOW


async def test_registries_named_and_first_registries_stop_at_two(store: SqlResourceStore) -> None:
    assert await store.first_registries() == []
    assert await store.registries_named("dup") == []
    first = await add_registry(store, "dup", resource_group="rg-1")
    second = await add_registry(store, "DUP", resource_group="rg-2")
    third = await add_registry(store, "Dup", resource_group="rg-3", sub=OTHER_SUB)
    await add_registry(store, "unique")
    assert [r.id for r in await store.registries_named("dup")] == [first, second]  # by id, two
    async with store.read() as tx:
        named = await tx.registries_named("dup")
    assert sorted(r.id for r in named) == [first, second, third]  # the transaction has all
    assert await store.first_registries() == ["dup", "DUP"]


async def test_list_registries_is_keyset_paged(store: SqlResourceStore) -> None:
    names = [f"Reg-{c}{i}" for i, c in enumerate("gfedcba")]
    for name in names:
        await add_registry(store, name, resource_group="paged")
    await add_registry(store, "elsewhere", resource_group="other")
    await add_registry(store, "other-sub", resource_group="paged", sub=OTHER_SUB)

    seen: list[str] = []
    after = ""
    pages = 0
    async with store.read() as tx:
        while True:
            page = await tx.registries(SUB, "PAGED", after, 3)
            assert len(page) <= 3
            pages += 1
            if not page:
                break
            seen += [r.name for r in page]
            after = page[-1].name.lower()
            if len(page) < 3:
                break
        rest = await tx.registries(SUB, "paged", "reg-d3", 100)
    assert seen == sorted(names, key=str.lower)
    assert pages == 3
    assert [r.name.lower() for r in rest] == sorted(
        n.lower() for n in names if n.lower() > "reg-d3"
    )


# -- children: rules and credential sets ------------------------------------------------------
async def test_children_insert_get_list_count_update_delete(store: SqlResourceStore) -> None:
    reg = await add_registry(store, "reg-one")
    other = await add_registry(store, "reg-two")
    names = ["Rule-E", "rule-d", "Rule-C", "rule-b", "Rule-A"]
    ids: dict[str, int] = {}
    async with store.write() as tx:
        for i, name in enumerate(names):
            ids[name] = await tx.insert_cache_rule(cache_rule(reg, name, f"repo{i}"))
        await tx.insert_cache_rule(cache_rule(other, "rule-b", "repo1"))
        set_id = await tx.insert_credential_set(credential_set(reg, "Creds-One"))
    assert len(set(ids.values())) == len(names)

    async with store.read() as tx:
        got = _rule(await tx.child(RULE, reg, "RULE-c"))
        assert got.id == ids["Rule-C"] and got.name == "Rule-C" and got.registry_id == reg
        assert got.wildcard is False
        assert (got.target_repository, got.target_path) == ("repo2", "repo2")
        assert got.source_repository == "docker.io/repo2"
        assert got.credential_set_id is None and got.credential_set_name is None
        assert got.state is State.CREATING  # new children start Creating
        assert await tx.child(RULE, reg, "rule-z") is None
        other_b = await tx.child(RULE, other, "RULE-B")
        assert other_b is not None and other_b.id != ids["rule-b"]
        creds = _set(await tx.child(CREDS, reg, "creds-ONE"))
        assert creds.id == set_id and creds.name == "Creds-One"
        assert (creds.login_server, creds.identity_type) == ("docker.io", "SystemAssigned")
        assert creds.auth_credentials == []
        assert await tx.child(CREDS, other, "creds-one") is None
        assert await tx.child(CREDS, reg, "rule-a") is None  # kinds do not mix

        assert await tx.count_children(RULE, reg) == 5
        assert await tx.count_children(RULE, other) == 1
        assert await tx.count_children(CREDS, reg) == 1
        assert await tx.count_children(CREDS, other) == 0

        first = await tx.children(RULE, reg, "", 2)
        assert [r.name for r in first] == ["Rule-A", "rule-b"]
        second = await tx.children(RULE, reg, first[-1].name.lower(), 2)
        assert [r.name for r in second] == ["Rule-C", "rule-d"]
        third = await tx.children(RULE, reg, second[-1].name.lower(), 2)
        assert [r.name for r in third] == ["Rule-E"]
        assert await tx.children(RULE, reg, "rule-e", 2) == []
        assert [c.name for c in await tx.children(CREDS, reg, "", 10)] == ["Creds-One"]

        by_id = _rule(await tx.by_id(RULE, ids["rule-d"]))
        assert by_id.name == "rule-d"
        assert await tx.by_id(RULE, 999_999) is None
        assert _set(await tx.by_id(CREDS, set_id)).name == "Creds-One"

    # The point read of a registry with its child.
    key = RegistryKey(SUB, "MY-RG", "REG-ONE")
    point_reg, point_rule = await store.get_with_child(RULE, key, "rule-C")
    assert point_reg is not None and point_reg.id == reg
    assert point_rule == got
    point_reg, point_set = await store.get_with_child(CREDS, key, "CREDS-one")
    assert point_reg is not None and point_set == creds
    assert await store.get_with_child(RULE, key, "missing") == (point_reg, None)
    assert await store.get_with_child(CREDS, key, "rule-a") == (point_reg, None)
    missing = RegistryKey(SUB, "my-rg", "no-such-registry")
    assert await store.get_with_child(RULE, missing, "rule-a") == (None, None)

    async with store.write() as tx:
        await tx.update(RULE, ids["rule-d"], Changes(state=State.UPDATING))
        assert await tx.delete(RULE, ids["Rule-E"]) is True
        assert await tx.delete(RULE, ids["Rule-E"]) is False
        await tx.update(RULE, ids["Rule-E"], Changes(state=State.FAILED))  # gone: nothing
    async with store.read() as tx:
        updated = _rule(await tx.by_id(RULE, ids["rule-d"]))
        assert updated.state is State.UPDATING
        assert updated.audit == by_id.audit  # no actor: the audit stays as it was
        untouched = _rule(await tx.by_id(RULE, ids["Rule-C"]))
        assert untouched.state is State.CREATING
        assert await tx.count_children(RULE, reg) == 4
        assert await tx.by_id(RULE, ids["Rule-E"]) is None
    with pytest.raises(IntegrityError):
        async with store.write() as tx:
            await tx.insert_cache_rule(cache_rule(reg, "RULE-A", "elsewhere"))
    with pytest.raises(IntegrityError):
        async with store.write() as tx:
            await tx.insert_credential_set(credential_set(reg, "CREDS-one"))


async def test_changes_write_only_what_they_carry(store: SqlResourceStore) -> None:
    reg = await add_registry(store, "reg-one")
    later = NOW + dt.timedelta(hours=1)
    async with store.write() as tx:
        set_a = await tx.insert_credential_set(credential_set(reg, "set-a"))
        set_b = await tx.insert_credential_set(credential_set(reg, "set-b"))
        rule = await tx.insert_cache_rule(cache_rule(reg, "rule", "app", credential_set_id=set_a))
    async with store.write() as tx:
        await tx.update(ResourceKind.REGISTRY, reg, Changes())  # nothing to write: no-op
        await tx.update(
            ResourceKind.REGISTRY,
            reg,
            Changes(sku="Premium", tags={"k": "v"}, actor="changer", now=later),
        )
        await tx.update(
            CREDS,
            set_b,
            Changes(
                identity_type="UserAssigned",
                auth_credentials=[{"name": "Credential1", "usernameSecretIdentifier": "u"}],
            ),
        )
        await tx.update(RULE, rule, Changes(set_credential_set=True, credential_set_id=set_b))
        # A credential_set_id without set_credential_set is not written.
        await tx.update(RULE, rule, Changes(credential_set_id=set_a))

    changed = await store.get_registry(RegistryKey(SUB, "my-rg", "reg-one"))
    assert changed is not None
    assert (changed.sku, changed.tags, changed.state) == ("Premium", {"k": "v"}, State.SUCCEEDED)
    assert (changed.audit.created_by, changed.audit.created_at) == ("tester", NOW)
    assert (changed.audit.modified_by, changed.audit.modified_at) == ("changer", later)
    async with store.read() as tx:
        b = _set(await tx.by_id(CREDS, set_b))
        assert b.identity_type == "UserAssigned"
        assert b.auth_credentials == [{"name": "Credential1", "usernameSecretIdentifier": "u"}]
        assert b.login_server == "docker.io" and b.state is State.CREATING
        moved = _rule(await tx.by_id(RULE, rule))
        assert (moved.credential_set_id, moved.credential_set_name) == (set_b, "set-b")
    before = dt.datetime.now(dt.UTC)
    async with store.write() as tx:  # an actor without a time: modified now
        await tx.update(
            RULE, rule, Changes(actor="clearer", set_credential_set=True, credential_set_id=None)
        )
    async with store.read() as tx:
        cleared = _rule(await tx.by_id(RULE, rule))
    assert (cleared.credential_set_id, cleared.credential_set_name) == (None, None)
    assert cleared.audit.modified_by == "clearer"
    assert before - dt.timedelta(seconds=5) <= cleared.audit.modified_at
    assert cleared.audit.modified_at <= dt.datetime.now(dt.UTC)
    assert cleared.audit.created_at == NOW


async def test_rules_with_targets(store: SqlResourceStore) -> None:
    reg = await add_registry(store, "reg-one")
    other = await add_registry(store, "reg-two")
    async with store.write() as tx:
        await tx.insert_cache_rule(cache_rule(reg, "static-a", "team/app"))
        await tx.insert_cache_rule(cache_rule(reg, "wild-a", "team/app/*"))
        await tx.insert_cache_rule(cache_rule(reg, "wild-b", "team/*"))
        await tx.insert_cache_rule(cache_rule(reg, "wild-all", "*"))
        await tx.insert_cache_rule(cache_rule(other, "static-b", "team/app"))
    async with store.read() as tx:
        static = await tx.rules_with_targets(reg, ["team/app"], False)
        assert [r.name for r in static] == ["static-a"]
        assert static[0].wildcard is False
        wild = await tx.rules_with_targets(reg, ["", "team", "team/app"], True)
        assert sorted(r.name for r in wild) == ["wild-a", "wild-all", "wild-b"]
        assert all(r.wildcard is True for r in wild)
        assert await tx.rules_with_targets(reg, ["team/ap"], False) == []
        assert await tx.rules_with_targets(reg, ["team/app"], True) != []
        assert await tx.rules_with_targets(reg, [], True) == []
        in_other = await tx.rules_with_targets(other, ["team/app"], False)
        assert [r.name for r in in_other] == ["static-b"]


async def test_wildcard_rules_under_treats_like_metacharacters_literally(
    store: SqlResourceStore,
) -> None:
    reg = await add_registry(store, "reg-one")
    other = await add_registry(store, "reg-two")
    async with store.write() as tx:
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
            await tx.insert_cache_rule(cache_rule(reg, name, target))
        await tx.insert_cache_rule(cache_rule(other, "other-reg", "a_b/c/*"))

    async def under(prefix: str, limit: int = 100) -> list[str]:
        async with store.read() as tx:
            rules = await tx.wildcard_rules_under(reg, prefix, limit)
        return sorted(r.name for r in rules)

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
    async with store.read() as tx:
        assert len(await tx.wildcard_rules_under(reg, "")) == 5  # the default limit


async def test_rules_using_credential_set_and_the_joined_set_name(store: SqlResourceStore) -> None:
    reg = await add_registry(store)
    other = await add_registry(store, "reg-two")
    async with store.write() as tx:
        used = await tx.insert_credential_set(credential_set(reg, "Used-Set"))
        unused = await tx.insert_credential_set(credential_set(reg, "unused-set"))
        elsewhere = await tx.insert_credential_set(credential_set(other, "other-set"))
        for name in ["Rule-C", "rule-a", "Rule-B"]:
            await tx.insert_cache_rule(
                cache_rule(reg, name, f"{name.lower()}/x", credential_set_id=used)
            )
        await tx.insert_cache_rule(cache_rule(reg, "no-creds", "plain"))
        await tx.insert_cache_rule(cache_rule(reg, "wild-creds", "w/*", credential_set_id=used))
    async with store.read() as tx:
        assert await tx.rules_using_credential_set(used) == [
            "rule-a",
            "Rule-B",
            "Rule-C",
            "wild-creds",
        ]
        assert await tx.rules_using_credential_set(used, limit=2) == ["rule-a", "Rule-B"]
        assert await tx.rules_using_credential_set(unused) == []
        assert await tx.credential_set_ids() == [used, unused, elsewhere]

        # Every way of reading a rule joins the referenced set's name in (its spelling).
        rule_b = _rule(await tx.child(RULE, reg, "rule-b"))
        assert (rule_b.credential_set_id, rule_b.credential_set_name) == (used, "Used-Set")
        assert _rule(await tx.by_id(RULE, rule_b.id)).credential_set_name == "Used-Set"
        listed = {r.name: r for r in await tx.children(RULE, reg, "", 100)}
        assert {n: _rule(r).credential_set_name for n, r in listed.items()} == {
            "no-creds": None,
            "rule-a": "Used-Set",
            "Rule-B": "Used-Set",
            "Rule-C": "Used-Set",
            "wild-creds": "Used-Set",
        }
        (static,) = await tx.rules_with_targets(reg, ["rule-c/x"], False)
        assert static.credential_set_name == "Used-Set"
        (wild,) = await tx.wildcard_rules_under(reg, "")
        assert wild.credential_set_name == "Used-Set"
        plain = _rule(await tx.child(RULE, reg, "no-creds"))
        assert (plain.credential_set_id, plain.credential_set_name) == (None, None)
    _, point = await store.get_with_child(RULE, RegistryKey(SUB, "my-rg", "registry-one"), "RULE-B")
    assert point == rule_b
    _, point_plain = await store.get_with_child(
        RULE, RegistryKey(SUB, "my-rg", "registry-one"), "no-creds"
    )
    assert point_plain == plain


# -- foreign keys -----------------------------------------------------------------------------
async def test_credential_set_used_by_a_rule_cannot_be_deleted(store: SqlResourceStore) -> None:
    reg = await add_registry(store)
    async with store.write() as tx:
        set_id = await tx.insert_credential_set(credential_set(reg, "the-set"))
        rule_id = await tx.insert_cache_rule(
            cache_rule(reg, "the-rule", "app", credential_set_id=set_id)
        )
    with pytest.raises(IntegrityError):
        async with store.write() as tx:
            await tx.delete(CREDS, set_id)
    async with store.read() as tx:
        assert await tx.by_id(CREDS, set_id) is not None
    # Once no rule uses it, it can go.
    async with store.write() as tx:
        await tx.update(RULE, rule_id, Changes(set_credential_set=True, credential_set_id=None))
        assert await tx.delete(CREDS, set_id) is True
    async with store.read() as tx:
        assert await tx.by_id(CREDS, set_id) is None
        assert _rule(await tx.by_id(RULE, rule_id)).credential_set_id is None


async def test_rule_cannot_reference_a_missing_registry_or_set(store: SqlResourceStore) -> None:
    reg = await add_registry(store)
    with pytest.raises(IntegrityError):
        async with store.write() as tx:
            await tx.insert_cache_rule(cache_rule(reg + 1000, "orphan", "app"))
    with pytest.raises(IntegrityError):
        async with store.write() as tx:
            await tx.insert_cache_rule(cache_rule(reg, "bad-set", "app", credential_set_id=4242))
    with pytest.raises(IntegrityError):
        async with store.write() as tx:
            await tx.insert_credential_set(credential_set(reg + 1000, "orphan-set"))
    rule = await _insert_rule(store, reg)
    with pytest.raises(IntegrityError):
        async with store.write() as tx:
            await tx.update(RULE, rule, Changes(set_credential_set=True, credential_set_id=4242))
    async with store.read() as tx:
        assert await tx.count_children(RULE, reg) == 1
        assert await tx.count_children(CREDS, reg) == 0
        assert _rule(await tx.by_id(RULE, rule)).credential_set_id is None


async def _insert_rule(store: SqlResourceStore, reg: int) -> int:
    async with store.write() as tx:
        return await tx.insert_cache_rule(cache_rule(reg, "good", "good"))


async def test_deleting_a_registry_cascades_to_its_rules_and_sets(store: SqlResourceStore) -> None:
    doomed = await add_registry(store, "doomed-reg")
    kept = await add_registry(store, "kept-reg")
    async with store.write() as tx:
        set_id = await tx.insert_credential_set(credential_set(doomed, "the-set"))
        lonely = await tx.insert_credential_set(credential_set(doomed, "lonely-set"))
        rule_ids = [
            await tx.insert_cache_rule(
                cache_rule(doomed, "with-set", "a", credential_set_id=set_id)
            ),
            await tx.insert_cache_rule(cache_rule(doomed, "no-set", "b")),
        ]
        kept_set = await tx.insert_credential_set(credential_set(kept, "kept-set"))
        await tx.insert_cache_rule(cache_rule(kept, "kept-rule", "a", credential_set_id=kept_set))
    async with store.write() as tx:
        assert await tx.delete(ResourceKind.REGISTRY, doomed) is True
    async with store.read() as tx:
        assert await tx.count_children(RULE, doomed) == 0
        assert await tx.count_children(CREDS, doomed) == 0
        for rule_id in rule_ids:
            assert await tx.by_id(RULE, rule_id) is None
        assert await tx.by_id(CREDS, set_id) is None
        assert await tx.by_id(CREDS, lonely) is None
        assert await tx.count_children(RULE, kept) == 1
        assert await tx.count_children(CREDS, kept) == 1
        assert await tx.credential_set_ids() == [kept_set]
        assert await tx.registry_by_id(doomed) is None
    assert await store.first_registries() == ["kept-reg"]
    assert await store.get_registry(RegistryKey(SUB, "my-rg", "doomed-reg")) is None


# -- operation records ------------------------------------------------------------------------
async def test_operations_insert_read_and_finish(store: SqlResourceStore, db: Database) -> None:
    ops = SqlOperationStore(db)
    async with store.write() as tx:
        await tx.insert_operation(operation("op-1", registry_id=7, row_id=42))
        await tx.insert_operation(operation("op-del", kind=CREDS, row_id=42, action=Action.DELETE))
        assert await tx.active_operation(RULE, 42) == "op-1"  # seen in its own transaction
    async with store.read() as tx:
        op = await tx.operation("op-1")
        assert await tx.operation("op-2") is None
        assert await tx.active_operation(RULE, 42) == "op-1"
        assert await tx.active_operation(RULE, 43) is None
        assert await tx.active_operation(CREDS, 42) == "op-del"
    assert op is not None
    assert op == operation("op-1", registry_id=7, row_id=42)  # read back as written
    assert await ops.get("op-1") == op
    assert await ops.get("op-2") is None
    deleting = await ops.get("op-del")
    assert deleting is not None
    assert (deleting.kind, deleting.action, deleting.registry_id) == (CREDS, Action.DELETE, None)

    async with store.write() as tx:
        await tx.finish_operation("op-1", OperationState.FAILED, "CredentialSetInUse", "in use")
        await tx.finish_operation("op-del", OperationState.SUCCEEDED)
    async with store.read() as tx:
        done = await tx.operation("op-1")
        assert await tx.active_operation(RULE, 42) is None
        assert await tx.active_operation(CREDS, 42) is None
    assert done is not None
    assert done.status is OperationState.FAILED
    assert done.error_code == "CredentialSetInUse"
    assert done.error_message == "in use"
    assert done.ended_at is not None
    assert abs(done.ended_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    assert (done.started_at, done.row_id, done.registry_id) == (NOW, 42, 7)
    assert await ops.get("op-1") == done
    succeeded = await ops.get("op-del")
    assert succeeded is not None and succeeded.status is OperationState.SUCCEEDED
    assert (succeeded.error_code, succeeded.error_message) == (None, None)
    with pytest.raises(IntegrityError):  # operation ids are unique
        async with store.write() as tx:
            await tx.insert_operation(operation("op-1"))


# -- datetimes --------------------------------------------------------------------------------
async def test_datetimes_come_back_timezone_aware_utc(
    store: SqlResourceStore, db: Database
) -> None:
    # Written with a non-UTC offset: read back as the same instant, in UTC.
    plus_two = NOW.astimezone(dt.timezone(dt.timedelta(hours=2)))
    async with store.write() as tx:
        reg = await tx.insert_registry(registry("Registry-One", now=plus_two))
        set_id = await tx.insert_credential_set(credential_set(reg, "set", now=plus_two))
        await tx.insert_cache_rule(cache_rule(reg, "rule", "app", credential_set_id=set_id))
        await tx.insert_token(new_token("t" * 64, "timed"))
        await tx.insert_operation(operation("op-time", plus_two))
        await tx.finish_operation("op-time", OperationState.SUCCEEDED)
    key = RegistryKey(SUB, "my-rg", "registry-one")
    async with store.read() as tx:
        op = await tx.operation("op-time")
        in_tx = await tx.registry_by_id(reg)
        rule = _rule(await tx.child(RULE, reg, "rule"))
        creds = _set(await tx.child(CREDS, reg, "set"))
    point = await store.get_registry(key)
    point_with_rule, point_rule = await store.get_with_child(RULE, key, "rule")
    _, point_set = await store.get_with_child(CREDS, key, "set")
    token = await store.token("t" * 64)
    point_op = await SqlOperationStore(db).get("op-time")
    assert op is not None and point_op is not None and token is not None
    assert point_rule is not None and point_set is not None
    registries: list[RegistryRecord | None] = [in_tx, point, point_with_rule]
    for record in registries:
        assert record is not None
        assert_aware_utc(record.audit.created_at, record.audit.modified_at)
        assert record.audit.created_at == record.audit.modified_at == NOW
    for child in (rule, creds, point_rule, point_set):
        assert_aware_utc(child.audit.created_at, child.audit.modified_at)
    assert creds.audit.created_at == point_set.audit.created_at == NOW
    assert rule.audit.created_at == point_rule.audit.created_at == NOW
    for record_op in (op, point_op):
        assert_aware_utc(record_op.started_at, record_op.ended_at)
        assert record_op.started_at == NOW
        assert record_op.ended_at is not None
        assert abs(record_op.ended_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    assert op == point_op
    assert_aware_utc(token.created_at)
    assert abs(token.created_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
