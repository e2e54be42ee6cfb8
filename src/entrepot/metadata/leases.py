"""Leases: a named, expiring claim that one owner holds across processes and replicas.

What callers may rely on:

* :meth:`SqlLeases.acquire` is one conditional statement: it succeeds when nobody holds the key,
  when the caller already holds it (then it renews), or when the holder's lease has expired. Of
  any number of concurrent callers on any number of processes, exactly one gets a free key.
* :meth:`SqlLeases.renew` succeeds only for the current holder; :meth:`SqlLeases.release` only
  removes the caller's own lease. An expired lease stays until someone else acquires it or
  :meth:`SqlLeases.purge_expired` removes it.
* :meth:`SqlLeases.take_over` hands a lease from a given holder to the caller, whether or not
  it expired, in one conditional statement: for a caller that knows the holder is gone (a
  process of its own host that died), so it need not wait for the expiry. Of concurrent
  callers taking over the same holder's lease exactly one succeeds.
* None of these take the serialised write lock of :meth:`Database.write`.
* Clocks: expiry compares the callers' clocks; keep replicas' clocks in sync (NTP) and leases
  several seconds long.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from entrepot.metadata import schema as t
from entrepot.metadata.database import Database, as_utc, utcnow
from entrepot.metadata.records import LeaseRecord

__all__ = ["SqlLeases", "acquire_lease", "release_lease"]


async def acquire_lease(conn: AsyncConnection, key: str, owner: str, until: dt.datetime) -> bool:
    """Take or renew ``key`` for ``owner`` until ``until`` on ``conn``; ``False`` if held."""
    insert: Any = (
        sqlite.insert(t.leases) if conn.dialect.name == "sqlite" else postgresql.insert(t.leases)
    )
    statement = insert.values(key=key, owner=owner, expires=until)
    statement = statement.on_conflict_do_update(
        index_elements=[t.leases.c.key],
        set_={"owner": statement.excluded.owner, "expires": statement.excluded.expires},
        where=sa.or_(t.leases.c.owner == owner, t.leases.c.expires < utcnow()),
    )
    return int((await conn.execute(statement)).rowcount) == 1


async def release_lease(conn: AsyncConnection, key: str, owner: str) -> None:
    l = t.leases.c  # noqa: E741
    await conn.execute(sa.delete(t.leases).where(l.key == key, l.owner == owner))


class SqlLeases:
    """The :class:`Leases` over a :class:`Database`; each call is its own short transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def acquire(self, key: str, owner: str, seconds: float) -> bool:
        """Hold ``key`` for ``seconds`` from now; ``False`` if another owner holds it."""
        async with self.db.transaction() as conn:
            return await acquire_lease(conn, key, owner, _until(seconds))

    async def renew(self, key: str, owner: str, seconds: float) -> bool:
        """Extend the caller's lease; ``False`` if it is not (any more) the caller's."""
        l = t.leases.c  # noqa: E741
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.update(t.leases)
                .where(l.key == key, l.owner == owner)
                .values(expires=_until(seconds))
            )
            return int(result.rowcount) == 1

    async def take_over(self, key: str, owner: str, previous: str, seconds: float) -> bool:
        """Hold ``key`` for ``seconds`` from now if ``previous`` holds it (expired or not);
        ``False`` if someone else does (or nobody: then :meth:`acquire` it)."""
        l = t.leases.c  # noqa: E741
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.update(t.leases)
                .where(l.key == key, l.owner == previous)
                .values(owner=owner, expires=_until(seconds))
            )
            return int(result.rowcount) == 1

    async def release(self, key: str, owner: str) -> None:
        """Give up the caller's lease (nothing happens if another owner holds it)."""
        async with self.db.transaction() as conn:
            await release_lease(conn, key, owner)

    async def holder(self, key: str) -> LeaseRecord | None:
        """The current lease of ``key`` (possibly expired), or ``None``."""
        async with self.db.read() as conn:
            row = (
                (await conn.execute(sa.select(t.leases).where(t.leases.c.key == key)))
                .mappings()
                .first()
            )
        if row is None:
            return None
        expires = as_utc(row["expires"])
        assert expires is not None
        return LeaseRecord(row["key"], row["owner"], expires)

    async def purge_expired(self) -> int:
        """Remove every expired lease; return how many."""
        async with self.db.transaction() as conn:
            result = await conn.execute(sa.delete(t.leases).where(t.leases.c.expires < utcnow()))
            return int(result.rowcount)


def _until(seconds: float) -> dt.datetime:
    return utcnow() + dt.timedelta(seconds=seconds)
