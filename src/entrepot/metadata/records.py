"""Records: what the metadata stores return, as frozen dataclasses (never ``RowMapping``).

Records carry domain values only: no surrogate row ids, no SQLAlchemy types. Datetimes are
timezone-aware UTC on every database. The other stores' records join this module in their own
sections; each section belongs to the store protocol of the same name in
:mod:`entrepot.metadata.protocols`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

__all__ = [
    "GrantRecord",
    "SecretVersionRecord",
    "VaultRecord",
]


# -- VaultStore ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VaultRecord:
    """A vault of the built-in secret store. ``name`` is spelled as at creation; vault names
    are case-insensitive."""

    name: str
    created_at: dt.datetime


@dataclass(frozen=True)
class SecretVersionRecord:
    """One version of a secret of a vault.

    ``vault`` and ``name`` are spelled as stored (the vault as created, the secret as written
    for this version). ``nonce`` and ``ciphertext`` are ``None`` unless the caller asked for
    them; they are left out of ``repr``.
    """

    vault: str
    name: str
    version: str
    content_type: str | None
    created_at: dt.datetime
    enabled: bool
    nonce: bytes | None = field(default=None, repr=False)
    ciphertext: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class GrantRecord:
    """``principal_id`` may ``permission`` the secrets of ``vault`` (spelled as created)."""

    vault: str
    principal_id: str
    permission: str
    created_at: dt.datetime
