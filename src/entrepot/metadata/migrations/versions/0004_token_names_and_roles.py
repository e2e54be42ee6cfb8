"""API tokens get a unique name, a role (``admin`` | ``pull``) and who issued them.

Tokens that exist already are admin tokens; the oldest is named ``admin`` (it is the one
``entrepot serve`` created on its first start and wrote to ``<data_dir>/admin-token``), any
other ``admin-<id>``. Their secrets do not change: they keep working.

Frozen: this file changes the schema as it was at revision 0004. Later changes are later
revisions, never edits here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"

_NEW_COLUMNS = (
    ("name", sa.String(63)),
    ("name_key", sa.String(63)),
    ("role", sa.String(20)),
    ("created_by", sa.String(200)),
)


def upgrade() -> None:
    with op.batch_alter_table("admin_tokens") as batch:
        for name, type_ in _NEW_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
    tokens = sa.table(
        "admin_tokens",
        sa.column("id", sa.Integer),
        *(sa.column(name, type_) for name, type_ in _NEW_COLUMNS),
    )
    bind = op.get_bind()
    ids = [int(row[0]) for row in bind.execute(sa.select(tokens.c.id).order_by(tokens.c.id))]
    for index, token_id in enumerate(ids):
        name = "admin" if index == 0 else f"admin-{token_id}"
        bind.execute(
            sa.update(tokens)
            .where(tokens.c.id == token_id)
            .values(name=name, name_key=name, role="admin", created_by="entrepot")
        )
    with op.batch_alter_table("admin_tokens") as batch:
        for name, type_ in _NEW_COLUMNS:
            batch.alter_column(name, existing_type=type_, nullable=False)
        batch.create_unique_constraint("uq_token_name", ["name_key"])


def downgrade() -> None:
    with op.batch_alter_table("admin_tokens") as batch:
        batch.drop_constraint("uq_token_name", type_="unique")
        for name, _type in reversed(_NEW_COLUMNS):
            batch.drop_column(name)
