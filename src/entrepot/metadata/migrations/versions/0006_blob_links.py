"""``blob_links``: the blobs a repository fetched (or its upstream confirmed) by themselves.

A repository serves a blob from the shared store only when the blob is linked to it, as
distribution does: a manifest of the repository references it (``manifest_references``) or
a row here says the repository's upstream had it. Existing repositories start with no rows:
their blobs stay linked through their manifests.

Frozen: this file changes the schema as it was at revision 0006. Later changes are later
revisions, never edits here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "blob_links",
        sa.Column(
            "repository_id",
            sa.Integer,
            sa.ForeignKey("repositories.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("digest", sa.String(200), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("blob_links")
