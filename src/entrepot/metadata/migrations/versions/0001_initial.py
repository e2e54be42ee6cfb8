"""Initial schema: settings, admin tokens, registries, credential sets, cache rules, operations.

Frozen: this file creates the tables as they were at revision 0001. Later changes are later
revisions, never edits here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def _audit() -> list[sa.Column[object]]:
    return [
        sa.Column("provisioning_state", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("modified_by", sa.String(200), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "settings",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "admin_tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "registries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subscription", sa.String(64), nullable=False),
        sa.Column("resource_group", sa.String(90), nullable=False),
        sa.Column("resource_group_key", sa.String(90), nullable=False),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("name_key", sa.String(50), nullable=False),
        sa.Column("location", sa.String(100), nullable=False),
        sa.Column("sku", sa.String(50), nullable=False),
        sa.Column("tags", sa.Text, nullable=False, server_default="{}"),
        *_audit(),
        sa.UniqueConstraint("subscription", "resource_group_key", "name_key", name="uq_registry"),
    )
    op.create_table(
        "credential_sets",
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
        *_audit(),
        sa.UniqueConstraint("registry_id", "name_key", name="uq_credential_set"),
    )
    op.create_table(
        "cache_rules",
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
        *_audit(),
        sa.UniqueConstraint("registry_id", "name_key", name="uq_cache_rule"),
    )
    op.create_index("ix_cache_rules_target", "cache_rules", ["registry_id", "target_path"])
    op.create_index("ix_cache_rules_credential_set", "cache_rules", ["credential_set_id"])
    op.create_table(
        "operations",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column("resource_id", sa.String(1000), nullable=False),
        sa.Column("resource_kind", sa.String(20), nullable=False),
        sa.Column("registry_id", sa.Integer, nullable=True),
        sa.Column("row_id", sa.Integer, nullable=True),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error_code", sa.String(100), nullable=True),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_operations_status", "operations", ["status"])


def downgrade() -> None:
    for table in (
        "operations",
        "cache_rules",
        "credential_sets",
        "registries",
        "admin_tokens",
        "settings",
    ):
        op.drop_table(table)
