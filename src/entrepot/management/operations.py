"""The operation runner: claim, run, renew, finish and sweep long-running operations.

What callers may rely on:

* An operation is accepted (:meth:`OperationRunner.accept`) inside the transaction that makes
  its change, and that transaction also takes the operation's lease for this process, so the
  accepting process runs it first without a race.
* Exactly one process at a time runs an operation: the holder of its lease
  (:func:`entrepot.metadata.operations.operation_lease_key`). The lease is renewed while the work
  runs (outside resource transactions, so renewals never queue behind management writes); the
  holder's check of the lease *and that the operation is still in progress*, the resource change
  and the end of the operation commit in one transaction. A runner whose lease was taken over
  never records anything for an operation another runner has ended.
* An operation whose runner died (its lease expired) is claimed by the sweeper of any process,
  every ``sweep_seconds``, and run again from the start: handlers are idempotent.
* A handler error ends the operation ``Failed`` with ``InternalError``; it never stops the
  sweeper.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import uuid
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

from entrepot import errors as e
from entrepot.metadata.database import utcnow
from entrepot.metadata.operations import operation_lease_key
from entrepot.metadata.protocols import Leases, OperationStore, ResourceStore, ResourceTx
from entrepot.metadata.records import Action, OperationRecord, OperationState, ResourceKind

__all__ = ["OperationHandler", "OperationRunner"]

log = logging.getLogger("entrepot.management.operations")
T = TypeVar("T")


class OperationHandler(Protocol):
    """What an operation of one resource kind does; every step is idempotent."""

    async def prepare(self, op: OperationRecord) -> Any:
        """Work outside any transaction (e.g. measuring credential health); may be slow."""
        ...

    async def apply(
        self, tx: ResourceTx, op: OperationRecord, prepared: Any
    ) -> tuple[OperationState, e.EntrepotError | None]:
        """The database part of the operation, inside the finishing transaction."""
        ...

    async def failed(self, tx: ResourceTx, op: OperationRecord) -> None:
        """Record on the resource that ``op`` did not succeed."""
        ...


class OperationRunner:
    """Runs the operations of every resource kind through their handlers."""

    def __init__(
        self,
        resources: ResourceStore,
        operations: OperationStore,
        leases: Leases,
        *,
        lease_seconds: float,
        sweep_seconds: float,
        min_seconds: float = 0.0,
    ) -> None:
        self.resources = resources
        self.operations = operations
        self.leases = leases
        self.lease_seconds = lease_seconds
        self.sweep_seconds = sweep_seconds
        self.min_seconds = min_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.handlers: dict[ResourceKind, OperationHandler] = {}
        self._fresh: dict[str, OperationRecord] = {}  # accepted here, lease held
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="operation-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- accepting ------------------------------------------------------------------------------
    async def accept(
        self,
        tx: ResourceTx,
        kind: ResourceKind,
        resource_id: str,
        registry_id: int | None,
        row_id: int,
        action: Action,
    ) -> str:
        """Record a new operation in ``tx`` with this process holding its lease; its id."""
        op = OperationRecord(
            id=f"{kind.value.lower()}-{uuid.uuid4()}",
            resource_id=resource_id,
            kind=kind,
            registry_id=registry_id,
            row_id=row_id,
            action=action,
            status=OperationState.IN_PROGRESS,
            started_at=utcnow(),
        )
        await tx.insert_operation(op)
        await tx.acquire_lease(operation_lease_key(op.id), self.owner, self._until())
        self._fresh[op.id] = op
        return op.id

    def run_soon(self, op_id: str) -> asyncio.Task[None]:
        """Run ``op_id`` in the background (once per process at a time)."""
        for task in self._tasks:
            if task.get_name() == f"operation:{op_id}":
                return task
        task = asyncio.create_task(self._run(op_id), name=f"operation:{op_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def wait_briefly(self, op_id: str, seconds: float) -> None:
        """Start ``op_id`` and wait up to ``seconds`` for it (fast operations finish before the
        answer, so clients need not poll)."""
        task = self.run_soon(op_id)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), timeout=seconds)

    # -- running --------------------------------------------------------------------------------
    async def _claim(self, tx: ResourceTx, op_id: str) -> OperationRecord | None:
        """Take or renew ``op_id``'s lease in ``tx``; the operation if it is still in progress.

        ``None`` when another process holds the lease or the operation has ended (then this
        process must not touch it: another runner finished it, and its resource may have moved
        on). Checked in the transaction that applies the outcome, so the two cannot interleave.
        """
        key = operation_lease_key(op_id)
        if not await tx.acquire_lease(key, self.owner, self._until()):
            return None
        op = await tx.operation(op_id)
        if op is None or op.status is not OperationState.IN_PROGRESS:
            await tx.release_lease(key, self.owner)
            return None
        return op

    async def _renew(self, op_id: str) -> bool:
        """Extend this process's lease outside any resource transaction (never queued behind
        management writes); ``False`` when the lease is no longer this process's."""
        return await self.leases.renew(operation_lease_key(op_id), self.owner, self.lease_seconds)

    async def _run(self, op_id: str) -> None:
        op = self._fresh.pop(op_id, None)
        if op is None:
            async with self.resources.write() as tx:
                op = await self._claim(tx, op_id)
            if op is None:
                return
        ready_at = op.started_at + dt.timedelta(seconds=self.min_seconds)
        while (wait := (ready_at - utcnow()).total_seconds()) > 0:
            await asyncio.sleep(min(wait, self.lease_seconds / 3))
            if not await self._renew(op_id):
                return
        handler = self.handlers[op.kind]
        try:
            prepared = await self._holding_lease(op_id, handler.prepare(op))
            async with self.resources.write() as tx:
                if await self._claim(tx, op_id) is None:
                    return
                status, error = await handler.apply(tx, op, prepared)
                await self._finish(tx, handler, op, status, error)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("operation %s failed unexpectedly", op_id)
            status = OperationState.FAILED
            error = e.InternalError("The operation failed unexpectedly.")
            async with self.resources.write() as tx:
                if await self._claim(tx, op_id) is None:
                    return
                await self._finish(tx, handler, op, status, error)
        log.info("operation %s %s %s: %s", op_id, op.action.value, op.resource_id, status.value)

    async def _finish(
        self,
        tx: ResourceTx,
        handler: OperationHandler,
        op: OperationRecord,
        status: OperationState,
        error: e.EntrepotError | None,
    ) -> None:
        if status is not OperationState.SUCCEEDED and op.action is not Action.DELETE:
            await handler.failed(tx, op)
        await tx.finish_operation(
            op.id, status, error.code if error else None, error.message if error else None
        )
        await tx.release_lease(operation_lease_key(op.id), self.owner)

    async def _holding_lease(self, op_id: str, work: Awaitable[T]) -> T:
        """Await ``work`` while renewing this process's lease on ``op_id``. Losing the lease
        does not stop the work: every step is idempotent, and only a runner that still holds
        the lease of an operation still in progress records the outcome (:meth:`_claim`)."""
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.lease_seconds / 3)
                if done:
                    return task.result()
                await self._renew(op_id)
        finally:
            if not task.done():
                task.cancel()

    async def _sweep_forever(self) -> None:
        while True:
            try:
                for op_id in await self.operations.claimable():
                    self.run_soon(op_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # a sweep failure must not stop later sweeps
                log.exception("operation sweep failed")
            await asyncio.sleep(self.sweep_seconds)

    def _until(self) -> dt.datetime:
        return utcnow() + dt.timedelta(seconds=self.lease_seconds)
