"""Secret resolvers: one conformance suite for every resolver, then each resolver's specifics.

The conformance suite runs over the built-in vault (on SQLite and on PostgreSQL), the
environment-variable resolver and the file resolver. Every resolver must:

* resolve a present secret to a :class:`Secret` holding exactly its value;
* raise SecretNotFound for a well-formed identifier of nothing;
* raise SecretAccessDenied when the secret exists but the reader may not read it;
* refuse malformed identifiers (InvalidSecretIdentifier, or not handle them at all);
* never put a value in an error message or a log record.
"""

from __future__ import annotations

import base64
import logging
import os
import pickle
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from entrepot import errors as e
from entrepot.config import SecretsConfig
from entrepot.config import database_url as async_database_url
from entrepot.errors import ConfigError
from entrepot.metadata import schema as t
from entrepot.metadata.database import Database as MetadataStore
from entrepot.metadata.vault_store import SqlVaultStore
from entrepot.secrets import (
    BuiltinVault,
    EnvResolver,
    FileResolver,
    Resolvers,
    Secret,
    SecretResolver,
    build_resolvers,
    load_master_key,
    parse_secret_identifier,
)
from entrepot.secrets.keys import (
    MASTER_KEY_ENV,
    MASTER_KEY_FILE,
    make_key_check,
    verify_key_check,
)

PRINCIPAL = "6a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
OTHER_PRINCIPAL = "11111111-2222-4333-8444-555555555555"
VALUE = "s3cr3t-Pässwörd ✓ with spaces"
KEY1 = base64.b64encode(bytes(range(32))).decode()
KEY2 = base64.b64encode(bytes(range(1, 33))).decode()


def _no_value(exc: BaseException, *values: str) -> None:
    text = str(exc) + repr(exc) + str(getattr(exc, "message", ""))
    for value in values:
        assert value not in text, f"secret value leaked into {type(exc).__name__}: {text}"


async def _open_store(url: str, tmp_path: Path) -> MetadataStore:
    store = MetadataStore(async_database_url(url, tmp_path))
    await store.open()
    return store


# ================================================================================================
# Conformance suite
# ================================================================================================
@dataclass
class Harness:
    """One resolver with the means to create secrets it can and cannot read."""

    resolver: SecretResolver
    put: Callable[[str, str], Any]  # async (name, value) -> identifier readable by PRINCIPAL
    missing: str  # well-formed, permitted, absent
    forbid: Callable[[str, str], Any]  # async (name, value) -> identifier PRINCIPAL may not read
    malformed: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)  # identifiers of other resolvers
    cleanup: Callable[[], Any] | None = None


async def _vault_harness(url: str, tmp_path: Path) -> Harness:
    store = await _open_store(url, tmp_path)
    vault = BuiltinVault(SqlVaultStore(store))
    await vault.unlock(tmp_path / "data", {MASTER_KEY_ENV: KEY1})
    await vault.create_vault("conf-vault")
    await vault.grant("conf-vault", PRINCIPAL)
    await vault.create_vault("locked-vault")
    await vault.grant("locked-vault", OTHER_PRINCIPAL)

    async def put(name: str, value: str) -> str:
        info = await vault.set_secret("conf-vault", name, value)
        return info.versionless_id

    async def forbid(name: str, value: str) -> str:
        info = await vault.set_secret("locked-vault", name, value)
        return info.versionless_id

    return Harness(
        resolver=vault,
        put=put,
        missing="https://conf-vault.vault.azure.net/secrets/no-such-secret",
        forbid=forbid,
        malformed=[
            "https://conf-vault.vault.azure.net/keys/k1",
            "https://conf-vault.vault.azure.net/secrets/",
            "https://conf-vault.vault.azure.net/secrets/a_b",
            "https://conf-vault.vault.azure.net/secrets/name/not-a-version",
            "https://conf-vault.vault.azure.net/secrets/name?x=1",
            "https://c.vault.azure.net/secrets/name",
            "https://user:pw@conf-vault.vault.azure.net/secrets/name",
            "https://conf-vault.vault.azure.net:8443/secrets/name",
            "https://conf-vault.vault.azure.net/secrets/a/0123456789abcdef0123456789abcdef/x",
        ],
        foreign=[
            "env:CONF_VAR",
            "file:///etc/hostname",
            "http://conf-vault.vault.azure.net/secrets/x",
            "https://example.com/secrets/x",
        ],
        cleanup=store.close,
    )


def _env_harness() -> Harness:
    environ: dict[str, str] = {}
    resolver = EnvResolver(["CONF_*", "OTHER_ALLOWED"], environ)

    async def put(name: str, value: str) -> str:
        var = "CONF_" + name.upper().replace("-", "_")
        environ[var] = value
        return f"env:{var}"

    async def forbid(name: str, value: str) -> str:
        var = "HIDDEN_" + name.upper().replace("-", "_")
        environ[var] = value
        return f"env:{var}"

    return Harness(
        resolver=resolver,
        put=put,
        missing="env:CONF_NOT_SET",
        forbid=forbid,
        malformed=["env:", "env:1ABC", "env:A-B", "env:A B", "env:A/B"],
        foreign=["https://v1.vault.azure.net/secrets/x", "file:///x", "environ:X", "ENV"],
    )


def _file_harness(tmp_path: Path) -> Harness:
    root = tmp_path / "mounted"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    resolver = FileResolver([str(root)])

    async def put(name: str, value: str) -> str:
        (root / name).write_text(value + "\n", encoding="utf-8")
        return (root / name).as_uri()

    async def forbid(name: str, value: str) -> str:
        (outside / name).write_text(value, encoding="utf-8")
        return (outside / name).as_uri()

    return Harness(
        resolver=resolver,
        put=put,
        missing=(root / "absent").as_uri(),
        forbid=forbid,
        malformed=[
            "file:relative/path",
            "file://otherhost/etc/x",
            f"{root.as_uri()}/",
            f"{(root / 'x').as_uri()}?q=1",
        ],
        foreign=["https://v1.vault.azure.net/secrets/x", "env:X", "files:///x"],
    )


@pytest.fixture(params=["vault-sqlite", "vault-postgresql", "env", "file"])
def harness_kind(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """The resolver kind and, for the vault, its database URL (PostgreSQL made here, sync)."""
    kind = str(request.param)
    if kind == "vault-sqlite":
        return kind, f"sqlite:///{tmp_path / 'meta.db'}"
    if kind == "vault-postgresql":
        return kind, str(request.getfixturevalue("postgres_database"))
    return kind, ""


@pytest.fixture
async def harness(harness_kind: tuple[str, str], tmp_path: Path) -> AsyncIterator[Harness]:
    kind, url = harness_kind
    if kind.startswith("vault"):
        h = await _vault_harness(url, tmp_path)
    elif kind == "env":
        h = _env_harness()
    else:
        h = _file_harness(tmp_path)
    yield h
    if h.cleanup is not None:
        await h.cleanup()


async def test_conformance_resolves_a_present_secret(harness: Harness) -> None:
    identifier = await harness.put("registry-password", VALUE)
    assert harness.resolver.handles(identifier)
    harness.resolver.check(identifier)
    secret = await harness.resolver.resolve(identifier, PRINCIPAL)
    assert isinstance(secret, Secret)
    assert secret.reveal() == VALUE
    assert VALUE not in repr(secret) and VALUE not in str(secret) and VALUE not in f"{secret}"


async def test_conformance_resolves_through_a_chain(harness: Harness) -> None:
    identifier = await harness.put("chained", "chain-value-1")
    chain = Resolvers([harness.resolver])
    chain.check_identifier(identifier)
    assert (await chain.resolve(identifier, PRINCIPAL)).reveal() == "chain-value-1"


async def test_conformance_unknown_is_not_found(harness: Harness) -> None:
    await harness.put("something-else", VALUE)
    assert harness.resolver.handles(harness.missing)
    harness.resolver.check(harness.missing)
    with pytest.raises(e.SecretNotFound) as info:
        await harness.resolver.resolve(harness.missing, PRINCIPAL)
    assert harness.missing in info.value.message
    assert info.value.status == 404
    _no_value(info.value, VALUE)


async def test_conformance_not_permitted_is_access_denied(harness: Harness) -> None:
    identifier = await harness.forbid("forbidden-secret", VALUE)
    assert harness.resolver.handles(identifier)
    with pytest.raises(e.SecretAccessDenied) as info:
        await harness.resolver.resolve(identifier, PRINCIPAL)
    assert identifier in info.value.message
    assert info.value.status == 403
    _no_value(info.value, VALUE)


async def test_conformance_malformed_is_refused(harness: Harness) -> None:
    handled = [i for i in harness.malformed if harness.resolver.handles(i)]
    assert handled, "the suite must exercise malformed identifiers the resolver claims"
    for identifier in handled:
        with pytest.raises(e.InvalidSecretIdentifier):
            harness.resolver.check(identifier)
        with pytest.raises(e.InvalidSecretIdentifier) as info:
            await harness.resolver.resolve(identifier, PRINCIPAL)
        assert info.value.status == 400


async def test_conformance_other_schemes_are_not_handled(harness: Harness) -> None:
    for identifier in harness.foreign:
        assert not harness.resolver.handles(identifier), identifier


async def test_conformance_no_value_in_any_error_or_log(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    present = await harness.put("present", VALUE)
    forbidden = await harness.forbid("hidden", VALUE)
    await harness.resolver.resolve(present, PRINCIPAL)
    errors: list[BaseException] = []
    for identifier in [harness.missing, forbidden, *harness.malformed]:
        if not harness.resolver.handles(identifier):
            continue
        try:
            await harness.resolver.resolve(identifier, PRINCIPAL)
        except e.EntrepotError as exc:
            errors.append(exc)
    assert len(errors) >= 2
    for exc in errors:
        _no_value(exc, VALUE)
    assert VALUE not in caplog.text


async def test_conformance_value_is_exact(harness: Harness) -> None:
    """Leading/trailing spaces and unicode survive; nothing else is added or removed."""
    for i, value in enumerate(["  padded  ", "x", "ünïcødé-✓", "a\nb"]):
        identifier = await harness.put(f"exact-{i}", value)
        assert (await harness.resolver.resolve(identifier, PRINCIPAL)).reveal() == value


# ================================================================================================
# Secret and Resolvers
# ================================================================================================
def test_secret_hides_its_value() -> None:
    s = Secret("hunter2")
    assert repr(s) == "Secret('***')"
    assert str(s) == "***" and f"{s}" == "***" and f"{s:>20}" == "***"
    assert "hunter2" not in repr([s]) and "hunter2" not in repr({"k": s})
    assert s.reveal() == "hunter2"
    assert s == Secret("hunter2") and s != Secret("other")
    assert s != "hunter2"
    with pytest.raises(TypeError):
        hash(s)
    with pytest.raises(TypeError):
        pickle.dumps(s)


class _Fixed:
    def __init__(self, prefix: str, value: str, description: str = "fixed") -> None:
        self.prefix, self.value, self.description = prefix, value, description

    def handles(self, identifier: str) -> bool:
        return identifier.startswith(self.prefix)

    def check(self, identifier: str) -> None:
        pass

    async def resolve(self, identifier: str, principal_id: str) -> Secret:
        return Secret(self.value)


async def test_resolvers_first_handler_wins() -> None:
    chain = Resolvers([_Fixed("x:", "first"), _Fixed("x:", "second"), _Fixed("y:", "third")])
    assert (await chain.resolve("x:a", PRINCIPAL)).reveal() == "first"
    assert (await chain.resolve("y:a", PRINCIPAL)).reveal() == "third"
    assert isinstance(_Fixed("x:", "v"), SecretResolver)


@pytest.mark.parametrize(
    "identifier", ["", "   ", "z:abc", "no scheme", "a\x00b", "x:" + "a" * 3000]
)
async def test_resolvers_refuse_what_nobody_handles(identifier: str) -> None:
    chain = Resolvers([_Fixed("x:", "v")], hint="Enable more.")
    with pytest.raises(e.InvalidSecretIdentifier) as info:
        chain.check_identifier(identifier)
    with pytest.raises(e.InvalidSecretIdentifier):
        await chain.resolve(identifier, PRINCIPAL)
    if identifier == "z:abc":
        assert "no resolver for scheme 'z'" in info.value.message.lower()
        assert "Enable more." in info.value.message


async def test_build_resolvers_default_is_vault_only(tmp_path: Path) -> None:
    store = await _open_store(f"sqlite:///{tmp_path / 'm.db'}", tmp_path)
    try:
        vault = BuiltinVault(SqlVaultStore(store))
        chain = build_resolvers(SecretsConfig(), vault, {"REGISTRY_X": "v"})
        assert list(chain) == [vault]
        chain.check_identifier("https://myvault.vault.azure.net/secrets/registry-username")
        for identifier, hint in [("env:REGISTRY_X", "env_enabled"), ("file:///x", "file_enabled")]:
            with pytest.raises(e.InvalidSecretIdentifier) as info:
                chain.check_identifier(identifier)
            assert hint in info.value.message
        chain = build_resolvers(
            SecretsConfig(
                env_enabled=True,
                env_allow=("REGISTRY_*",),
                file_enabled=True,
                file_roots=(str(tmp_path),),
            ),
            vault,
            {"REGISTRY_X": "from-env"},
        )
        assert [type(r) for r in chain] == [BuiltinVault, EnvResolver, FileResolver]
        assert (await chain.resolve("env:REGISTRY_X", PRINCIPAL)).reveal() == "from-env"
        with pytest.raises(ConfigError, match="env_allow"):
            build_resolvers(SecretsConfig(env_enabled=True), vault)
        with pytest.raises(ConfigError, match="file_roots"):
            build_resolvers(SecretsConfig(file_enabled=True), vault)
        with pytest.raises(ConfigError, match="absolute"):
            build_resolvers(SecretsConfig(file_enabled=True, file_roots=("rel/dir",)), vault)
    finally:
        await store.close()


# ================================================================================================
# Built-in vault
# ================================================================================================
@pytest.fixture
async def store(database_url: str, tmp_path: Path) -> AsyncIterator[MetadataStore]:
    s = await _open_store(database_url, tmp_path)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def vault(store: MetadataStore, tmp_path: Path) -> BuiltinVault:
    v = BuiltinVault(SqlVaultStore(store))
    await v.unlock(tmp_path / "data", {MASTER_KEY_ENV: KEY1})
    await v.create_vault("myvault")
    await v.grant("myvault", PRINCIPAL)
    return v


def _kv(name: str, version: str | None = None, vault: str = "myvault") -> str:
    base = f"https://{vault}.vault.azure.net/secrets/{name}"
    return f"{base}/{version}" if version else base


async def test_seed_identifiers_resolve_as_written(vault: BuiltinVault) -> None:
    await vault.set_secret("myvault", "registry-username", "alice")
    await vault.set_secret("myvault", "registry-password", VALUE)
    assert (await vault.resolve(_kv("registry-username"), PRINCIPAL)).reveal() == "alice"
    assert (await vault.resolve(_kv("registry-password"), PRINCIPAL)).reveal() == VALUE
    # Names are case-insensitive; other Azure clouds' hosts name the same vault.
    assert (await vault.resolve(_kv("Registry-Username", vault="MyVault"), PRINCIPAL)).reveal()
    cn = "https://myvault.vault.azure.cn/secrets/registry-username"
    assert (await vault.resolve(cn, PRINCIPAL)).reveal() == "alice"
    assert (await vault.resolve(_kv("registry-username") + "/", PRINCIPAL)).reveal() == "alice"


async def test_versions_latest_explicit_and_rotation(vault: BuiltinVault) -> None:
    v1 = await vault.set_secret("myvault", "pw", "first-value")
    v2 = await vault.set_secret("myvault", "pw", "second-value", content_type="text/plain")
    assert v1.version != v2.version and len(v2.version) == 32
    int(v2.version, 16)
    assert v2.id == _kv("pw", v2.version) and v2.versionless_id == _kv("pw")
    assert (await vault.resolve(_kv("pw"), PRINCIPAL)).reveal() == "second-value"
    assert (await vault.resolve(_kv("pw", v1.version), PRINCIPAL)).reveal() == "first-value"
    assert (await vault.resolve(_kv("pw", v2.version.upper()), PRINCIPAL)).reveal() == (
        "second-value"
    )
    shown = await vault.show_secret("myvault", "pw")
    assert shown.version == v2.version and shown.content_type == "text/plain" and shown.enabled
    assert (await vault.show_secret("myvault", "PW", v1.version)).version == v1.version
    versions = await vault.list_secret_versions("myvault", "pw")
    assert [v.version for v in versions] == [v2.version, v1.version]
    # rotation: a third version becomes the latest; the pinned one still resolves
    await vault.set_secret("myvault", "pw", "third-value")
    assert (await vault.resolve(_kv("pw"), PRINCIPAL)).reveal() == "third-value"
    assert (await vault.resolve(_kv("pw", v1.version), PRINCIPAL)).reveal() == "first-value"
    missing_version = "0" * 32
    with pytest.raises(e.SecretNotFound):
        await vault.resolve(_kv("pw", missing_version), PRINCIPAL)
    with pytest.raises(e.ResourceNotFound):
        await vault.show_secret("myvault", "pw", missing_version)


async def test_list_and_show_are_metadata_only(vault: BuiltinVault) -> None:
    await vault.set_secret("myvault", "b-secret", VALUE)
    await vault.set_secret("myvault", "a-secret", "x1")
    await vault.set_secret("myvault", "a-secret", "x2")
    listed = await vault.list_secrets("myvault")
    assert [s.name for s in listed] == ["a-secret", "b-secret"]
    for info in [*listed, await vault.show_secret("myvault", "b-secret")]:
        d = info.to_dict()
        assert set(d) == {
            "id",
            "versionlessId",
            "vault",
            "name",
            "version",
            "contentType",
            "enabled",
            "created",
        }
        assert VALUE not in repr(d) and "x2" not in repr(d.values())
    assert listed[0].version == (await vault.show_secret("myvault", "a-secret")).version
    vaults = await vault.list_vaults()
    assert [v.name for v in vaults] == ["myvault"]
    assert vaults[0].to_dict()["vaultUri"] == "https://myvault.vault.azure.net/"


async def test_grants_control_reading(vault: BuiltinVault) -> None:
    await vault.create_vault("team-vault")
    await vault.set_secret("team-vault", "token", VALUE)
    ident = _kv("token", vault="team-vault")
    with pytest.raises(e.SecretAccessDenied) as info:
        await vault.resolve(ident, PRINCIPAL)
    assert "entrepot vault grant team-vault" in info.value.message
    # the grant is checked before existence: nothing is revealed about absent secrets
    with pytest.raises(e.SecretAccessDenied):
        await vault.resolve(_kv("absent", vault="team-vault"), PRINCIPAL)
    grant, created = await vault.grant("team-vault", PRINCIPAL.upper(), "GET")
    assert created and grant.principal_id == PRINCIPAL and grant.permission == "get"
    assert (await vault.grant("team-vault", PRINCIPAL))[1] is False  # idempotent
    assert (await vault.resolve(ident, PRINCIPAL)).reveal() == VALUE
    with pytest.raises(e.SecretAccessDenied):
        await vault.resolve(ident, OTHER_PRINCIPAL)
    with pytest.raises(e.SecretAccessDenied):
        await vault.resolve(ident, "")
    assert [g.principal_id for g in await vault.list_grants("team-vault")] == [PRINCIPAL]
    await vault.revoke("team-vault", PRINCIPAL, "get")
    with pytest.raises(e.SecretAccessDenied):
        await vault.resolve(ident, PRINCIPAL)
    with pytest.raises(e.ResourceNotFound):
        await vault.revoke("team-vault", PRINCIPAL, "get")
    with pytest.raises(e.InvalidPropertyValue):
        await vault.grant("team-vault", PRINCIPAL, "set")
    with pytest.raises(e.InvalidPropertyValue):
        await vault.grant("team-vault", "bad principal!", "get")
    with pytest.raises(e.ResourceNotFound):
        await vault.grant("no-such-vault", PRINCIPAL)


async def test_delete_secret_and_vault(vault: BuiltinVault, store: MetadataStore) -> None:
    await vault.set_secret("myvault", "gone", "v1")
    await vault.set_secret("myvault", "gone", "v2")
    await vault.set_secret("myvault", "kept", "v3")
    assert await vault.delete_secret("myvault", "GONE") == 2
    with pytest.raises(e.SecretNotFound):
        await vault.resolve(_kv("gone"), PRINCIPAL)
    with pytest.raises(e.ResourceNotFound):
        await vault.delete_secret("myvault", "gone")
    assert (await vault.resolve(_kv("kept"), PRINCIPAL)).reveal() == "v3"

    await vault.delete_vault("myvault")
    with pytest.raises(e.SecretNotFound):
        await vault.resolve(_kv("kept"), PRINCIPAL)
    with pytest.raises(e.ResourceNotFound):
        await vault.delete_vault("myvault")
    async with store.read() as conn:
        for table in (t.vault_secrets, t.vault_grants):
            count = (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar()
            assert count == 0
    # re-created under the same name it is empty and has no grants
    _, created = await vault.create_vault("myvault")
    assert created
    assert await vault.list_secrets("myvault") == []
    assert await vault.list_grants("myvault") == []


async def test_create_vault_is_idempotent(vault: BuiltinVault) -> None:
    info, created = await vault.create_vault("MYVAULT")
    assert not created and info.name == "myvault"
    with pytest.raises(e.ResourceNotFound):
        await vault.get_vault("other-vault")
    with pytest.raises(e.ResourceNotFound):
        await vault.set_secret("other-vault", "x", "y")


@pytest.mark.parametrize(
    "name",
    ["ab", "a" * 25, "1abc", "abc-", "a--b", "a_b", "my.vault", "", "-abc", "ab c", "é-vault"],
)
async def test_invalid_vault_names(vault: BuiltinVault, name: str) -> None:
    with pytest.raises(e.InvalidResourceName) as info:
        await vault.create_vault(name)
    assert info.value.status == 400 and info.value.target == "vaultName"


@pytest.mark.parametrize("name", ["abc", "a" * 24, "A-1-b", "Vault9"])
async def test_valid_vault_names(vault: BuiltinVault, name: str) -> None:
    assert (await vault.create_vault(name))[1]


@pytest.mark.parametrize("name", ["", "a" * 128, "a_b", "a.b", "a b", "a/b", "ä"])
async def test_invalid_secret_names(vault: BuiltinVault, name: str) -> None:
    with pytest.raises(e.InvalidResourceName):
        await vault.set_secret("myvault", name, "v")


async def test_secret_values_are_validated_without_echo(vault: BuiltinVault) -> None:
    await vault.set_secret("myvault", "max", "a" * 256)
    with pytest.raises(e.InvalidPropertyValue):
        await vault.set_secret("myvault", "empty", "")
    long_value = "secret-prefix-" + "z" * 30_000
    with pytest.raises(e.InvalidPropertyValue) as info:
        await vault.set_secret("myvault", "long", long_value)
    _no_value(info.value, long_value[:40])
    await vault.set_secret("myvault", "wrapped", Secret("from-wrapper"))
    assert (await vault.resolve(_kv("wrapped"), PRINCIPAL)).reveal() == "from-wrapper"


def test_parse_secret_identifier() -> None:
    ref = parse_secret_identifier("https://MyVault.vault.azure.net/secrets/Name-1")
    assert (ref.vault, ref.name, ref.version) == ("myvault", "Name-1", None)
    v = "ABCDEF0123456789abcdef0123456789"
    ref = parse_secret_identifier(f"https://v12.vault.usgovcloudapi.net:443/secrets/n/{v}")
    assert ref.version == v.lower()
    assert ref.id == f"https://v12.vault.azure.net/secrets/n/{v.lower()}"


# -- encryption at rest --------------------------------------------------------------------------
async def test_no_plaintext_under_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = await _open_store(f"sqlite:///{data_dir / 'entrepot.db'}", tmp_path)
    marker = "PLAINTEXT-MARKER-7f3a9c-" + VALUE
    try:
        vault = BuiltinVault(SqlVaultStore(store))
        await vault.unlock(data_dir, {})
        await vault.create_vault("myvault")
        await vault.grant("myvault", PRINCIPAL)
        for _ in range(3):
            await vault.set_secret("myvault", "pw", marker)
        assert (await vault.resolve(_kv("pw"), PRINCIPAL)).reveal() == marker
    finally:
        await store.close()
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"entrepot.db", MASTER_KEY_FILE}
    needles = [marker.encode("utf-8"), marker.encode("utf-16-le"), b"PLAINTEXT-MARKER-7f3a9c"]
    for path in files:
        blob = path.read_bytes()
        for needle in needles:
            assert needle not in blob, f"plaintext found in {path}"


async def test_ciphertext_column_holds_no_plaintext(
    vault: BuiltinVault, store: MetadataStore
) -> None:
    await vault.set_secret("myvault", "pw", VALUE)
    async with store.read() as conn:
        rows = (await conn.execute(sa.select(t.vault_secrets))).mappings().all()
    assert rows
    for row in rows:
        assert VALUE.encode() not in bytes(row["ciphertext"])
        assert len(bytes(row["nonce"])) == 12
        assert all(VALUE not in str(v) for v in row.values() if not isinstance(v, bytes))


async def test_tampered_ciphertext_is_unavailable_not_garbage(
    vault: BuiltinVault, store: MetadataStore
) -> None:
    info = await vault.set_secret("myvault", "pw", VALUE)
    async with store.read() as conn:
        row = (
            (await conn.execute(sa.select(t.vault_secrets).where(t.vault_secrets.c.name == "pw")))
            .mappings()
            .one()
        )
    data = bytearray(row["ciphertext"])
    data[0] ^= 0x01
    async with store.write() as conn:
        await conn.execute(
            sa.update(t.vault_secrets)
            .where(t.vault_secrets.c.id == row["id"])
            .values(ciphertext=bytes(data))
        )
    with pytest.raises(e.SecretStoreUnavailable) as exc_info:
        await vault.resolve(info.id, PRINCIPAL)
    assert exc_info.value.status == 503
    _no_value(exc_info.value, VALUE)


async def test_ciphertext_cannot_move_between_rows(
    vault: BuiltinVault, store: MetadataStore
) -> None:
    await vault.set_secret("myvault", "admin-password", "the-admin-one")
    await vault.set_secret("myvault", "readonly-password", "the-readonly-one")
    c = t.vault_secrets.c
    async with store.write() as conn:
        src = (
            (await conn.execute(sa.select(t.vault_secrets).where(c.name == "admin-password")))
            .mappings()
            .one()
        )
        await conn.execute(
            sa.update(t.vault_secrets)
            .where(c.name == "readonly-password")
            .values(nonce=src["nonce"], ciphertext=src["ciphertext"])
        )
    with pytest.raises(e.SecretStoreUnavailable):
        await vault.resolve(_kv("readonly-password"), PRINCIPAL)


# -- master key ------------------------------------------------------------------------------------
async def test_key_file_created_0600_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    url = f"sqlite:///{data_dir / 'entrepot.db'}"
    store = await _open_store(url, tmp_path)
    try:
        vault = BuiltinVault(SqlVaultStore(store))
        assert not await vault.holds_data()
        await vault.unlock(data_dir, {})
        assert await vault.holds_data()
        await vault.create_vault("myvault")
        await vault.grant("myvault", PRINCIPAL)
        await vault.set_secret("myvault", "pw", VALUE)
    finally:
        await store.close()
    key_path = data_dir / MASTER_KEY_FILE
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert len(base64.b64decode(key_path.read_text().strip())) == 32
    assert not [p for p in data_dir.iterdir() if p.name.endswith(".tmp")]
    content = key_path.read_bytes()
    # "restart": a new store and vault over the same data dir read the same key
    store = await _open_store(url, tmp_path)
    try:
        vault = BuiltinVault(SqlVaultStore(store))
        await vault.unlock(data_dir, {})
        assert (await vault.resolve(_kv("pw"), PRINCIPAL)).reveal() == VALUE
    finally:
        await store.close()
    assert key_path.read_bytes() == content


def test_load_master_key_sources(tmp_path: Path) -> None:
    key = load_master_key(tmp_path / "a", {MASTER_KEY_ENV: KEY1})
    assert key == bytes(range(32))
    assert not (tmp_path / "a" / MASTER_KEY_FILE).exists()  # the variable wins; no file written
    urlsafe = base64.urlsafe_b64encode(bytes([251] * 32)).decode()
    assert load_master_key(tmp_path / "a", {MASTER_KEY_ENV: urlsafe}) == bytes([251] * 32)
    generated = load_master_key(tmp_path / "b", {})
    assert load_master_key(tmp_path / "b", {}) == generated
    assert load_master_key(tmp_path / "b", {}, create=False) == generated
    with pytest.raises(ConfigError, match="missing"):
        load_master_key(tmp_path / "c", {}, create=False)
    assert not (tmp_path / "c" / MASTER_KEY_FILE).exists()


@pytest.mark.parametrize(
    "value",
    [
        "not base64 at all!",
        base64.b64encode(b"short").decode(),
        base64.b64encode(bytes(33)).decode(),
        "QUJD",  # 3 bytes
        KEY1[:-4],
    ],
)
def test_invalid_master_key_variable(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_master_key(tmp_path, {MASTER_KEY_ENV: value})
    assert MASTER_KEY_ENV in str(info.value)
    assert value not in str(info.value)


def test_invalid_master_key_file(tmp_path: Path) -> None:
    (tmp_path / MASTER_KEY_FILE).write_text("garbage\n")
    with pytest.raises(ConfigError, match=MASTER_KEY_FILE):
        load_master_key(tmp_path, {})
    assert (tmp_path / MASTER_KEY_FILE).read_text() == "garbage\n"  # never overwritten


async def test_wrong_master_key_is_a_startup_error(database_url: str, tmp_path: Path) -> None:
    store = await _open_store(database_url, tmp_path)
    try:
        first = BuiltinVault(SqlVaultStore(store))
        await first.unlock(tmp_path / "data", {MASTER_KEY_ENV: KEY1})
        await first.create_vault("myvault")
        await first.set_secret("myvault", "pw", VALUE)
        second = BuiltinVault(SqlVaultStore(store))
        with pytest.raises(ConfigError, match="does not match"):
            await second.unlock(tmp_path / "data", {MASTER_KEY_ENV: KEY2})
        with pytest.raises(RuntimeError):
            await second.set_secret("myvault", "pw", "new")  # never writes with a wrong key
        with pytest.raises(ConfigError, match="does not match"):
            await BuiltinVault(SqlVaultStore(store)).open(base64.b64decode(KEY2))
        # the right key still works
        again = BuiltinVault(SqlVaultStore(store))
        await again.unlock(tmp_path / "data", {MASTER_KEY_ENV: KEY1})
        await again.grant("myvault", PRINCIPAL)
        assert (await again.resolve(_kv("pw"), PRINCIPAL)).reveal() == VALUE
    finally:
        await store.close()


async def test_missing_key_file_with_existing_data_is_a_startup_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = await _open_store(f"sqlite:///{data_dir / 'entrepot.db'}", tmp_path)
    try:
        vault = BuiltinVault(SqlVaultStore(store))
        await vault.unlock(data_dir, {})
        await vault.create_vault("myvault")
        await vault.set_secret("myvault", "pw", VALUE)
        key_path = data_dir / MASTER_KEY_FILE
        saved = key_path.read_bytes()
        key_path.unlink()
        with pytest.raises(ConfigError, match="missing"):
            await BuiltinVault(SqlVaultStore(store)).unlock(data_dir, {})
        assert not key_path.exists()  # no new key generated over the existing ciphertext
        # a different key file is refused too, and left alone
        key_path.write_text(KEY2 + "\n")
        with pytest.raises(ConfigError, match="does not match"):
            await BuiltinVault(SqlVaultStore(store)).unlock(data_dir, {})
        assert key_path.read_text() == KEY2 + "\n"
        key_path.write_bytes(saved)
        await BuiltinVault(SqlVaultStore(store)).unlock(data_dir, {})
    finally:
        await store.close()


async def test_generated_key_removed_when_refused(tmp_path: Path) -> None:
    """Data exists only as a key-check value: a freshly generated key is refused and removed."""
    data_dir = tmp_path / "data"
    store = await _open_store(f"sqlite:///{data_dir / 'entrepot.db'}", tmp_path)
    try:
        await SqlVaultStore(store).set_key_check(make_key_check(bytes(32)))
        with pytest.raises(ConfigError):
            await BuiltinVault(SqlVaultStore(store)).unlock(data_dir, {})
        assert not (data_dir / MASTER_KEY_FILE).exists()
    finally:
        await store.close()


def test_key_check_roundtrip() -> None:
    check = make_key_check(bytes(32))
    assert verify_key_check(bytes(32), check)
    assert not verify_key_check(bytes([1] * 32), check)
    with pytest.raises(ConfigError):
        verify_key_check(bytes(32), "v9:whatever")


async def test_operations_need_an_unlocked_vault(tmp_path: Path) -> None:
    store = await _open_store(f"sqlite:///{tmp_path / 'm.db'}", tmp_path)
    try:
        vault = BuiltinVault(SqlVaultStore(store))
        await vault.create_vault("myvault")  # metadata only: fine
        with pytest.raises(RuntimeError):
            await vault.set_secret("myvault", "pw", "v")
        with pytest.raises(RuntimeError):
            await vault.resolve(_kv("pw"), PRINCIPAL)
    finally:
        await store.close()


async def test_only_existing_vaults_mode(tmp_path: Path) -> None:
    store = await _open_store(f"sqlite:///{tmp_path / 'm.db'}", tmp_path)
    try:
        vault = BuiltinVault(SqlVaultStore(store), only_existing_vaults=True)
        await vault.unlock(tmp_path, {MASTER_KEY_ENV: KEY1})
        assert not vault.handles(_kv("x"))
        await vault.create_vault("MyVault")
        assert vault.handles(_kv("x"))
        await vault.delete_vault("myvault")
        assert not vault.handles(_kv("x"))
        # default: every Key Vault identifier
        assert BuiltinVault(SqlVaultStore(store)).handles(_kv("x"))
    finally:
        await store.close()


# -- env and file specifics ----------------------------------------------------------------------
async def test_env_allow_patterns_and_never_allowed() -> None:
    environ = {"REGISTRY_USER": "u", "ENTREPOT_MASTER_KEY": KEY1, "registry_lower": "x"}
    resolver = EnvResolver(["*"], environ)
    assert (await resolver.resolve("env:REGISTRY_USER", PRINCIPAL)).reveal() == "u"
    with pytest.raises(e.SecretAccessDenied) as info:
        await resolver.resolve(f"env:{MASTER_KEY_ENV}", PRINCIPAL)
    _no_value(info.value, KEY1)
    narrow = EnvResolver(["REGISTRY_*"], environ)
    with pytest.raises(e.SecretAccessDenied):
        await narrow.resolve("env:registry_lower", PRINCIPAL)  # globs are case-sensitive
    environ["REGISTRY_USER"] = "changed"
    assert (await narrow.resolve("env:REGISTRY_USER", PRINCIPAL)).reveal() == "changed"


@pytest.mark.parametrize("allow", [["*"], ["ENTREPOT_*"], ["ENTREPOT_DATABASE_URL"], ["*_URL"]])
async def test_no_entrepot_variable_ever_resolves(allow: list[str]) -> None:
    """``ENTREPOT_*`` variables are the server's own (the database URL and its password, the
    master key, the admin token): no pattern of ``env_allow`` makes one readable."""
    database_url = "postgresql://entrepot:db-password-in-env@db/entrepot"
    environ = {
        "ENTREPOT_DATABASE_URL": database_url,
        "ENTREPOT_MASTER_KEY": KEY1,
        "ENTREPOT_TOKEN": "admin-token-in-env",
        "ENTREPOT_CONFIG": "/etc/entrepot.toml",
        "Entrepot_Mixed_Case": "mixed-case-value",
        "REGISTRY_URL": "allowed-value",
    }
    resolver = EnvResolver(allow, environ)
    for name, value in environ.items():
        if name == "REGISTRY_URL":
            continue
        assert not resolver.allowed(name)
        with pytest.raises(e.SecretAccessDenied) as info:
            await resolver.resolve(f"env:{name}", PRINCIPAL)
        _no_value(info.value, value)
    if allow != ["ENTREPOT_*"] and allow != ["ENTREPOT_DATABASE_URL"]:
        assert (await resolver.resolve("env:REGISTRY_URL", PRINCIPAL)).reveal() == "allowed-value"


async def test_file_symlinks_are_resolved_before_the_root_check(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside.txt"
    outside.write_text(VALUE)
    (root / "inside.txt").write_text("inside-value\r\n")
    os.symlink(outside, root / "escape")
    os.symlink(root / "inside.txt", root / "sub" / "alias")
    resolver = FileResolver([str(root)])
    with pytest.raises(e.SecretAccessDenied) as info:
        await resolver.resolve((root / "escape").as_uri(), PRINCIPAL)
    _no_value(info.value, VALUE)
    with pytest.raises(e.SecretAccessDenied):
        await resolver.resolve(f"file://{root}/../outside.txt", PRINCIPAL)
    assert (await resolver.resolve((root / "sub" / "alias").as_uri(), PRINCIPAL)).reveal() == (
        "inside-value"
    )
    assert (await resolver.resolve(f"file://localhost{root}/inside.txt", PRINCIPAL)).reveal()
    with pytest.raises(e.SecretNotFound):
        await resolver.resolve(f"file://{root}/sub", PRINCIPAL)  # a directory
    (root / "two-newlines").write_text("v\n\n")
    assert (await resolver.resolve((root / "two-newlines").as_uri(), PRINCIPAL)).reveal() == "v\n"
    (root / "binary").write_bytes(b"\xff\xfe\x00secret")
    with pytest.raises(e.SecretStoreUnavailable):
        await resolver.resolve((root / "binary").as_uri(), PRINCIPAL)
    (root / "with space").write_text("spaced")
    assert (await resolver.resolve((root / "with space").as_uri(), PRINCIPAL)).reveal() == (
        "spaced"
    )


async def test_the_servers_own_files_are_never_secrets(tmp_path: Path) -> None:
    """Even with a root that covers them: /proc/self/environ holds the server's ENTREPOT_*
    variables, and the data dir its database, master key and admin token."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "admin-token").write_text(VALUE)
    (tmp_path / "ok.txt").write_text("ok-value")
    os.symlink(data_dir / "admin-token", tmp_path / "innocent-link")
    resolver = FileResolver(["/", str(tmp_path)], private=[data_dir])
    for identifier in (
        "file:///proc/self/environ",
        "file:///proc/1/environ",
        "file:///sys/kernel/hostname",
        (data_dir / "admin-token").as_uri(),
        (tmp_path / "innocent-link").as_uri(),  # judged by where it leads
    ):
        with pytest.raises(e.SecretAccessDenied) as info:
            await resolver.resolve(identifier, PRINCIPAL)
        _no_value(info.value, VALUE)
        assert "never readable" in info.value.message
    assert (await resolver.resolve((tmp_path / "ok.txt").as_uri(), PRINCIPAL)).reveal() == (
        "ok-value"
    )
