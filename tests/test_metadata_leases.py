"""Conformance suite of leases (:class:`SqlLeases`, ``ResourceTransaction.acquire_lease``) and
of :meth:`SqlOperationStore.claimable`, which finds in-progress operations nobody holds.

Every test runs on a fresh SQLite file and on a fresh PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from entrepot.metadata.database import Database
from entrepot.metadata.leases import SqlLeases
from entrepot.metadata.operations import SqlOperationStore, operation_lease_key
from entrepot.metadata.protocols import Leases, OperationStore
from entrepot.metadata.records import LeaseRecord, OperationState
from entrepot.metadata.resources import SqlResourceStore
from tests.metadata_support import NOW, assert_aware_utc, opened, operation, store_url


@pytest.fixture
def db_url(database_url: str, tmp_path: Path) -> str:
    return store_url(database_url, tmp_path)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    async with opened(db_url) as database:
        yield database


@pytest.fixture
def store(db: Database) -> SqlResourceStore:
    return SqlResourceStore(db)


@pytest.fixture
def leases(db: Database) -> SqlLeases:
    return SqlLeases(db)


def _in(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


def test_sql_implementations_satisfy_the_protocols(db: Database) -> None:
    typed_leases: Leases = SqlLeases(db)
    typed_ops: OperationStore = SqlOperationStore(db)
    assert typed_leases is not None and typed_ops is not None


# -- SqlLeases --------------------------------------------------------------------------------
async def test_acquire_renew_release(leases: SqlLeases) -> None:
    assert await leases.holder("k") is None
    assert await leases.acquire("k", "owner-a", 60)
    held = await leases.holder("k")
    assert held is not None and (held.key, held.owner) == ("k", "owner-a")
    assert_aware_utc(held.expires)
    assert _in(55) < held.expires <= _in(60)

    # Held and unexpired: another owner can neither take, renew nor release it.
    assert not await leases.acquire("k", "owner-b", 60)
    assert not await leases.renew("k", "owner-b", 600)
    await leases.release("k", "owner-b")
    assert await leases.holder("k") == held

    # The holder acquires again (a renewal) or renews.
    assert await leases.acquire("k", "owner-a", 120)
    again = await leases.holder("k")
    assert again is not None and again.owner == "owner-a" and again.expires > held.expires
    assert await leases.renew("k", "owner-a", 300)
    renewed = await leases.holder("k")
    assert renewed is not None and _in(295) < renewed.expires <= _in(300)

    # Keys are independent.
    assert await leases.acquire("other", "owner-b", 60)
    assert await leases.holder("k") == renewed

    await leases.release("k", "owner-a")
    assert await leases.holder("k") is None
    assert not await leases.renew("k", "owner-a", 60)  # renewing a released lease fails
    assert await leases.holder("k") is None
    assert await leases.acquire("k", "owner-b", 60)  # free: anyone takes it
    taken = await leases.holder("k")
    assert taken is not None and taken.owner == "owner-b"


async def test_expired_lease_is_taken_over_and_purged(leases: SqlLeases) -> None:
    assert await leases.acquire("k", "owner-a", -1)  # already expired
    expired = await leases.holder("k")
    assert expired is not None and expired.owner == "owner-a"  # expired leases stay ...
    assert expired.expires < _in(0)
    assert await leases.renew("k", "owner-a", -1)  # ... and their holder may still renew them
    assert await leases.acquire("k", "owner-b", 60)  # ... until another owner takes over
    taken = await leases.holder("k")
    assert taken is not None and taken.owner == "owner-b"
    assert not await leases.acquire("k", "owner-a", 60)
    assert not await leases.renew("k", "owner-a", 60)  # the old holder lost it

    assert await leases.acquire("gone-1", "x", -1)
    assert await leases.acquire("gone-2", "y", -5)
    assert await leases.acquire("live", "z", 60)
    assert await leases.purge_expired() == 2
    assert await leases.holder("gone-1") is None
    assert await leases.holder("gone-2") is None
    assert await leases.holder("live") is not None
    assert await leases.holder("k") is not None
    assert await leases.purge_expired() == 0


async def test_leases_in_a_write_transaction(store: SqlResourceStore, leases: SqlLeases) -> None:
    async with store.write() as tx:
        assert await tx.acquire_lease("k", "owner-a", _in(60))
        assert not await tx.acquire_lease("k", "owner-b", _in(60))  # same transaction, held
        assert await tx.acquire_lease("k", "owner-a", _in(-1))  # the holder renews (to the past)
    held = await leases.holder("k")
    assert held is not None and held.owner == "owner-a" and held.expires < _in(0)
    async with store.write() as tx:
        assert await tx.acquire_lease("k", "owner-b", _in(60))  # expired: taken over
        assert not await tx.acquire_lease("k", "owner-a", _in(60))
    assert not await leases.acquire("k", "owner-a", 60)  # both paths see one lease table
    async with store.write() as tx:
        await tx.release_lease("k", "owner-a")  # not the holder: nothing happens
    still = await leases.holder("k")
    assert still is not None and still.owner == "owner-b"
    async with store.write() as tx:
        await tx.release_lease("k", "owner-b")
    assert await leases.holder("k") is None

    with pytest.raises(RuntimeError):  # a lease taken in a failed transaction is not taken
        async with store.write() as tx:
            assert await tx.acquire_lease("k", "owner-c", _in(60))
            raise RuntimeError
    assert await leases.holder("k") is None


async def test_concurrent_acquires_across_two_databases_grant_one(
    db: Database, db_url: str
) -> None:
    async with opened(db_url) as other:
        pools = [SqlLeases(db), SqlLeases(other)]
        results = await asyncio.gather(
            *(pools[i % 2].acquire("contended", f"owner-{i}", 60) for i in range(20))
        )
        assert results.count(True) == 1
        winner = f"owner-{results.index(True)}"
        holder = await pools[1].holder("contended")
        assert holder is not None and holder.owner == winner
        # Once it expires, concurrent takeovers again grant exactly one.
        assert await pools[0].renew("contended", winner, -1)
        results = await asyncio.gather(
            *(pools[i % 2].acquire("contended", f"next-{i}", 60) for i in range(20))
        )
        assert results.count(True) == 1
        holder = await pools[0].holder("contended")
        assert holder is not None and holder.owner == f"next-{results.index(True)}"


# -- operations and their leases --------------------------------------------------------------
async def test_operation_lease_claim_and_finish(
    store: SqlResourceStore, db: Database, leases: SqlLeases
) -> None:
    ops = SqlOperationStore(db)
    key = operation_lease_key("op-1")
    assert key != operation_lease_key("op-2")
    async with store.write() as tx:
        await tx.insert_operation(operation("op-1", registry_id=7, row_id=42))
    assert await ops.claimable() == ["op-1"]  # in progress and nobody holds it

    # The accepting transaction may take the lease together with the operation.
    async with store.write() as tx:
        await tx.insert_operation(operation("op-2", NOW + dt.timedelta(seconds=1)))
        assert await tx.acquire_lease(operation_lease_key("op-2"), "owner-a", _in(60))
    assert await ops.claimable() == ["op-1"]

    async with store.write() as tx:
        assert await tx.acquire_lease(key, "owner-a", _in(60))
    assert await ops.claimable() == []
    async with store.write() as tx:
        # The lease is held and unexpired: another owner cannot take it.
        assert not await tx.acquire_lease(key, "owner-b", _in(60))
        # The holder renews it (here: to a time already past).
        assert await tx.acquire_lease(key, "owner-a", _in(-1))
    held = await leases.holder(key)
    assert held is not None and held.owner == "owner-a"
    assert await ops.claimable() == ["op-1"]  # expired: claimable again
    # After expiry another owner takes over (here through SqlLeases).
    assert await leases.acquire(key, "owner-b", 60)
    assert not await leases.acquire(key, "owner-a", 60)
    async with store.write() as tx:
        assert not await tx.acquire_lease(key, "owner-a", _in(60))
    assert await ops.claimable() == []
    taken = await leases.holder(key)
    assert taken is not None and taken.owner == "owner-b"

    # The outcome, the end of the operation and the release commit together.
    async with store.write() as tx:
        await tx.finish_operation("op-1", OperationState.FAILED, "CredentialSetInUse", "in use")
        await tx.release_lease(key, "owner-b")
    assert await leases.holder(key) is None
    done = await ops.get("op-1")
    assert done is not None and done.status is OperationState.FAILED
    assert done.ended_at is not None
    # A finished operation is never claimable, leased or not.
    assert await ops.claimable() == []
    assert await leases.acquire(key, "owner-c", -1)
    assert await ops.claimable() == []


async def test_claimable_operations_order_and_filter(
    store: SqlResourceStore, db: Database, leases: SqlLeases
) -> None:
    day = dt.timedelta(days=1)
    async with store.write() as tx:
        await tx.insert_operation(operation("op-c", NOW + 3 * day))
        await tx.insert_operation(operation("op-a", NOW + 1 * day))
        await tx.insert_operation(operation("op-b", NOW + 2 * day))
        await tx.insert_operation(operation("op-leased", NOW))
        await tx.insert_operation(operation("op-expired", NOW + 4 * day))
        await tx.insert_operation(operation("op-done", NOW))
        await tx.insert_operation(operation("op-done-leased", NOW))
        await tx.finish_operation("op-done", OperationState.SUCCEEDED)
        await tx.finish_operation("op-done-leased", OperationState.CANCELED)
        assert await tx.acquire_lease(operation_lease_key("op-leased"), "someone", _in(300))
        assert await tx.acquire_lease(operation_lease_key("op-expired"), "someone", _in(-1))
        assert await tx.acquire_lease(operation_lease_key("op-done-leased"), "x", _in(-1))
        # A lease on something else with the operation's bare id does not count.
        assert await tx.acquire_lease("op-a", "someone", _in(300))
    ops = SqlOperationStore(db)
    assert await ops.claimable() == ["op-a", "op-b", "op-c", "op-expired"]
    assert await ops.claimable(limit=2) == ["op-a", "op-b"]
    # Releasing the live lease makes its operation claimable, in started order.
    await leases.release(operation_lease_key("op-leased"), "someone")
    assert await ops.claimable() == ["op-leased", "op-a", "op-b", "op-c", "op-expired"]


async def test_lease_records_are_aware_utc_and_equal_to_what_was_written(
    store: SqlResourceStore, leases: SqlLeases
) -> None:
    until = dt.datetime(2099, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    async with store.write() as tx:
        assert await tx.acquire_lease("k", "owner", until)
    held = await leases.holder("k")
    assert held == LeaseRecord("k", "owner", until)
    assert held is not None
    assert_aware_utc(held.expires)
