"""Built-in secret vault: vaults, encrypted secret versions and per-principal grants.

Frozen: this file creates the tables as they were at revision 0002. Later changes are later
revisions, never edits here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "vaults",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(24), nullable=False),
        sa.Column("name_key", sa.String(24), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("name_key", name="uq_vault"),
    )
    op.create_table(
        "vault_secrets",
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
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.UniqueConstraint("vault_id", "name_key", "version", name="uq_vault_secret_version"),
    )
    op.create_table(
        "vault_grants",
        sa.Column(
            "vault_id",
            sa.Integer,
            sa.ForeignKey("vaults.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("principal_id", sa.String(100), primary_key=True),
        sa.Column("permission", sa.String(20), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for table in ("vault_grants", "vault_secrets", "vaults"):
        op.drop_table(table)
