"""The built-in vault: named vaults of versioned secrets, encrypted at rest, with access grants.

It answers Key Vault-shaped identifiers, so identifiers written for Azure work unchanged::

    https://<vault>.vault.azure.net/secrets/<name>            the newest version
    https://<vault>.vault.azure.net/secrets/<name>/<version>  one version (32 hex digits)

(the other Azure clouds' hosts, ``.vault.azure.cn``, ``.vault.usgovcloudapi.net`` and
``.vault.microsoftazure.de``, are accepted too).

Storage (a :class:`~entrepot.metadata.protocols.VaultStore`): every version is stored as a
random 96-bit nonce and the AES-GCM ciphertext of the value under the master key (:mod:`.keys`).
The associated data binds the ciphertext to its vault, secret name and version, so a ciphertext
copied into another version does not decrypt. Values are never stored, logged or returned in
plaintext; only :meth:`BuiltinVault.resolve` decrypts.

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from entrepot import errors as e
from entrepot.errors import ConfigError
from entrepot.metadata.protocols import StoreUnavailable, VaultStore
from entrepot.metadata.records import GrantRecord, SecretVersionRecord, VaultRecord
from entrepot.models import format_datetime
from entrepot.secrets.base import Secret
from entrepot.secrets.keys import (
    KEY_BYTES,
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


def _vault_info(record: VaultRecord) -> VaultInfo:
    return VaultInfo(name=record.name, created_at=record.created_at)


def _secret_info(record: SecretVersionRecord) -> SecretInfo:
    return SecretInfo(
        vault=record.vault,
        name=record.name,
        version=record.version,
        created_at=record.created_at,
        enabled=record.enabled,
        content_type=record.content_type,
    )


def _grant_info(record: GrantRecord) -> GrantInfo:
    return GrantInfo(record.vault, record.principal_id, record.permission, record.created_at)


# -- the vault -----------------------------------------------------------------------------------
class BuiltinVault:
    """The built-in vault over a :class:`~entrepot.metadata.protocols.VaultStore`; also a
    :class:`SecretResolver`.

    Construct it early (routes need it), then :meth:`unlock` (or :meth:`open` with a key) once
    the store's database is open; operations that encrypt or decrypt raise ``RuntimeError``
    before that.

    :param store: where vaults, sealed secret versions, grants and the key check are kept.
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
        store: VaultStore,
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
        return await self.store.key_check() is not None or await self.store.has_any_secret()

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
        check = await self.store.key_check()
        if check is None:  # first use: the first replica to store its check wins
            check = await self.store.set_key_check(make_key_check(key))
        if not verify_key_check(key, check):
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
        self._known = frozenset(v.name.lower() for v in await self.store.list_vaults())

    @property
    def aead(self) -> AESGCM:
        if self._aead is None:
            raise RuntimeError("BuiltinVault.open() or unlock() has not been called")
        return self._aead

    # -- vaults -----------------------------------------------------------------------------
    async def create_vault(self, name: str) -> tuple[VaultInfo, bool]:
        """Create vault ``name``; return it and whether it is new (existing: unchanged)."""
        check_vault_name(name)
        record, created = await self.store.create_vault(name)
        if created:
            self._known = self._known | {name.lower()}
            log.info("vault %s created", name)
        return _vault_info(record), created

    async def get_vault(self, name: str) -> VaultInfo:
        """:raises ResourceNotFound: when there is no vault ``name``."""
        check_vault_name(name)
        return _vault_info(await self._require_vault(name))

    async def list_vaults(self) -> list[VaultInfo]:
        """All vaults, by name."""
        return [_vault_info(r) for r in await self.store.list_vaults()]

    async def delete_vault(self, name: str) -> None:
        """Delete vault ``name`` with all its secrets and grants.

        :raises ResourceNotFound: when there is no vault ``name``.
        """
        check_vault_name(name)
        if not await self.store.delete_vault(name):
            raise self._no_vault(name)
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
        sealed = aead.encrypt(nonce, data, _aad(vault.lower(), name.lower(), version))
        record = await self.store.add_secret_version(
            vault, name, version, nonce, sealed, content_type
        )
        if record is None:
            raise self._no_vault(vault)
        log.info("secret %s/%s: new version %s", record.vault, name, version)
        return _secret_info(record)

    async def list_secrets(self, vault: str) -> list[SecretInfo]:
        """The newest version of every secret of ``vault``, by name (no values)."""
        check_vault_name(vault)
        await self._require_vault(vault)
        return [_secret_info(r) for r in await self.store.newest_versions(vault)]

    async def show_secret(self, vault: str, name: str, version: str | None = None) -> SecretInfo:
        """Metadata of one version (default: the newest) of secret ``name`` (no value).

        :raises ResourceNotFound: no such vault, secret or version.
        """
        check_vault_name(vault)
        check_secret_name(name)
        if version is not None:
            version = check_version(version)
        found = await self._require_vault(vault)
        record = await self.store.secret_version(vault, name, version)
        if record is None:
            what = f"version {version} of secret" if version else "secret"
            raise e.ResourceNotFound(
                f"The vault {found.name!r} has no {what} {name!r}.", target=name
            )
        return _secret_info(record)

    async def list_secret_versions(self, vault: str, name: str) -> list[SecretInfo]:
        """Every version of secret ``name``, newest first (no values).

        :raises ResourceNotFound: no such vault or secret.
        """
        check_vault_name(vault)
        check_secret_name(name)
        found = await self._require_vault(vault)
        records = await self.store.versions(vault, name)
        if not records:
            raise e.ResourceNotFound(
                f"The vault {found.name!r} has no secret {name!r}.", target=name
            )
        return [_secret_info(r) for r in records]

    async def delete_secret(self, vault: str, name: str) -> int:
        """Delete every version of secret ``name``; return how many versions there were.

        :raises ResourceNotFound: no such vault or secret.
        """
        check_vault_name(vault)
        check_secret_name(name)
        found = await self._require_vault(vault)
        count = await self.store.delete_secret(vault, name)
        if count == 0:
            raise e.ResourceNotFound(
                f"The vault {found.name!r} has no secret {name!r}.", target=name
            )
        log.info("secret %s/%s deleted (%d versions)", found.name, name, count)
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
        added = await self.store.add_grant(vault, principal, perm)
        if added is None:
            raise self._no_vault(vault)
        record, new = added
        if new:
            log.info("vault %s: granted %s to principal %s", record.vault, perm, principal)
        return _grant_info(record), new

    async def revoke(self, vault: str, principal_id: str, permission: str = "get") -> None:
        """Remove a grant.

        :raises ResourceNotFound: no such vault, or no such grant.
        """
        check_vault_name(vault)
        principal = check_principal(principal_id)
        perm = check_permission(permission)
        found = await self._require_vault(vault)
        if not await self.store.delete_grant(vault, principal, perm):
            raise e.ResourceNotFound(
                f"The vault {found.name!r} has no {perm!r} grant for principal {principal!r}.",
                target="principalId",
            )
        log.info("vault %s: revoked %s from principal %s", found.name, perm, principal)

    async def list_grants(self, vault: str) -> list[GrantInfo]:
        """The grants of ``vault``, by principal."""
        check_vault_name(vault)
        await self._require_vault(vault)
        return [_grant_info(r) for r in await self.store.list_grants(vault)]

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
        try:
            found = await self.store.get_vault(ref.vault)
            if found is None:
                raise e.SecretNotFound(
                    f"The secret {identifier!r} was not found: the built-in vault has no "
                    f"vault {ref.vault!r}."
                )
            if not principal or not await self.store.has_grant(ref.vault, principal, "get"):
                raise e.SecretAccessDenied(
                    f"Access to the secret {identifier!r} is denied: principal "
                    f"{principal_id!r} has no 'get' permission on vault {found.name!r} "
                    f"(grant it with `entrepot vault grant {found.name} --principal "
                    f"{principal_id} --permission get`)."
                )
            record = await self.store.secret_version(
                ref.vault, ref.name, ref.version, with_ciphertext=True
            )
        except StoreUnavailable as exc:
            raise e.SecretStoreUnavailable(
                f"The secret {identifier!r} cannot be read: {exc}."
            ) from None
        if record is None:
            what = f"version {ref.version} of the secret" if ref.version else "the secret"
            raise e.SecretNotFound(
                f"The secret {identifier!r} was not found: vault {found.name!r} has no "
                f"{what} {ref.name!r}."
            )
        if not record.enabled:
            raise e.SecretNotFound(f"The secret {identifier!r} is disabled.")
        if record.nonce is None or record.ciphertext is None:  # the store broke its contract
            raise RuntimeError("the vault store returned a secret version without ciphertext")
        try:
            plain = aead.decrypt(
                record.nonce,
                record.ciphertext,
                _aad(record.vault.lower(), record.name.lower(), record.version),
            )
            return Secret(plain.decode("utf-8"))
        except (InvalidTag, ValueError):
            raise e.SecretStoreUnavailable(
                f"The secret {identifier!r} cannot be decrypted: its stored data was modified "
                "or encrypted with another master key."
            ) from None

    # -- helpers ----------------------------------------------------------------------------
    async def _require_vault(self, name: str) -> VaultRecord:
        found = await self.store.get_vault(name)
        if found is None:
            raise self._no_vault(name)
        return found

    @staticmethod
    def _no_vault(name: str) -> e.ResourceNotFound:
        return e.ResourceNotFound(f"The vault {name!r} does not exist.", target=name)
