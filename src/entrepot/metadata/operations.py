"""Long-running operation records.

An operation is inserted in the same transaction as the change it carries out
(:meth:`ResourceTransaction.insert_operation`), and finished in the transaction that applies its
outcome (:meth:`ResourceTransaction.finish_operation`). Who runs it is a lease
(:data:`operation_lease_key`) in the leases table: an in-progress operation whose lease is free
or expired is :meth:`SqlOperationStore.claimable`.
"""

from __future__ import annotations

import sqlalchemy as sa

from entrepot.metadata import schema as t
from entrepot.metadata.database import Database, utcnow
from entrepot.metadata.records import OperationRecord, OperationState
from entrepot.metadata.resources import _GET_OPERATION, operation_record

__all__ = ["SqlOperationStore", "operation_lease_key"]

LEASE_PREFIX = "operation:"


def operation_lease_key(op_id: str) -> str:
    """The lease that the runner of operation ``op_id`` holds."""
    return LEASE_PREFIX + op_id


class SqlOperationStore:
    """The :class:`OperationStore` over a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, op_id: str) -> OperationRecord | None:
        """The operation ``op_id`` as committed now (a point read), or ``None``."""
        row = await self.db.fetch_one(_GET_OPERATION, id=op_id)
        return None if row is None else operation_record(row)

    async def claimable(self, limit: int = 100) -> list[str]:
        """Ids of in-progress operations whose lease is free or expired, oldest first."""
        o, lease = t.operations.c, t.leases.c
        query = (
            sa.select(o.id)
            .select_from(
                t.operations.outerjoin(t.leases, lease.key == sa.literal(LEASE_PREFIX) + o.id)
            )
            .where(
                o.status == OperationState.IN_PROGRESS.value,
                sa.or_(lease.key.is_(None), lease.expires < utcnow()),
            )
            .order_by(o.started_at)
            .limit(limit)
        )
        async with self.db.read() as conn:
            return [str(x) for x in (await conn.execute(query)).scalars()]
