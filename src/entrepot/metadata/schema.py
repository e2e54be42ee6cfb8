"""The metadata schema: SQLAlchemy Core tables shared by SQLite and PostgreSQL.

Names are stored twice: ``name`` as the caller wrote it and ``name_key`` in lower case, because
ARM resource names are case-insensitive. Timestamps are timezone-aware UTC. JSON documents are
stored as text so that both databases read them the same way. Migrations live in
``migrations/versions``; this module always describes the newest revision.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa


class UtcDateTime(sa.TypeDecorator[dt.datetime]):
    """``DateTime(timezone=True)`` that is timezone-aware UTC on every database.

    SQLite keeps no offset: values are converted to UTC before they are stored and come back
    with UTC attached, so both databases return the same aware datetimes.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is not None:
            return value.astimezone(dt.UTC)
        return value

    def process_result_value(self, value: Any, dialect: Any) -> dt.datetime | None:
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value  # type: ignore[no-any-return]


def _audit_columns() -> list[sa.Column[Any]]:
    """The state and audit columns every ARM resource table has (read back as systemData)."""
    return [
        sa.Column("provisioning_state", sa.String(20), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("modified_at", UtcDateTime(), nullable=False),
        sa.Column("modified_by", sa.String(200), nullable=False),
    ]


metadata = sa.MetaData()

settings = sa.Table(
    "settings",
    metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# Every API token (the table keeps its first name; revision 0004 added names and roles). Only
# the SHA-256 hex of a token's secret is stored. A revoked token's row is deleted.
admin_tokens = sa.Table(
    "admin_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("name", sa.String(63), nullable=False),
    sa.Column("name_key", sa.String(63), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.UniqueConstraint("name_key", name="uq_token_name"),
)

registries = sa.Table(
    "registries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("subscription", sa.String(64), nullable=False),
    sa.Column("resource_group", sa.String(90), nullable=False),
    sa.Column("resource_group_key", sa.String(90), nullable=False),
    sa.Column("name", sa.String(50), nullable=False),
    sa.Column("name_key", sa.String(50), nullable=False),
    sa.Column("location", sa.String(100), nullable=False),
    sa.Column("sku", sa.String(50), nullable=False),
    sa.Column("tags", sa.Text, nullable=False, server_default="{}"),
    *_audit_columns(),
    # bumped in the transaction of every change to the registry's cache rules (revision 0005)
    sa.Column("rules_version", sa.Integer, nullable=False, server_default="0"),
    sa.UniqueConstraint("subscription", "resource_group_key", "name_key", name="uq_registry"),
)

credential_sets = sa.Table(
    "credential_sets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "registry_id",
        sa.Integer,
        sa.ForeignKey("registries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("name", sa.String(50), nullable=False),
    sa.Column("name_key", sa.String(50), nullable=False),
    sa.Column("login_server", sa.String(300), nullable=False),
    sa.Column("identity_type", sa.String(40), nullable=False),
    sa.Column("principal_id", sa.String(36), nullable=False),
    sa.Column("auth_credentials", sa.Text, nullable=False),
    *_audit_columns(),
    sa.UniqueConstraint("registry_id", "name_key", name="uq_credential_set"),
)

cache_rules = sa.Table(
    "cache_rules",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "registry_id",
        sa.Integer,
        sa.ForeignKey("registries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("name", sa.String(50), nullable=False),
    sa.Column("name_key", sa.String(50), nullable=False),
    sa.Column("source_repository", sa.String(600), nullable=False),
    sa.Column("target_repository", sa.String(300), nullable=False),
    sa.Column("target_path", sa.String(300), nullable=False),
    sa.Column("wildcard", sa.Boolean, nullable=False),
    sa.Column(
        "credential_set_id",
        sa.Integer,
        sa.ForeignKey("credential_sets.id", ondelete="RESTRICT"),
        nullable=True,
    ),
    *_audit_columns(),
    sa.UniqueConstraint("registry_id", "name_key", name="uq_cache_rule"),
    sa.Index("ix_cache_rules_target", "registry_id", "target_path"),
    sa.Index("ix_cache_rules_credential_set", "credential_set_id"),
)

operations = sa.Table(
    "operations",
    metadata,
    sa.Column("id", sa.String(80), primary_key=True),
    sa.Column("resource_id", sa.String(1000), nullable=False),
    sa.Column("resource_kind", sa.String(20), nullable=False),
    sa.Column("registry_id", sa.Integer, nullable=True),
    sa.Column("row_id", sa.Integer, nullable=True),
    sa.Column("action", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Column("ended_at", UtcDateTime(), nullable=True),
    sa.Column("error_code", sa.String(100), nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Index("ix_operations_status", "status"),
)

# -- leases and the content index (revision 0003) -----------------------------------------------
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("owner", sa.String(100), nullable=False),
    sa.Column("expires", UtcDateTime(), nullable=False),
)

repositories = sa.Table(
    "repositories",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "registry_id",
        sa.Integer,
        sa.ForeignKey("registries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("registry_id", "name", name="uq_repository"),
)

blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("digest", sa.String(200), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("media_type", sa.String(255), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("last_access", UtcDateTime(), nullable=True),
)

manifests = sa.Table(
    "manifests",
    metadata,
    sa.Column(
        "repository_id",
        sa.Integer,
        sa.ForeignKey("repositories.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("digest", sa.String(200), primary_key=True),
    sa.Column("media_type", sa.String(255), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("artifact_type", sa.String(255), nullable=True),
    sa.Column("subject", sa.String(200), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("last_access", UtcDateTime(), nullable=True),
    sa.Index("ix_manifests_subject", "repository_id", "subject"),
)

manifest_references = sa.Table(
    "manifest_references",
    metadata,
    sa.Column("repository_id", sa.Integer, primary_key=True),
    sa.Column("manifest_digest", sa.String(200), primary_key=True),
    sa.Column("digest", sa.String(200), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("media_type", sa.String(255), nullable=True),
    sa.ForeignKeyConstraint(
        ["repository_id", "manifest_digest"],
        ["manifests.repository_id", "manifests.digest"],
        ondelete="CASCADE",
        name="fk_reference_manifest",
    ),
    sa.Index("ix_manifest_references_digest", "repository_id", "digest"),
)

# a blob a repository fetched, or that its upstream confirmed, by itself (revision 0006)
blob_links = sa.Table(
    "blob_links",
    metadata,
    sa.Column(
        "repository_id",
        sa.Integer,
        sa.ForeignKey("repositories.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("digest", sa.String(200), primary_key=True),
)

tags = sa.Table(
    "tags",
    metadata,
    sa.Column(
        "repository_id",
        sa.Integer,
        sa.ForeignKey("repositories.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("tag", sa.String(128), primary_key=True),
    sa.Column("digest", sa.String(200), nullable=False),
    sa.Column("checked_at", UtcDateTime(), nullable=False),
)

# -- built-in secret vault (revision 0002) -------------------------------------------------------
vaults = sa.Table(
    "vaults",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(24), nullable=False),
    sa.Column("name_key", sa.String(24), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("name_key", name="uq_vault"),
)

vault_secrets = sa.Table(
    "vault_secrets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "vault_id",
        sa.Integer,
        sa.ForeignKey("vaults.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("name", sa.String(127), nullable=False),
    sa.Column("name_key", sa.String(127), nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("nonce", sa.LargeBinary, nullable=False),
    sa.Column("ciphertext", sa.LargeBinary, nullable=False),
    sa.Column("content_type", sa.String(255), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.UniqueConstraint("vault_id", "name_key", "version", name="uq_vault_secret_version"),
)

vault_grants = sa.Table(
    "vault_grants",
    metadata,
    sa.Column(
        "vault_id",
        sa.Integer,
        sa.ForeignKey("vaults.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("principal_id", sa.String(100), primary_key=True),
    sa.Column("permission", sa.String(20), primary_key=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
)
