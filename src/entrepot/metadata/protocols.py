"""The metadata stores as typed protocols: the only way the rest of entrepot reaches the database.

Each protocol speaks in domain terms and returns records (:mod:`entrepot.metadata.records`),
never SQL rows. Every method is one short transaction of its own: what a method does is atomic,
a sequence of calls is not. Implementations for SQLite and PostgreSQL live beside this module
and pass one conformance suite per protocol. The other stores' protocols join this module in
their own sections.
"""

from __future__ import annotations

from typing import Protocol

from entrepot.metadata.records import GrantRecord, SecretVersionRecord, VaultRecord

__all__ = [
    "StoreUnavailable",
    "VaultCatalog",
    "VaultGrants",
    "VaultKeyCheck",
    "VaultSecretVersions",
    "VaultStore",
]


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
