"""The operation runner across processes: a runner that lost its lease never records an outcome.

Two :class:`OperationRunner` instances on one database stand for two server processes (each with
its own owner id), on SQLite and PostgreSQL. Leases are made short so that a takeover happens in
the test's time.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from entrepot.management.children import StateHandler
from entrepot.management.operations import OperationRunner
from entrepot.metadata.database import Database
from entrepot.metadata.leases import SqlLeases
from entrepot.metadata.operations import SqlOperationStore
from entrepot.metadata.protocols import ResourceTx
from entrepot.metadata.records import (
    Action,
    Changes,
    OperationRecord,
    OperationState,
    ResourceKind,
    State,
)
from entrepot.metadata.resources import SqlResourceStore
from tests.metadata_support import cache_rule, opened, registry, store_url

LEASE = 0.3
KIND = ResourceKind.CACHE_RULE


class CountingHandler(StateHandler):
    """The cache-rule operation, counting how often each operation is applied."""

    def __init__(self) -> None:
        super().__init__(KIND)
        self.applied: Counter[str] = Counter()

    async def apply(
        self, tx: ResourceTx, op: OperationRecord, prepared: Any
    ) -> tuple[OperationState, Any]:
        self.applied[op.id] += 1
        return await super().apply(tx, op, prepared)


def runner(db: Database, handler: CountingHandler) -> OperationRunner:
    r = OperationRunner(
        SqlResourceStore(db),
        SqlOperationStore(db),
        SqlLeases(db),
        lease_seconds=LEASE,
        sweep_seconds=0.1,
    )
    r.handlers = {KIND: handler}
    return r


async def new_rule(db: Database, name: str) -> tuple[int, int]:
    async with SqlResourceStore(db).write() as tx:
        registry_id = await tx.insert_registry(registry(f"reg-{name}"))
        rule_id = await tx.insert_cache_rule(cache_rule(registry_id, name, f"t/{name}"))
    return registry_id, rule_id


async def accept(r: OperationRunner, registry_id: int, rule_id: int, action: Action) -> str:
    async with r.resources.write() as tx:
        return await r.accept(tx, KIND, f"/rules/{rule_id}", registry_id, rule_id, action)


async def test_a_runner_whose_lease_was_taken_over_records_nothing(
    database_url: str, tmp_path: Path
) -> None:
    async with opened(store_url(database_url, tmp_path)) as db:
        handler = CountingHandler()
        first, second = runner(db, handler), runner(db, handler)
        registry_id, rule_id = await new_rule(db, "rule-stale")
        op_id = await accept(first, registry_id, rule_id, Action.CREATE)
        await asyncio.sleep(LEASE + 0.1)  # the first process stalls; its lease expires

        await second._run(op_id)  # the second takes over and finishes the operation
        done = await SqlOperationStore(db).get(op_id)
        assert done is not None and done.status is OperationState.SUCCEEDED
        async with SqlResourceStore(db).write() as tx:  # then a delete is accepted
            await tx.update(KIND, rule_id, Changes(state=State.DELETING))

        await first._run(op_id)  # the stalled process wakes up with the operation it accepted

        assert handler.applied[op_id] == 1
        async with SqlResourceStore(db).read() as tx:
            rule = await tx.by_id(KIND, rule_id)
            assert rule is not None and rule.state is State.DELETING  # not set back
            after = await tx.operation(op_id)
        assert after is not None and after.ended_at == done.ended_at
        assert after.status is OperationState.SUCCEEDED


async def test_racing_runners_apply_each_operation_once(database_url: str, tmp_path: Path) -> None:
    async with opened(store_url(database_url, tmp_path)) as db:
        handler = CountingHandler()
        runners = [runner(db, handler), runner(db, handler)]
        ops = []
        for i in range(12):
            registry_id, rule_id = await new_rule(db, f"rule-race-{i}")
            ops.append(await accept(runners[i % 2], registry_id, rule_id, Action.CREATE))
        await asyncio.sleep(LEASE + 0.1)  # every lease has expired: both may claim each one
        await asyncio.gather(*(r._run(op_id) for op_id in ops for r in runners))
        await asyncio.gather(*(r._run(op_id) for op_id in ops for r in reversed(runners)))
        assert all(handler.applied[op_id] == 1 for op_id in ops), handler.applied
        for op_id in ops:
            op = await SqlOperationStore(db).get(op_id)
            assert op is not None and op.status is OperationState.SUCCEEDED
        assert await SqlOperationStore(db).claimable() == []
