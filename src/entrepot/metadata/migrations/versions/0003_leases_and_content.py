"""Generic leases (operations hold theirs here now) and the content index of the cache.

Frozen: this file changes the schema as it was at revision 0003. Later changes are later
revisions, never edits here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
    )
    # An operation left in progress keeps no lease: the sweeper of the next process claims it.
    with op.batch_alter_table("operations") as batch:
        batch.drop_column("lease_owner")
        batch.drop_column("lease_expires")
    op.create_table(
        "repositories",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "registry_id",
            sa.Integer,
            sa.ForeignKey("registries.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("registry_id", "name", name="uq_repository"),
    )
    op.create_table(
        "blobs",
        sa.Column("digest", sa.String(200), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("media_type", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_access", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "manifests",
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
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_access", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_manifests_subject", "manifests", ["repository_id", "subject"])
    op.create_table(
        "manifest_references",
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
    )
    op.create_index(
        "ix_manifest_references_digest", "manifest_references", ["repository_id", "digest"]
    )
    op.create_table(
        "tags",
        sa.Column(
            "repository_id",
            sa.Integer,
            sa.ForeignKey("repositories.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("tag", sa.String(128), primary_key=True),
        sa.Column("digest", sa.String(200), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for table in ("tags", "manifest_references", "manifests", "blobs", "repositories", "leases"):
        op.drop_table(table)
    with op.batch_alter_table("operations") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(64), nullable=True))
        batch.add_column(sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True))
