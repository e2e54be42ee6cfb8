"""The built-in vault: named vaults of versioned secrets, encrypted at rest, with access grants.

It answers Key Vault-shaped identifiers, so identifiers written for Azure work unchanged::

    https://<vault>.vault.azure.net/secrets/<name>            the newest version
    https://<vault>.vault.azure.net/secrets/<name>/<version>  one version (32 hex digits)

(the other Azure clouds' hosts, ``.vault.azure.cn``, ``.vault.usgovcloudapi.net`` and
``.vault.microsoftazure.de``, are accepted too).

Storage (tables ``vaults``, ``vault_secrets``, ``vault_grants``): every version is a row holding
a random 96-bit nonce and the AES-GCM ciphertext of the value under the master key
(:mod:`.keys`). The associated data binds the ciphertext to its vault, secret name and version,
so a ciphertext copied into another row does not decrypt. Values are never stored, logged or
returned in plaintext; only :meth:`BuiltinVault.resolve` decrypts.

Access: like a Key Vault access policy, reading a secret needs a ``get`` grant on its vault for
the reading principal. The grant is checked before the secret is looked up, so a principal
without access learns nothing about which secrets exist (Key Vault answers 403 first too).

Names follow Key Vault's rules and are case-insensitive: a vault name has 3-24 letters, digits
and hyphens, starts with a letter, ends with a letter or digit and has no ``--``; a secret name
has 1-127 letters, digits and hyphens.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from entrepot import errors as e
from entrepot.errors import ConfigError
from entrepot.metadata import schema as t
from entrepot.metadata.store import MetadataStore, as_utc, utcnow
from entrepot.models import format_datetime
from entrepot.secrets.base import Secret
from entrepot.secrets.keys import (
    KEY_BYTES,
    KEY_CHECK_SETTING,
    MASTER_KEY_ENV,
    key_file,
    load_master_key,
    make_key_check,
    remove_key_file,
    verify_key_check,
)

__all__ = [
    "KEY_VAULT_HOST_SUFFIXES",
    "PERMISSIONS",
    "BuiltinVault",
    "GrantInfo",
    "SecretInfo",
    "SecretRef",
    "VaultInfo",
    "parse_secret_identifier",
    "secret_identifier",
]

log = logging.getLogger("entrepot.secrets")

KEY_VAULT_HOST_SUFFIXES = (
    ".vault.azure.net",
    ".vault.azure.cn",
    ".vault.usgovcloudapi.net",
    ".vault.microsoftazure.de",
)
DEFAULT_HOST_SUFFIX = KEY_VAULT_HOST_SUFFIXES[0]
PERMISSIONS = ("get",)
MAX_VALUE_BYTES = 25 * 1024  # Key Vault's limit for a secret value
MAX_CONTENT_TYPE = 255
VAULT_NAME_RE = re.compile(r"^(?!.*--)[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$")
SECRET_NAME_RE = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
VERSION_RE = re.compile(r"^[0-9a-fA-F]{32}$")
PRINCIPAL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,99}$")
_NONCE_BYTES = 12


# -- identifiers ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SecretRef:
    """A parsed Key Vault secret identifier; ``version`` ``None`` means the newest."""

    vault: str
    name: str
    version: str | None = None

    @property
    def id(self) -> str:
        return secret_identifier(self.vault, self.name, self.version)


def secret_identifier(vault: str, name: str, version: str | None = None) -> str:
    """``https://<vault>.vault.azure.net/secrets/<name>[/<version>]``."""
    base = f"https://{vault.lower()}{DEFAULT_HOST_SUFFIX}/secrets/{name}"
    return f"{base}/{version}" if version else base


def _key_vault_host(identifier: str) -> str | None:
    """The vault label of a ``https://<label>.<key vault suffix>`` URL, else ``None``."""
    try:
        parts = urlsplit(identifier)
        host = (parts.hostname or "").lower()
    except ValueError:
        return None
    if parts.scheme.lower() != "https":
        return None
    for suffix in KEY_VAULT_HOST_SUFFIXES:
        if host.endswith(suffix) and len(host) > len(suffix):
            return host[: -len(suffix)]
    return None


def parse_secret_identifier(identifier: str) -> SecretRef:
    """Parse a Key Vault secret identifier.

    :raises InvalidSecretIdentifier: when it is not
        ``https://<vault>.vault.azure.net/secrets/<name>[/<version>]`` with valid names.
    """

    def invalid(why: str) -> e.InvalidSecretIdentifier:
        return e.InvalidSecretIdentifier(
            f"The secret identifier {identifier!r} is invalid: {why}. Expected "
            "https://<vault>.vault.azure.net/secrets/<name>[/<version>]."
        )

    label = _key_vault_host(identifier)
    if label is None:
        raise invalid("it is not an https URL of a Key Vault host")
    parts = urlsplit(identifier)
    if parts.username is not None or parts.password is not None:
        raise invalid("it must not contain user information")
    try:
        port = parts.port
    except ValueError:
        raise invalid("the port is not a number") from None
    if port not in (None, 443):
        raise invalid("it must not name a port")
    if parts.query or parts.fragment or identifier.endswith(("?", "#")):
        raise invalid("it must not have a query string or fragment")
    if "." in label or not VAULT_NAME_RE.match(label):
        raise invalid(f"{label!r} is not a valid vault name")
    path = parts.path[:-1] if parts.path.endswith("/") else parts.path
    segments = path.split("/")[1:]
    if len(segments) not in (2, 3) or segments[0].lower() != "secrets":
        raise invalid("the path must be /secrets/<name> or /secrets/<name>/<version>")
    name = segments[1]
    if not SECRET_NAME_RE.match(name):
        raise invalid(f"{name!r} is not a valid secret name (1-127 letters, digits, hyphens)")
    version = None
    if len(segments) == 3:
        version = segments[2]
        if not VERSION_RE.match(version):
            raise invalid(f"{version!r} is not a secret version (32 hexadecimal digits)")
        version = version.lower()
    return SecretRef(label, name, version)


# -- names and values ----------------------------------------------------------------------------
def check_vault_name(name: str) -> str:
    """``name`` if it is a valid vault name, else :class:`~entrepot.errors.InvalidResourceName`."""
    if not isinstance(name, str) or not VAULT_NAME_RE.match(name):
        raise e.InvalidResourceName(
            f"The vault name {name!r} is invalid. It must be 3-24 letters, digits and hyphens, "
            "start with a letter, end with a letter or digit, and not contain '--'.",
            target="vaultName",
        )
    return name


def check_secret_name(name: str) -> str:
    """``name`` if it is a valid secret name, else :class:`~entrepot.errors.InvalidResourceName`."""
    if not isinstance(name, str) or not SECRET_NAME_RE.match(name):
        raise e.InvalidResourceName(
            f"The secret name {name!r} is invalid. It must be 1-127 letters, digits and hyphens.",
            target="secretName",
        )
    return name


def check_version(version: str) -> str:
    """``version`` in lower case if it is 32 hexadecimal digits, else InvalidResourceName."""
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise e.InvalidResourceName(
            f"The secret version {version!r} is invalid. It must be 32 hexadecimal digits.",
            target="secretVersion",
        )
    return version.lower()


def check_principal(principal_id: str) -> str:
    """``principal_id`` normalised (stripped, lower case), or InvalidPropertyValue."""
    value = principal_id.strip().lower() if isinstance(principal_id, str) else ""
    if not PRINCIPAL_RE.match(value):
        raise e.InvalidPropertyValue(
            f"The principal id {principal_id!r} is invalid. It must be 1-100 letters, digits "
            "and '-._@:' (usually the principalId GUID of a credential set's identity).",
            target="principalId",
        )
    return value


def check_permission(permission: str) -> str:
    """``permission`` in lower case if it is one the vault knows, else InvalidPropertyValue."""
    value = permission.strip().lower() if isinstance(permission, str) else ""
    if value not in PERMISSIONS:
        raise e.InvalidPropertyValue(
            f"The permission {permission!r} is not supported; supported: {', '.join(PERMISSIONS)}.",
            target="permission",
        )
    return value


def _check_value(value: str | Secret) -> bytes:
    """The UTF-8 bytes of a secret value; errors never quote it."""
    text = value.reveal() if isinstance(value, Secret) else value
    if not isinstance(text, str):
        raise e.InvalidPropertyValue("The secret value must be a string.", target="value")
    if not text:
        raise e.InvalidPropertyValue("The secret value must not be empty.", target="value")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise e.InvalidPropertyValue(
            "The secret value is not valid Unicode text.", target="value"
        ) from None
    if len(data) > MAX_VALUE_BYTES:
        raise e.InvalidPropertyValue(
            f"The secret value is {len(data)} bytes long; the limit is {MAX_VALUE_BYTES}.",
            target="value",
        )
    return data


def _check_content_type(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    if (
        not isinstance(content_type, str)
        or len(content_type) > MAX_CONTENT_TYPE
        or not content_type.isprintable()
    ):
        raise e.InvalidPropertyValue(
            f"The content type must be a printable string of at most {MAX_CONTENT_TYPE} "
            "characters.",
            target="contentType",
        )
    return content_type or None


def _aad(vault_key: str, name_key: str, version: str) -> bytes:
    """Associated data binding a ciphertext to its row's vault, name and version."""
    return f"entrepot:vault-secret:v1\x00{vault_key}\x00{name_key}\x00{version}".encode()


# -- views ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VaultInfo:
    """A vault, without its secrets."""

    name: str
    created_at: Any

    @property
    def uri(self) -> str:
        return f"https://{self.name.lower()}{DEFAULT_HOST_SUFFIX}/"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "vaultUri": self.uri,
            "created": format_datetime(self.created_at),
        }


@dataclass(frozen=True)
class SecretInfo:
    """Metadata of one secret version; there is deliberately no field for the value."""

    vault: str
    name: str
    version: str
    created_at: Any
    enabled: bool
    content_type: str | None

    @property
    def id(self) -> str:
        return secret_identifier(self.vault, self.name, self.version)

    @property
    def versionless_id(self) -> str:
        return secret_identifier(self.vault, self.name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "versionlessId": self.versionless_id,
            "vault": self.vault,
            "name": self.name,
            "version": self.version,
            "contentType": self.content_type,
            "enabled": self.enabled,
            "created": format_datetime(self.created_at),
        }


@dataclass(frozen=True)
class GrantInfo:
    """``principal_id`` may ``permission`` the secrets of ``vault``."""

    vault: str
    principal_id: str
    permission: str
    created_at: Any

    def to_dict(self) -> dict[str, Any]:
        return {
            "vault": self.vault,
            "principalId": self.principal_id,
            "permission": self.permission,
            "created": format_datetime(self.created_at),
        }


def _vault_info(row: RowMapping) -> VaultInfo:
    return VaultInfo(name=row["name"], created_at=as_utc(row["created_at"]))


def _secret_info(vault: RowMapping, row: RowMapping) -> SecretInfo:
    return SecretInfo(
        vault=vault["name"],
        name=row["name"],
        version=row["version"],
        created_at=as_utc(row["created_at"]),
        enabled=bool(row["enabled"]),
        content_type=row["content_type"],
    )


_METADATA_COLUMNS = (
    t.vault_secrets.c.id,
    t.vault_secrets.c.name,
    t.vault_secrets.c.name_key,
    t.vault_secrets.c.version,
    t.vault_secrets.c.content_type,
    t.vault_secrets.c.created_at,
    t.vault_secrets.c.enabled,
)


# -- the vault -----------------------------------------------------------------------------------
class BuiltinVault:
    """The built-in vault over a :class:`MetadataStore`; also a :class:`SecretResolver`.

    Construct it early (routes need it), then :meth:`unlock` (or :meth:`open` with a key) once
    the store is open; operations that encrypt or decrypt raise ``RuntimeError`` before that.

    :param store: the metadata store holding the vault tables.
    :param key: the 32-byte master key, if already known (then call :meth:`open`).
    :param only_existing_vaults: when true, :meth:`handles` claims only identifiers whose vault
        exists here (as known to this process: loaded by :meth:`open`/:meth:`refresh`, kept up
        to date by this instance's create/delete), leaving the others to a resolver further
        down the chain (a real Azure Key Vault resolver, say). When false (the default, while no
        such resolver exists), every Key Vault-shaped identifier is handled here and a missing
        vault is a :class:`~entrepot.errors.SecretNotFound`.
    """

    description = "the built-in vault"

    def __init__(
        self,
        store: MetadataStore,
        key: bytes | None = None,
        *,
        only_existing_vaults: bool = False,
    ) -> None:
        self.store = store
        self._key = key
        self._aead: AESGCM | None = None
        self._only_existing = only_existing_vaults
        self._known: frozenset[str] = frozenset()

    # -- start-up ---------------------------------------------------------------------------
    async def holds_data(self) -> bool:
        """Whether the database already holds vault data (a key-check value or any secret)."""
        async with self.store.read() as conn:
            if await self.store.get_setting(conn, KEY_CHECK_SETTING) is not None:
                return True
            row = (await conn.execute(sa.select(t.vault_secrets.c.id).limit(1))).first()
            return row is not None

    async def unlock(self, data_dir: Path, environ: Mapping[str, str] | None = None) -> None:
        """Load the master key (:func:`~entrepot.secrets.keys.load_master_key`) and :meth:`open`.

        A key file is generated only when the database holds no vault data yet; a key file
        generated here and then refused is removed again.

        :raises ConfigError: the key is invalid, missing while data exists, or not the key the
            data was encrypted with.
        """
        env = os.environ if environ is None else environ
        from_env = bool(env.get(MASTER_KEY_ENV, "").strip())
        path = key_file(data_dir)
        existed = from_env or path.exists()
        key = load_master_key(data_dir, env, create=not await self.holds_data())
        source = MASTER_KEY_ENV if from_env else str(path)
        try:
            await self.open(key, source=source)
        except ConfigError:
            if not existed:
                remove_key_file(path)
            raise

    async def open(self, key: bytes | None = None, *, source: str = "the master key") -> None:
        """Check ``key`` against the stored key-check value (storing one on first use).

        :raises ConfigError: when no key was given, it is not 32 bytes, or it is not the key the
            vault's data was encrypted with.
        """
        key = key if key is not None else self._key
        if key is None or len(key) != KEY_BYTES:
            raise ConfigError(f"the vault master key must be {KEY_BYTES} bytes")
        async with self.store.read() as conn:
            check = await self.store.get_setting(conn, KEY_CHECK_SETTING)
        if check is None:
            async with self.store.write() as conn:
                check = await self.store.get_setting(conn, KEY_CHECK_SETTING)
                if check is None:
                    await self.store.put_setting(conn, KEY_CHECK_SETTING, make_key_check(key))
        if check is not None and not verify_key_check(key, check):
            raise ConfigError(
                f"the master key does not match the one this data was encrypted with "
                f"(key from {source}). Restore the original {MASTER_KEY_ENV} or master.key; "
                "every replica sharing this database needs the same key."
            )
        self._key = key
        self._aead = AESGCM(key)
        await self.refresh()

    async def refresh(self) -> None:
        """Reload the names of the vaults that exist (for ``only_existing_vaults``)."""
        async with self.store.read() as conn:
            names = (await conn.execute(sa.select(t.vaults.c.name_key))).scalars().all()
        self._known = frozenset(str(n) for n in names)

    @property
    def aead(self) -> AESGCM:
        if self._aead is None:
            raise RuntimeError("BuiltinVault.open() or unlock() has not been called")
        return self._aead

    # -- vaults -----------------------------------------------------------------------------
    async def create_vault(self, name: str) -> tuple[VaultInfo, bool]:
        """Create vault ``name``; return it and whether it is new (existing: unchanged)."""
        check_vault_name(name)
        key = name.lower()
        try:
            async with self.store.write() as conn:
                row = await self._vault_row(conn, name)
                if row is not None:
                    return _vault_info(row), False
                now = utcnow()
                await conn.execute(
                    sa.insert(t.vaults).values(name=name, name_key=key, created_at=now)
                )
        except IntegrityError:  # created concurrently by another process
            return await self.get_vault(name), False
        self._known = self._known | {key}
        log.info("vault %s created", name)
        return VaultInfo(name=name, created_at=now), True

    async def get_vault(self, name: str) -> VaultInfo:
        """:raises ResourceNotFound: when there is no vault ``name``."""
        check_vault_name(name)
        async with self.store.read() as conn:
            return _vault_info(await self._require_vault(conn, name))

    async def list_vaults(self) -> list[VaultInfo]:
        """All vaults, by name."""
        async with self.store.read() as conn:
            rows = (
                (await conn.execute(sa.select(t.vaults).order_by(t.vaults.c.name_key)))
                .mappings()
                .all()
            )
        return [_vault_info(r) for r in rows]

    async def delete_vault(self, name: str) -> None:
        """Delete vault ``name`` with all its secrets and grants.

        :raises ResourceNotFound: when there is no vault ``name``.
        """
        check_vault_name(name)
        async with self.store.write() as conn:
            row = await self._require_vault(conn, name)
            vault_id = row["id"]
            await conn.execute(
                sa.delete(t.vault_grants).where(t.vault_grants.c.vault_id == vault_id)
            )
            await conn.execute(
                sa.delete(t.vault_secrets).where(t.vault_secrets.c.vault_id == vault_id)
            )
            await conn.execute(sa.delete(t.vaults).where(t.vaults.c.id == vault_id))
        self._known = self._known - {name.lower()}
        log.info("vault %s deleted", name)

    # -- secrets ----------------------------------------------------------------------------
    async def set_secret(
        self, vault: str, name: str, value: str | Secret, content_type: str | None = None
    ) -> SecretInfo:
        """Store ``value`` as a new version of secret ``name``; return that version's metadata.

        :raises ResourceNotFound: no vault ``vault``.
        :raises InvalidResourceName: bad vault or secret name.
        :raises InvalidPropertyValue: the value is empty, too long (25 KiB) or not a string.
        """
        check_vault_name(vault)
        check_secret_name(name)
        data = _check_value(value)
        content_type = _check_content_type(content_type)
        aead = self.aead
        version = uuid.uuid4().hex
        nonce = os.urandom(_NONCE_BYTES)
        try:
            async with self.store.write() as conn:
                vrow = await self._require_vault(conn, vault)
                sealed = aead.encrypt(nonce, data, _aad(vrow["name_key"], name.lower(), version))
                now = utcnow()
                await conn.execute(
                    sa.insert(t.vault_secrets).values(
                        vault_id=vrow["id"],
                        name=name,
                        name_key=name.lower(),
                        version=version,
                        nonce=nonce,
                        ciphertext=sealed,
                        content_type=content_type,
                        created_at=now,
                        enabled=True,
                    )
                )
        except IntegrityError:  # the vault was deleted meanwhile
            raise self._no_vault(vault) from None
        log.info("secret %s/%s: new version %s", vrow["name"], name, version)
        return SecretInfo(vrow["name"], name, version, now, True, content_type)

    async def list_secrets(self, vault: str) -> list[SecretInfo]:
        """The newest version of every secret of ``vault``, by name (no values)."""
        check_vault_name(vault)
        s = t.vault_secrets.c
        async with self.store.read() as conn:
            vrow = await self._require_vault(conn, vault)
            newest = (
                sa.select(s.name_key, sa.func.max(s.id).label("id"))
                .where(s.vault_id == vrow["id"])
                .group_by(s.name_key)
                .subquery()
            )
            query = (
                sa.select(*_METADATA_COLUMNS).join(newest, newest.c.id == s.id).order_by(s.name_key)
            )
            rows = (await conn.execute(query)).mappings().all()
        return [_secret_info(vrow, r) for r in rows]

    async def show_secret(self, vault: str, name: str, version: str | None = None) -> SecretInfo:
        """Metadata of one version (default: the newest) of secret ``name`` (no value).

        :raises ResourceNotFound: no such vault, secret or version.
        """
        check_vault_name(vault)
        check_secret_name(name)
        if version is not None:
            version = check_version(version)
        async with self.store.read() as conn:
            vrow = await self._require_vault(conn, vault)
            row = await self._version_row(conn, vrow["id"], name, version, _METADATA_COLUMNS)
        if row is None:
            what = f"version {version} of secret" if version else "secret"
            raise e.ResourceNotFound(
                f"The vault {vrow['name']!r} has no {what} {name!r}.", target=name
            )
        return _secret_info(vrow, row)

    async def list_secret_versions(self, vault: str, name: str) -> list[SecretInfo]:
        """Every version of secret ``name``, newest first (no values).

        :raises ResourceNotFound: no such vault or secret.
        """
        check_vault_name(vault)
        check_secret_name(name)
        s = t.vault_secrets.c
        async with self.store.read() as conn:
            vrow = await self._require_vault(conn, vault)
            query = (
                sa.select(*_METADATA_COLUMNS)
                .where(s.vault_id == vrow["id"], s.name_key == name.lower())
                .order_by(s.id.desc())
            )
            rows = (await conn.execute(query)).mappings().all()
        if not rows:
            raise e.ResourceNotFound(
                f"The vault {vrow['name']!r} has no secret {name!r}.", target=name
            )
        return [_secret_info(vrow, r) for r in rows]

    async def delete_secret(self, vault: str, name: str) -> int:
        """Delete every version of secret ``name``; return how many versions there were.

        :raises ResourceNotFound: no such vault or secret.
        """
        check_vault_name(vault)
        check_secret_name(name)
        s = t.vault_secrets.c
        async with self.store.write() as conn:
            vrow = await self._require_vault(conn, vault)
            result = await conn.execute(
                sa.delete(t.vault_secrets).where(
                    s.vault_id == vrow["id"], s.name_key == name.lower()
                )
            )
            count = int(result.rowcount)
        if count == 0:
            raise e.ResourceNotFound(
                f"The vault {vrow['name']!r} has no secret {name!r}.", target=name
            )
        log.info("secret %s/%s deleted (%d versions)", vrow["name"], name, count)
        return count

    # -- grants -----------------------------------------------------------------------------
    async def grant(
        self, vault: str, principal_id: str, permission: str = "get"
    ) -> tuple[GrantInfo, bool]:
        """Let ``principal_id`` ``permission`` the secrets of ``vault``; return the grant and
        whether it is new (granting twice is not an error).

        :raises ResourceNotFound: no vault ``vault``.
        :raises InvalidPropertyValue: bad principal id or unknown permission.
        """
        check_vault_name(vault)
        principal = check_principal(principal_id)
        perm = check_permission(permission)
        g = t.vault_grants.c
        try:
            async with self.store.write() as conn:
                vrow = await self._require_vault(conn, vault)
                existing = (
                    (
                        await conn.execute(
                            sa.select(t.vault_grants).where(
                                g.vault_id == vrow["id"],
                                g.principal_id == principal,
                                g.permission == perm,
                            )
                        )
                    )
                    .mappings()
                    .first()
                )
                if existing is not None:
                    return GrantInfo(
                        vrow["name"], principal, perm, as_utc(existing["created_at"])
                    ), False
                now = utcnow()
                await conn.execute(
                    sa.insert(t.vault_grants).values(
                        vault_id=vrow["id"], principal_id=principal, permission=perm, created_at=now
                    )
                )
        except IntegrityError:  # granted concurrently, or the vault was deleted meanwhile
            for grant in await self.list_grants(vault):
                if grant.principal_id == principal and grant.permission == perm:
                    return grant, False
            raise self._no_vault(vault) from None
        log.info("vault %s: granted %s to principal %s", vrow["name"], perm, principal)
        return GrantInfo(vrow["name"], principal, perm, now), True

    async def revoke(self, vault: str, principal_id: str, permission: str = "get") -> None:
        """Remove a grant.

        :raises ResourceNotFound: no such vault, or no such grant.
        """
        check_vault_name(vault)
        principal = check_principal(principal_id)
        perm = check_permission(permission)
        g = t.vault_grants.c
        async with self.store.write() as conn:
            vrow = await self._require_vault(conn, vault)
            result = await conn.execute(
                sa.delete(t.vault_grants).where(
                    g.vault_id == vrow["id"], g.principal_id == principal, g.permission == perm
                )
            )
            removed = int(result.rowcount)
        if not removed:
            raise e.ResourceNotFound(
                f"The vault {vrow['name']!r} has no {perm!r} grant for principal {principal!r}.",
                target="principalId",
            )
        log.info("vault %s: revoked %s from principal %s", vrow["name"], perm, principal)

    async def list_grants(self, vault: str) -> list[GrantInfo]:
        """The grants of ``vault``, by principal."""
        check_vault_name(vault)
        g = t.vault_grants.c
        async with self.store.read() as conn:
            vrow = await self._require_vault(conn, vault)
            rows = (
                (
                    await conn.execute(
                        sa.select(t.vault_grants)
                        .where(g.vault_id == vrow["id"])
                        .order_by(g.principal_id, g.permission)
                    )
                )
                .mappings()
                .all()
            )
        return [
            GrantInfo(vrow["name"], r["principal_id"], r["permission"], as_utc(r["created_at"]))
            for r in rows
        ]

    # -- the resolver face ------------------------------------------------------------------
    def handles(self, identifier: str) -> bool:
        """Whether ``identifier`` is an https URL of a Key Vault host (of a vault held here,
        with ``only_existing_vaults``)."""
        label = _key_vault_host(identifier)
        if label is None:
            return False
        return not self._only_existing or label in self._known

    def check(self, identifier: str) -> None:
        """:raises InvalidSecretIdentifier: unless a well-formed Key Vault secret identifier."""
        parse_secret_identifier(identifier)

    async def resolve(self, identifier: str, principal_id: str) -> Secret:
        """The value of ``identifier`` as read by ``principal_id``.

        Order of checks, as Key Vault: vault exists, then the principal's ``get`` grant, then
        the secret and version.

        :raises InvalidSecretIdentifier: malformed identifier.
        :raises SecretNotFound: no such vault, secret or version (or the version is disabled).
        :raises SecretAccessDenied: ``principal_id`` has no ``get`` grant on the vault.
        :raises SecretStoreUnavailable: the database cannot be read, or the ciphertext does
            not decrypt (modified data or a wrong key).
        """
        ref = parse_secret_identifier(identifier)
        aead = self.aead
        principal = principal_id.strip().lower() if isinstance(principal_id, str) else ""
        g = t.vault_grants.c
        columns = (*_METADATA_COLUMNS, t.vault_secrets.c.nonce, t.vault_secrets.c.ciphertext)
        try:
            async with self.store.read() as conn:
                vrow = await self._vault_row(conn, ref.vault)
                if vrow is None:
                    raise e.SecretNotFound(
                        f"The secret {identifier!r} was not found: the built-in vault has no "
                        f"vault {ref.vault!r}."
                    )
                granted = (
                    await conn.execute(
                        sa.select(g.vault_id).where(
                            g.vault_id == vrow["id"],
                            g.principal_id == principal,
                            g.permission == "get",
                        )
                    )
                ).first()
                if granted is None or not principal:
                    raise e.SecretAccessDenied(
                        f"Access to the secret {identifier!r} is denied: principal "
                        f"{principal_id!r} has no 'get' permission on vault {vrow['name']!r} "
                        f"(grant it with `entrepot vault grant {vrow['name']} --principal "
                        f"{principal_id} --permission get`)."
                    )
                row = await self._version_row(conn, vrow["id"], ref.name, ref.version, columns)
        except (OperationalError, InterfaceError, OSError) as exc:
            raise e.SecretStoreUnavailable(
                f"The secret {identifier!r} cannot be read: the vault database is unavailable "
                f"({type(exc).__name__})."
            ) from None
        if row is None:
            what = f"version {ref.version} of the secret" if ref.version else "the secret"
            raise e.SecretNotFound(
                f"The secret {identifier!r} was not found: vault {vrow['name']!r} has no "
                f"{what} {ref.name!r}."
            )
        if not row["enabled"]:
            raise e.SecretNotFound(f"The secret {identifier!r} is disabled.")
        try:
            plain = aead.decrypt(
                bytes(row["nonce"]),
                bytes(row["ciphertext"]),
                _aad(vrow["name_key"], row["name_key"], row["version"]),
            )
            return Secret(plain.decode("utf-8"))
        except (InvalidTag, ValueError):
            raise e.SecretStoreUnavailable(
                f"The secret {identifier!r} cannot be decrypted: its stored data was modified "
                "or encrypted with another master key."
            ) from None

    # -- helpers ----------------------------------------------------------------------------
    async def _vault_row(self, conn: AsyncConnection, name: str) -> RowMapping | None:
        query = sa.select(t.vaults).where(t.vaults.c.name_key == name.lower())
        return (await conn.execute(query)).mappings().first()

    async def _require_vault(self, conn: AsyncConnection, name: str) -> RowMapping:
        row = await self._vault_row(conn, name)
        if row is None:
            raise self._no_vault(name)
        return row

    @staticmethod
    def _no_vault(name: str) -> e.ResourceNotFound:
        return e.ResourceNotFound(f"The vault {name!r} does not exist.", target=name)

    @staticmethod
    async def _version_row(
        conn: AsyncConnection,
        vault_id: int,
        name: str,
        version: str | None,
        columns: Sequence[Any],
    ) -> RowMapping | None:
        s = t.vault_secrets.c
        query = sa.select(*columns).where(s.vault_id == vault_id, s.name_key == name.lower())
        if version is not None:
            query = query.where(s.version == version)
        query = query.order_by(s.id.desc()).limit(1)
        return (await conn.execute(query)).mappings().first()
