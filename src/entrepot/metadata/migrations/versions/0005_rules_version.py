"""Each registry gets ``rules_version``, bumped in the transaction of every change to its rules.

The registry face keeps each registry's cache rules in memory and revalidates them with one
point read of this number (:mod:`entrepot.proxy.directory`), so a warm pull costs no query of
the rules. Existing registries start at 0.

Frozen: this file changes the schema as it was at revision 0005. Later changes are later
revisions, never edits here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    with op.batch_alter_table("registries") as batch:
        batch.add_column(sa.Column("rules_version", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("registries") as batch:
        batch.drop_column("rules_version")
