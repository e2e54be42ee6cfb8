"""The records the metadata stores return: frozen dataclasses, never database rows.

Datetimes are timezone-aware UTC. Names keep the caller's spelling (lookups are
case-insensitive). JSON documents are decoded. A record is a snapshot: it does not change when
the database does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ResourceKind(StrEnum):
    """The management resource types, by their ARM path segment."""

    REGISTRY = "registries"
    CACHE_RULE = "cacheRules"
    CREDENTIAL_SET = "credentialSets"


class State(StrEnum):
    """``provisioningState`` values the service writes."""

    CREATING = "Creating"
    UPDATING = "Updating"
    DELETING = "Deleting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"

    @property
    def terminal(self) -> bool:
        """Whether no operation is running on a resource in this state."""
        return self in (State.SUCCEEDED, State.FAILED, State.CANCELED)


class OperationState(StrEnum):
    """The ``status`` of a long-running operation."""

    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"


class Action(StrEnum):
    """What a long-running operation does to its resource."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Audit:
    """Who created and last changed a resource, and when (read back as ARM ``systemData``)."""

    created_at: dt.datetime
    created_by: str
    modified_at: dt.datetime
    modified_by: str


@dataclass(frozen=True, slots=True)
class RegistryKey:
    """A registry's ARM address: subscription, resource group and name (any case)."""

    subscription: str
    resource_group: str
    name: str


@dataclass(frozen=True, slots=True)
class RegistryRecord:
    id: int
    subscription: str
    resource_group: str
    name: str
    location: str
    sku: str
    tags: dict[str, str]
    state: State
    audit: Audit

    @property
    def key(self) -> RegistryKey:
        return RegistryKey(self.subscription, self.resource_group, self.name)


@dataclass(frozen=True, slots=True)
class RegistryHead:
    """What the registry face needs to know of a registry to serve it: its row id, its name as
    written and the version of its cache rules (bumped in the transaction of every change to
    them, so an equal version means the same rules)."""

    id: int
    name: str
    rules_version: int


@dataclass(frozen=True, slots=True)
class ResourceChanges:
    """What one committed ``ResourceStore.write()`` changed, for in-process caches: whether any
    registry was created or deleted, and the row ids of registries whose cache rules changed."""

    registries: bool = False
    rules_of: frozenset[int] = frozenset()

    def __bool__(self) -> bool:
        return self.registries or bool(self.rules_of)


@dataclass(frozen=True, slots=True)
class CacheRuleRecord:
    id: int
    registry_id: int
    name: str
    source_repository: str
    target_repository: str
    target_path: str
    wildcard: bool
    credential_set_id: int | None
    credential_set_name: str | None  # the referenced set's name, joined in on reads
    state: State
    audit: Audit


@dataclass(frozen=True, slots=True)
class CredentialSetRecord:
    id: int
    registry_id: int
    name: str
    login_server: str
    identity_type: str
    principal_id: str
    auth_credentials: list[dict[str, Any]]
    state: State
    audit: Audit


ChildRecord = CacheRuleRecord | CredentialSetRecord
AnyResource = RegistryRecord | CacheRuleRecord | CredentialSetRecord


@dataclass(frozen=True, slots=True)
class NewRegistry:
    key: RegistryKey
    location: str
    sku: str
    tags: dict[str, str]
    state: State
    actor: str
    now: dt.datetime


@dataclass(frozen=True, slots=True)
class NewCacheRule:
    registry_id: int
    name: str
    source_repository: str
    target_repository: str
    target_path: str
    wildcard: bool
    credential_set_id: int | None
    actor: str
    now: dt.datetime


@dataclass(frozen=True, slots=True)
class NewCredentialSet:
    registry_id: int
    name: str
    login_server: str
    identity_type: str
    principal_id: str
    auth_credentials: list[dict[str, Any]]
    actor: str
    now: dt.datetime


@dataclass(frozen=True, slots=True)
class Changes:
    """What an update writes; ``None`` fields are left as they are.

    ``credential_set_id`` is written when ``set_credential_set`` is true (it may be ``None``).
    """

    state: State | None = None
    actor: str | None = None
    now: dt.datetime | None = None
    sku: str | None = None
    tags: dict[str, str] | None = None
    identity_type: str | None = None
    auth_credentials: list[dict[str, Any]] | None = None
    set_credential_set: bool = False
    credential_set_id: int | None = None


class TokenRole(StrEnum):
    """What an API token may do: ``admin`` everything, ``pull`` only pull through ``/v2/``."""

    ADMIN = "admin"
    PULL = "pull"


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An API token, without its secret (only the SHA-256 of the secret is ever stored).

    ``name`` is spelled as created (names are unique case-insensitively); ``created_at`` and
    ``created_by`` say when and by whom the current secret was issued (by creation or rotation).
    """

    id: int
    name: str
    role: TokenRole
    description: str
    created_at: dt.datetime
    created_by: str


@dataclass(frozen=True, slots=True)
class NewToken:
    name: str
    role: TokenRole
    token_hash: str  # SHA-256 hex of the secret
    description: str
    actor: str
    now: dt.datetime


@dataclass(frozen=True, slots=True)
class OperationRecord:
    id: str
    resource_id: str
    kind: ResourceKind
    registry_id: int | None
    row_id: int
    action: Action
    status: OperationState
    started_at: dt.datetime
    ended_at: dt.datetime | None = None
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    key: str
    owner: str
    expires: dt.datetime


# -- content (the pull-through cache) ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RepositoryRecord:
    """A repository of a registry that holds cached content."""

    id: int
    registry_id: int
    name: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class TagRecord:
    """A tag of a cached repository and the manifest it pointed to when last checked upstream."""

    repository_id: int
    tag: str
    digest: str
    checked_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    repository_id: int
    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    subject: str | None
    created_at: dt.datetime
    last_access: dt.datetime | None


@dataclass(frozen=True, slots=True)
class BlobRecord:
    digest: str
    size: int
    media_type: str | None
    created_at: dt.datetime
    last_access: dt.datetime | None


@dataclass(frozen=True, slots=True)
class BlobRef:
    """A descriptor a manifest references (layers, config, child manifests of an index)."""

    digest: str
    size: int
    media_type: str | None = None


@dataclass(frozen=True, slots=True)
class NewManifest:
    repository_id: int
    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    subject: str | None
    references: tuple[BlobRef, ...]
    now: dt.datetime


@dataclass(frozen=True, slots=True)
class Page:
    """One keyset page: the items and the key to continue after (``None`` on the last page)."""

    items: list[Any] = field(default_factory=list)
    next_after: str | None = None


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
