"""Cache-rule resolution for the registry face (:mod:`entrepot.proxy.resolution`) and the
in-memory directory of registries and rules (:mod:`entrepot.proxy.directory`) over a real
metadata store (SQLite and PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest

from entrepot import errors as e
from entrepot.metadata.records import (
    Audit,
    CacheRuleRecord,
    Changes,
    RegistryHead,
    ResourceKind,
    State,
)
from entrepot.metadata.resources import SqlResourceStore
from entrepot.proxy import RegistryDirectory, RegistryRules, Resolution
from entrepot.rules import parse_rule
from tests.metadata_support import add_registry, cache_rule, opened, store_url

NOW = dt.datetime(2024, 5, 6, tzinfo=dt.UTC)


def record(
    name: str, source: str, target: str, *, state: State = State.SUCCEEDED, rule_id: int = 0
) -> CacheRuleRecord:
    pattern = parse_rule(source, target)
    return CacheRuleRecord(
        id=rule_id or abs(hash(name)) % 100000,
        registry_id=7,
        name=name,
        source_repository=pattern.source_repository,
        target_repository=pattern.target_repository,
        target_path=pattern.target_path,
        wildcard=pattern.wildcard,
        credential_set_id=None,
        credential_set_name=None,
        state=state,
        audit=Audit(NOW, "t", NOW, "t"),
    )


RULES = RegistryRules(
    7,
    "MyRegistry",
    [
        record("hub", "docker.io/*", "hub/*"),
        record("hub-library", "docker.io/library/*", "lib/*"),
        record("ubuntu", "docker.io/library/ubuntu", "ubuntu"),
        record("ubuntu-in-hub", "docker.io/library/ubuntu", "hub/ubuntu-pinned"),
        record("quay", "quay.io/*", "q/*"),
        record("quay-team", "quay.io/team/*", "qt/*"),
        record("quay-team-app", "quay.io/other/app", "q/team/app"),
        record("shadow", "quay.io/other/thing", "q/zed/app"),
        record("local", "127.0.0.1:5001/base/*", "local/*"),
        record("gone", "ghcr.io/gone/*", "gone/*", state=State.DELETING),
        record("creating", "ghcr.io/new/*", "new/*", state=State.CREATING),
        record("alias", "index.docker.io/bitnami/redis", "redis"),
    ],
)


def where(resolution: Resolution | None) -> tuple[str, str, str, str] | None:
    """(rule, target repository, upstream login server, upstream repository)."""
    if resolution is None:
        return None
    up = resolution.upstream
    return resolution.rule.name, resolution.repository, up.login_server, up.repository


@pytest.mark.parametrize(
    ("repository", "expected"),
    [
        # static exactly; wildcard by prefix, the rest substituted; Docker Hub gets library/
        ("ubuntu", ("ubuntu", "ubuntu", "docker.io", "library/ubuntu")),
        ("hub/alpine", ("hub", "hub/alpine", "docker.io", "library/alpine")),
        ("hub/bitnami/redis", ("hub", "hub/bitnami/redis", "docker.io", "bitnami/redis")),
        ("hub/library/alpine", ("hub", "hub/library/alpine", "docker.io", "library/alpine")),
        ("lib/alpine", ("hub-library", "lib/alpine", "docker.io", "library/alpine")),
        ("lib/a/b", ("hub-library", "lib/a/b", "docker.io", "library/a/b")),
        # a static rule inside a wildcard wins over it
        (
            "hub/ubuntu-pinned",
            ("ubuntu-in-hub", "hub/ubuntu-pinned", "docker.io", "library/ubuntu"),
        ),
        # a static inside a wildcard wins over it, at any depth
        ("q/x", ("quay", "q/x", "quay.io", "x")),
        ("q/team/x", ("quay", "q/team/x", "quay.io", "team/x")),
        ("qt/x/y", ("quay-team", "qt/x/y", "quay.io", "team/x/y")),
        ("q/team/app", ("quay-team-app", "q/team/app", "quay.io", "other/app")),
        ("local/a/b", ("local", "local/a/b", "127.0.0.1:5001", "base/a/b")),
        ("new/x", ("creating", "new/x", "ghcr.io", "new/x")),
        ("redis", ("alias", "redis", "index.docker.io", "bitnami/redis")),
        # nothing covers these: static targets have no subdirectories, wildcards need a rest
        ("ubuntu/x", None),
        ("hub", None),
        ("q", None),
        ("local", None),
        ("other", None),
        ("gone/x", None),  # a rule being deleted serves nothing
        ("hubx/alpine", None),  # prefixes match at '/' only
    ],
)
def test_resolution_by_target(repository: str, expected: Any) -> None:
    resolution = RULES.resolve(repository)
    assert where(resolution) == expected
    if resolution is not None:
        assert (resolution.registry_id, resolution.registry, resolution.mirror) == (
            7,
            "MyRegistry",
            None,
        )
        assert resolution.rule.source_repository.endswith(
            "*" if resolution.rule.target_repository.endswith("*") else ""
        )


@pytest.mark.parametrize(
    ("ns", "name", "expected"),
    [
        # Docker Hub: library/ for one component, every alias of the ns, short names for the
        # official images reached through docker.io/* ...
        ("docker.io", "alpine", ("hub-library", "lib/alpine", "docker.io", "library/alpine")),
        (
            "docker.io",
            "library/alpine",
            ("hub-library", "lib/alpine", "docker.io", "library/alpine"),
        ),
        (
            "registry-1.docker.io",
            "library/alpine",
            ("hub-library", "lib/alpine", "docker.io", "library/alpine"),
        ),
        (
            "INDEX.docker.io",
            "bitnami/redis",
            ("alias", "redis", "index.docker.io", "bitnami/redis"),
        ),
        (
            "docker.io",
            "grafana/grafana",
            ("hub", "hub/grafana/grafana", "docker.io", "grafana/grafana"),
        ),
        # ... static sources first (ties by rule name), then the longest wildcard source
        ("docker.io", "ubuntu", ("ubuntu", "ubuntu", "docker.io", "library/ubuntu")),
        ("docker.io", "library/ubuntu", ("ubuntu", "ubuntu", "docker.io", "library/ubuntu")),
        ("quay.io", "team/x", ("quay-team", "qt/x", "quay.io", "team/x")),
        ("quay.io", "team/app", ("quay-team", "qt/app", "quay.io", "team/app")),
        ("quay.io", "x/y", ("quay", "q/x/y", "quay.io", "x/y")),
        ("quay.io", "other/app", ("quay-team-app", "q/team/app", "quay.io", "other/app")),
        # quay.io/zed/app maps to q/zed/app by quay.io/*, a target a static rule holds for
        # another upstream: not that one, and no other candidate either
        ("quay.io", "zed/app", None),
        ("quay.io", "other/thing", ("shadow", "q/zed/app", "quay.io", "other/thing")),
        ("127.0.0.1:5001", "base/a", ("local", "local/a", "127.0.0.1:5001", "base/a")),
        ("127.0.0.1:5001", "other/a", None),
        ("127.0.0.1:5002", "base/a", None),
        ("ghcr.io", "gone/x", None),
        ("gcr.io", "x", None),
    ],
)
def test_resolution_by_source_in_mirror_mode(ns: str, name: str, expected: Any) -> None:
    resolution = RULES.resolve_mirror(ns, name)
    assert where(resolution) == expected
    if resolution is not None:
        assert resolution.mirror == ns
        # two-way: the target resolves to the same rule and upstream
        assert where(RULES.resolve(resolution.repository)) == expected


def test_docker_hub_root_wildcard_maps_official_images_to_short_names() -> None:
    rules = RegistryRules(1, "r", [record("hub", "docker.io/*", "hub/*")])
    assert where(rules.resolve_mirror("docker.io", "alpine")) == (
        "hub",
        "hub/alpine",
        "docker.io",
        "library/alpine",
    )
    # and a static rule on the short name with another upstream makes it take the long one
    rules = RegistryRules(
        1,
        "r",
        [record("hub", "docker.io/*", "hub/*"), record("pin", "quay.io/x/alpine", "hub/alpine")],
    )
    assert where(rules.resolve_mirror("docker.io", "alpine")) == (
        "hub",
        "hub/library/alpine",
        "docker.io",
        "library/alpine",
    )


def test_an_invalid_ns_is_name_invalid() -> None:
    for ns in ("not a host", "", "quay.io/x", "host:99999"):
        with pytest.raises(e.InvalidLoginServer) as excinfo:
            RULES.resolve_mirror(ns, "x")
        assert excinfo.value.kind.oci_code == "NAME_INVALID"


def test_an_upstream_name_too_long_is_name_invalid() -> None:
    long_source = "a" * 200
    rules = RegistryRules(1, "r", [record("long", f"quay.io/{long_source}/*", "s/*")])
    assert rules.resolve("s/" + "b" * 50) is not None
    with pytest.raises(e.NameInvalid) as excinfo:
        rules.resolve("s/" + "b" * 100)
    assert "'long'" in excinfo.value.message and "too long" in excinfo.value.message


def test_overlapping_or_broken_records_are_left_out() -> None:
    rules = RegistryRules(
        1,
        "r",
        [
            record("a", "quay.io/a/*", "x/*", rule_id=1),
            record("b", "quay.io/b/*", "x/y/*", rule_id=2),  # nested: never let in by the API
        ],
    )
    assert len(rules) == 1
    assert where(rules.resolve("x/y/z")) == ("a", "x/y/z", "quay.io", "a/y/z")


def test_per_request_cost_does_not_grow_with_the_number_of_rules() -> None:
    def build(count: int) -> RegistryRules:
        records = [record(f"w{i}", f"quay.io/w{i}/*", f"w{i}/*", rule_id=i) for i in range(count)]
        records += [
            record(f"s{i}", f"quay.io/s/{i}", f"s{i}", rule_id=count + i) for i in range(count)
        ]
        records.append(record("deep", "quay.io/deep/*", "a/b/c/*", rule_id=3 * count))
        return RegistryRules(1, "r", records)

    names = ["w1/x/y", "s1", "a/b/c/d/e/f", "nothing/at/all/here", "w0/z"]

    def cost(rules: RegistryRules) -> float:
        best = float("inf")
        for _ in range(7):
            started = time.perf_counter()
            for _ in range(300):
                for name in names:
                    rules.resolve(name)
                rules.resolve_mirror("quay.io", "w1/x")
            best = min(best, time.perf_counter() - started)
        return best

    small, large = build(2), build(5000)
    assert where(small.resolve("w1/x/y")) == ("w1", "w1/x/y", "quay.io", "w1/x/y")
    assert small.resolve("nothing/at/all/here") is None
    assert where(large.resolve("s4999")) == ("s4999", "s4999", "quay.io", "s/4999")
    assert where(large.resolve("w4999/x")) == ("w4999", "w4999/x", "quay.io", "w4999/x")
    # the same lookups over 10001 rules cost what they cost over 5 (generous bound for a
    # loaded machine; a linear scan would be ~1000 times slower)
    assert cost(large) < 3 * cost(small) + 0.002


# -- the directory over a real store -----------------------------------------------------------
class Counting:
    """A real :class:`SqlResourceStore`, with the reads the directory makes counted."""

    def __init__(self, store: SqlResourceStore) -> None:
        self.store = store
        self.calls: list[str] = []

    async def registry_heads(self, name: str) -> list[RegistryHead]:
        self.calls.append("heads")
        return await self.store.registry_heads(name)

    async def first_registry_heads(self) -> list[RegistryHead]:
        self.calls.append("first")
        return await self.store.first_registry_heads()

    async def cache_rules(self, registry_id: int) -> list[CacheRuleRecord]:
        self.calls.append("rules")
        return await self.store.cache_rules(registry_id)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_directory_reads_once_per_interval_and_drops_our_changes_at_once(
    database_url: str, tmp_path: Path
) -> None:
    async with opened(store_url(database_url, tmp_path)) as db:
        store = SqlResourceStore(db)
        registry_id = await add_registry(store, "Registry-One")
        async with store.write() as tx:
            for i in range(1000):
                await tx.insert_cache_rule(cache_rule(registry_id, f"rule{i}", f"team{i}/*"))
        counting, clock = Counting(store), Clock()
        directory = RegistryDirectory(counting, refresh_seconds=1.0, capacity=4, clock=clock)
        store.subscribe(directory.invalidate)

        async def resolve(repository: str) -> str | None:
            [head] = await directory.named("REGISTRY-one")
            found = (await directory.rules(head)).resolve(repository)
            return None if found is None else found.rule.name

        assert await resolve("team7/app") == "rule7"
        assert counting.calls == ["heads", "rules"]
        for _ in range(200):  # warm: no read at all
            assert await resolve("team999/x/y") == "rule999"
        assert counting.calls == ["heads", "rules"]
        clock.now += 1.0  # the interval has passed: one point read, the rules unchanged
        assert await resolve("team1/x") == "rule1"
        assert counting.calls == ["heads", "rules", "heads"]

        # a change committed by this process applies at once (no interval to wait)
        async with store.write() as tx:
            new_id = await tx.insert_cache_rule(cache_rule(registry_id, "extra", "extra/*"))
        assert await resolve("extra/x") == "extra"
        async with store.write() as tx:
            await tx.update(ResourceKind.CACHE_RULE, new_id, Changes(state=State.DELETING))
        assert await resolve("extra/x") is None
        async with store.write() as tx:
            await tx.delete(ResourceKind.CACHE_RULE, new_id)
        assert await resolve("extra/x") is None
        # each change: one heads read and one rules read, never more
        assert counting.calls[3:] == ["heads", "rules"] * 3

        # unknown names are remembered too, within the bound
        counting.calls.clear()
        for name in ("nope1", "nope2", "nope1"):
            assert await directory.named(name) == []
        assert counting.calls == ["heads", "heads"]
        assert await directory.sole() is not None and await directory.sole() is not None
        assert counting.calls == ["heads", "heads", "first"]
        for i in range(10):  # more names than the capacity: the oldest are dropped
            await directory.named(f"other{i}")
        counting.calls.clear()
        await directory.named("nope1")
        assert counting.calls == ["heads"]


async def test_a_change_by_another_store_is_seen_after_the_interval(
    database_url: str, tmp_path: Path
) -> None:
    """Two stores on one database stand for two processes: no notification crosses them, the
    ``rules_version`` does."""
    url = store_url(database_url, tmp_path)
    async with opened(url) as db_a, opened(url) as db_b:
        a, b = SqlResourceStore(db_a), SqlResourceStore(db_b)
        registry_id = await add_registry(a, "Registry-One")
        clock = Clock()
        directory = RegistryDirectory(b, refresh_seconds=1.0, clock=clock)
        b.subscribe(directory.invalidate)

        async def resolve(repository: str) -> str | None:
            [head] = await directory.named("registry-one")
            found = (await directory.rules(head)).resolve(repository)
            return None if found is None else found.rule.name

        assert await resolve("team/x") is None
        async with a.write() as tx:
            rule_id = await tx.insert_cache_rule(cache_rule(registry_id, "team", "team/*"))
        assert await resolve("team/x") is None  # within the interval: the answer read before
        clock.now += 1.0
        assert await resolve("team/x") == "team"
        async with a.write() as tx:
            await tx.delete(ResourceKind.CACHE_RULE, rule_id)
        clock.now += 1.0
        assert await resolve("team/x") is None
        # a registry deleted elsewhere disappears too
        async with a.write() as tx:
            await tx.delete(ResourceKind.REGISTRY, registry_id)
        clock.now += 1.0
        assert await directory.named("registry-one") == []
