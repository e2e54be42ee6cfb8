"""The metadata stores as the rest of entrepot sees them: small typed protocols over records.

Nothing outside :mod:`entrepot.metadata` writes SQL or imports SQLAlchemy; services depend on
these protocols, and :func:`entrepot.app.build_app` picks the SQL implementations. Each
protocol has one conformance suite in ``tests/`` that both SQLite and PostgreSQL pass.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from entrepot.metadata.records import (
    BlobRecord,
    BlobRef,
    CacheRuleRecord,
    Changes,
    ChildRecord,
    GrantRecord,
    LeaseRecord,
    ManifestRecord,
    NewCacheRule,
    NewCredentialSet,
    NewManifest,
    NewRegistry,
    NewToken,
    OperationRecord,
    OperationState,
    RegistryKey,
    RegistryRecord,
    RepositoryRecord,
    ResourceKind,
    SecretVersionRecord,
    TagRecord,
    TokenRecord,
    TokenRole,
    VaultRecord,
)

__all__ = [
    "ContentIndex",
    "Leases",
    "OperationStore",
    "ResourceStore",
    "ResourceTx",
    "StoreUnavailable",
    "VaultCatalog",
    "VaultGrants",
    "VaultKeyCheck",
    "VaultSecretVersions",
    "VaultStore",
]


class ResourceTx(Protocol):
    """Resource reads and writes inside one transaction (see :meth:`ResourceStore.write`)."""

    async def registry(self, key: RegistryKey) -> RegistryRecord | None: ...
    async def registry_by_id(self, registry_id: int) -> RegistryRecord | None: ...
    async def registries_named(self, name: str) -> list[RegistryRecord]: ...
    async def registries(
        self, subscription: str, resource_group: str, after: str, limit: int
    ) -> list[RegistryRecord]: ...
    async def insert_registry(self, new: NewRegistry) -> int: ...
    async def child(
        self, kind: ResourceKind, registry_id: int, name: str
    ) -> ChildRecord | None: ...
    async def by_id(self, kind: ResourceKind, row_id: int) -> Any: ...
    async def children(
        self, kind: ResourceKind, registry_id: int, after: str, limit: int
    ) -> list[ChildRecord]: ...
    async def count_children(self, kind: ResourceKind, registry_id: int) -> int: ...
    async def insert_cache_rule(self, new: NewCacheRule) -> int: ...
    async def insert_credential_set(self, new: NewCredentialSet) -> int: ...
    async def update(self, kind: ResourceKind, row_id: int, changes: Changes) -> None: ...
    async def delete(self, kind: ResourceKind, row_id: int) -> bool: ...
    async def rules_with_targets(
        self, registry_id: int, target_paths: Sequence[str], wildcard: bool
    ) -> list[CacheRuleRecord]: ...
    async def wildcard_rules_under(
        self, registry_id: int, prefix: str, limit: int = 5
    ) -> list[CacheRuleRecord]: ...
    async def rules_using_credential_set(
        self, credential_set_id: int, limit: int = 5
    ) -> list[str]: ...
    async def credential_set_ids(self) -> list[int]: ...
    async def setting(self, key: str) -> str | None: ...
    async def put_setting(self, key: str, value: str) -> None: ...
    # API tokens: names are case-insensitive; a revoked token's row is gone
    async def count_tokens(self, role: TokenRole | None = None) -> int: ...
    async def token_named(self, name: str) -> TokenRecord | None: ...
    async def tokens(self) -> list[TokenRecord]: ...
    async def insert_token(self, new: NewToken) -> int: ...
    async def replace_token_hash(
        self, token_id: int, token_hash: str, actor: str, now: dt.datetime
    ) -> bool: ...
    async def delete_token(self, token_id: int) -> bool: ...
    async def insert_operation(self, op: OperationRecord) -> None: ...
    async def operation(self, op_id: str) -> OperationRecord | None: ...
    async def finish_operation(
        self,
        op_id: str,
        status: OperationState,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None: ...
    async def acquire_lease(self, key: str, owner: str, until: dt.datetime) -> bool: ...
    async def release_lease(self, key: str, owner: str) -> None: ...


class ResourceStore(Protocol):
    """Registries, cache rules, credential sets, API tokens and settings."""

    def read(self) -> AbstractAsyncContextManager[ResourceTx]:
        """A consistent view of committed data; writing through it is an error."""
        ...

    def write(self) -> AbstractAsyncContextManager[ResourceTx]:
        """One transaction, serialised with every other ``write()`` of every process."""
        ...

    async def get_registry(self, key: RegistryKey) -> RegistryRecord | None: ...
    async def registries_named(self, name: str) -> list[RegistryRecord]: ...
    async def first_registries(self) -> list[str]: ...
    async def get_with_child(
        self, kind: ResourceKind, key: RegistryKey, name: str
    ) -> tuple[RegistryRecord | None, ChildRecord | None]: ...
    async def token(self, token_hash: str) -> TokenRecord | None:
        """The token with that secret hash; sees every write committed before the call (by
        any process), so a revoked token is refused from the moment the revocation commits."""
        ...


class OperationStore(Protocol):
    """Operation records outside a resource transaction."""

    async def get(self, op_id: str) -> OperationRecord | None: ...
    async def claimable(self, limit: int = 100) -> list[str]: ...


class Leases(Protocol):
    """Named, expiring claims held across processes (see :mod:`entrepot.metadata.leases`)."""

    async def acquire(self, key: str, owner: str, seconds: float) -> bool: ...
    async def renew(self, key: str, owner: str, seconds: float) -> bool: ...
    async def release(self, key: str, owner: str) -> None: ...
    async def holder(self, key: str) -> LeaseRecord | None: ...
    async def take_over(self, key: str, owner: str, previous: str, seconds: float) -> bool: ...
    async def purge_expired(self) -> int: ...


class ContentIndex(Protocol):
    """What the cache holds (see :mod:`entrepot.metadata.content` for the guarantees)."""

    async def repository(self, registry_id: int, name: str) -> RepositoryRecord | None: ...
    async def ensure_repository(self, registry_id: int, name: str) -> RepositoryRecord: ...
    async def repositories(self, registry_id: int, after: str, limit: int) -> list[str]: ...
    async def cached_repositories(self, registry_id: int, after: str, limit: int) -> list[str]: ...
    async def tag(self, repository_id: int, tag: str) -> TagRecord | None: ...
    async def put_tag(
        self, repository_id: int, tag: str, digest: str, checked_at: dt.datetime
    ) -> None: ...
    async def tags(self, repository_id: int, after: str, limit: int) -> list[str]: ...
    async def delete_tag(self, repository_id: int, tag: str) -> bool: ...
    async def manifest(self, repository_id: int, digest: str) -> ManifestRecord | None: ...
    async def put_manifest(self, new: NewManifest) -> None: ...
    async def references(self, repository_id: int, digest: str) -> list[BlobRef]: ...
    async def referrers(
        self, repository_id: int, subject: str, artifact_type: str | None = None
    ) -> list[ManifestRecord]: ...
    async def blob(self, digest: str) -> BlobRecord | None: ...
    async def put_blob(self, digest: str, size: int, media_type: str | None) -> None: ...
    async def blob_in_repository(self, repository_id: int, digest: str) -> bool: ...
    async def blob_linked(self, repository_id: int, digest: str) -> bool: ...
    async def link_blob(self, repository_id: int, digest: str) -> None: ...
    async def record_accesses(
        self, manifests: Iterable[tuple[int, str]], blobs: Iterable[str], when: dt.datetime
    ) -> None: ...
    async def counts(self) -> dict[str, int]:
        """Server-wide ``repositories``, ``manifests``, ``tags``, ``blobs``, ``blob_bytes``."""
        ...


# -- VaultStore: the built-in secret vault (entrepot.secrets.vault) -------------------------------
# Names of vaults and secrets are case-insensitive everywhere: a method given "MyVault" finds
# the vault created as "myvault". Callers validate names; the stores do not. Any method may
# raise StoreUnavailable.
class StoreUnavailable(Exception):
    """The database could not be reached or failed operationally (connection lost, locked too
    long). The message names no data, only the kind of failure."""


class VaultCatalog(Protocol):
    """The vaults themselves."""

    async def create_vault(self, name: str) -> tuple[VaultRecord, bool]:
        """Create vault ``name`` unless one of that name exists; return the vault and whether
        this call created it. Of concurrent calls for one name exactly one creates it."""
        ...

    async def get_vault(self, name: str) -> VaultRecord | None:
        """Vault ``name``, or ``None``."""
        ...

    async def list_vaults(self) -> list[VaultRecord]:
        """Every vault, ordered by lower-case name."""
        ...

    async def delete_vault(self, name: str) -> bool:
        """Delete vault ``name`` with all its secret versions and grants, together; return
        whether it existed."""
        ...


class VaultSecretVersions(Protocol):
    """Secret versions: sealed values (nonce and ciphertext) with their metadata."""

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
        """Add ``version`` of secret ``name`` to ``vault``, created now; ``None`` (nothing
        stored) when there is no such vault. The returned record holds no ciphertext.

        :raises ValueError: that version of that secret exists already (versions are meant to
            be unique ids, so this is the caller's bug).
        """
        ...

    async def newest_versions(self, vault: str) -> list[SecretVersionRecord]:
        """The newest version of every secret of ``vault``, by lower-case name, without
        ciphertext (empty when there is no such vault)."""
        ...

    async def versions(self, vault: str, name: str) -> list[SecretVersionRecord]:
        """Every version of secret ``name`` of ``vault``, newest first, without ciphertext
        (empty when there is no such vault or secret)."""
        ...

    async def secret_version(
        self, vault: str, name: str, version: str | None, *, with_ciphertext: bool = False
    ) -> SecretVersionRecord | None:
        """Version ``version`` (``None``: the newest, enabled or not) of secret ``name`` of
        ``vault``, or ``None``. ``nonce`` and ``ciphertext`` are set only with
        ``with_ciphertext``. ``version`` is compared as given (versions are stored lower-case)."""
        ...

    async def delete_secret(self, vault: str, name: str) -> int:
        """Delete every version of secret ``name`` of ``vault``; return how many there were."""
        ...

    async def has_any_secret(self) -> bool:
        """Whether any vault holds any secret version."""
        ...


class VaultGrants(Protocol):
    """Who may do what with the secrets of a vault. Principal ids and permissions are compared
    exactly as given (callers normalise them)."""

    async def add_grant(
        self, vault: str, principal_id: str, permission: str
    ) -> tuple[GrantRecord, bool] | None:
        """Grant ``permission`` on ``vault`` to ``principal_id``; return the grant and whether
        this call added it (an existing grant is returned unchanged), or ``None`` when there
        is no such vault. Of concurrent calls for one grant exactly one adds it."""
        ...

    async def list_grants(self, vault: str) -> list[GrantRecord]:
        """The grants of ``vault``, by principal id then permission (empty: no such vault)."""
        ...

    async def delete_grant(self, vault: str, principal_id: str, permission: str) -> bool:
        """Remove a grant; return whether it existed."""
        ...

    async def has_grant(self, vault: str, principal_id: str, permission: str) -> bool:
        """Whether ``principal_id`` holds ``permission`` on ``vault``."""
        ...


class VaultKeyCheck(Protocol):
    """The key-check value that tells whether a master key is the one the vault data uses."""

    async def key_check(self) -> str | None:
        """The stored key-check value, or ``None`` before the first one is set."""
        ...

    async def set_key_check(self, value: str) -> str:
        """Store ``value`` unless a key-check value is stored already; return the stored one.

        The first writer wins: once set the value never changes, and concurrent callers all
        get the one that was stored."""
        ...


class VaultStore(VaultCatalog, VaultSecretVersions, VaultGrants, VaultKeyCheck, Protocol):
    """Everything the built-in vault (:class:`entrepot.secrets.vault.BuiltinVault`) stores."""
