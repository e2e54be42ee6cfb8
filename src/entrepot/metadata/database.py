"""The database under every metadata store: SQLite (embedded default) or PostgreSQL.

What callers (the stores of this package) may rely on:

* :meth:`Database.open` creates the database if needed and migrates it to the newest revision,
  once across processes (an advisory lock on PostgreSQL, the write lock on SQLite).
* :meth:`Database.write` yields a connection inside one transaction that commits whole or not at
  all, **serialised with every other** ``write()`` of every process: read-check-write sequences
  (overlap checks, quotas) cannot interleave. On SQLite the write lock is taken at ``BEGIN``
  (``BEGIN IMMEDIATE``), on PostgreSQL by a transaction-scoped advisory lock.
* :meth:`Database.transaction` yields a transaction that is *not* serialised with the others:
  for conditional single statements (``INSERT ... ON CONFLICT``, ``UPDATE ... WHERE``) that are
  correct under concurrency by themselves (leases, the content index). On SQLite it still takes
  the write lock at ``BEGIN`` so that it never fails half-way on an upgrade.
* :meth:`Database.read` yields a read-only transaction on one snapshot of committed data:
  every statement in it sees the same data, and a write through it raises.
* :meth:`Database.fetch_one` / :meth:`Database.fetch_all` run a prebuilt :class:`PointQuery`
  without a transaction and without a thread hand-off per statement: on SQLite through a
  dedicated read-only connection in WAL mode used on the event loop (falling back to the pooled
  path when the database is momentarily locked), on PostgreSQL through ``asyncpg`` with
  prepared statements. They see every write committed before the call.
* Datetimes come back timezone-aware UTC on both databases.
* A SQLite database file is created mode 0600 (its directory, if missing, 0700), whatever the
  umask, and SQLite gives its ``-wal``/``-shm`` files the same mode; database files an older
  version left readable by others are narrowed to 0600 on open (with a warning).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import re
import sqlite3
import stat
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

__all__ = ["Database", "PointQuery", "Row", "as_utc", "escape_like", "utcnow"]

_MIGRATION_LOCK_ID = 0x656E747265706F74  # "entrepot"
_WRITE_LOCK_ID = _MIGRATION_LOCK_ID + 1  # one serialised writer at a time on PostgreSQL
_PARAM = re.compile(r"(?<!:):([a-z_][a-z0-9_]*)")
_SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")
log = logging.getLogger("entrepot.metadata")

Row = Mapping[Any, Any]


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


def as_utc(value: Any) -> dt.datetime | None:
    """A database datetime (aware, naive UTC, or SQLite's ISO text) as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        raise TypeError(f"not a datetime: {value!r}")
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def escape_like(text: str) -> str:
    """``text`` escaped for a ``LIKE ... ESCAPE '\\'`` pattern."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class PointQuery:
    """A read statement prepared once: SQL text with ``:name`` parameters, valid on both databases.

    Build these at import time; :meth:`Database.fetch_one` runs them without rebuilding
    anything. Boolean columns come back as ``0``/``1`` on SQLite: convert in the record mapper.
    Parameters are strings and numbers only: datetimes would be bound in the driver's format,
    not the stored one, and compare wrongly on SQLite (:meth:`Database.fetch_one` refuses them).
    """

    __slots__ = ("names", "postgres", "sql")

    def __init__(self, sql: str) -> None:
        self.sql = " ".join(sql.split())
        self.names: list[str] = []

        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.names:
                self.names.append(name)
            return f"${self.names.index(name) + 1}"

        self.postgres = _PARAM.sub(number, self.sql)

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]


class Database:
    """One database, its migrations, its transactions and its fast point reads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._engine: AsyncEngine | None = None
        self._write_lock = asyncio.Lock()
        self._sqlite_reader: sqlite3.Connection | None = None
        self._pg_pool: Any = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("Database.open() has not been called")
        return self._engine

    async def open(self) -> None:
        """Connect and migrate to the newest schema revision (nothing happens if already open)."""
        if self._engine is not None:
            return  # a second engine and pool would be left open: close() disposes only one
        if self.is_sqlite:
            path = self.url.split(":///", 1)[1]
            _private_sqlite_file(Path(path))
            engine = create_async_engine(
                self.url, connect_args={"timeout": 30}, pool_size=5, max_overflow=5
            )
            _sqlite_transactions(engine)
        else:
            # pre_ping: a connection the server dropped (restart, failover) is replaced, not used.
            engine = create_async_engine(
                self.url, pool_size=10, max_overflow=10, pool_pre_ping=True
            )
        self._engine = engine
        try:
            await self._migrate_and_connect_readers()
        except BaseException:
            await self.close()  # a failed open leaves nothing open, and may be retried
            raise

    async def _migrate_and_connect_readers(self) -> None:
        from entrepot.metadata.migrate import upgrade

        async with self.write() as conn:
            if not self.is_sqlite:
                await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_ID})"))
            await conn.run_sync(upgrade)
        if self.is_sqlite:
            self._sqlite_reader = _open_sqlite_reader(self.url.split(":///", 1)[1])
        else:
            import asyncpg

            plain = sa.engine.make_url(self.url).set(drivername="postgresql")
            self._pg_pool = await asyncpg.create_pool(
                plain.render_as_string(hide_password=False), min_size=1, max_size=10
            )

    async def close(self) -> None:
        if self._sqlite_reader is not None:
            self._sqlite_reader.close()
            self._sqlite_reader = None
        if self._pg_pool is not None:
            await self._pg_pool.close()
            self._pg_pool = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction on one snapshot of committed data; writes through it raise."""
        async with self.engine.connect() as conn:
            if self.is_sqlite:  # a deferred BEGIN in WAL mode reads one snapshot already
                conn = await conn.execution_options(sqlite_readonly=True)
            else:  # READ COMMITTED would give every statement a newer snapshot
                conn = await conn.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        if self.is_sqlite:
            async with self._write_lock, self.engine.connect() as conn:
                conn = await conn.execution_options(sqlite_immediate=True)
                async with conn.begin():
                    yield conn
        else:
            # Writers queue in-process, then across processes on a transaction-scoped advisory
            # lock, so read-check-write transactions never interleave.
            async with self._write_lock, self.engine.begin() as conn:
                await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_WRITE_LOCK_ID})"))
                yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            if self.is_sqlite:
                conn = await conn.execution_options(sqlite_immediate=True)
            async with conn.begin():
                yield conn

    async def fetch_one(self, query: PointQuery, **params: Any) -> Row | None:
        """The first row of ``query`` (a mapping by column name), or ``None``."""
        rows = await self._fetch(query, params, one=True)
        return rows[0] if rows else None

    async def fetch_all(self, query: PointQuery, **params: Any) -> list[Row]:
        """Every row of ``query``; meant for small results (a handful of rows)."""
        return await self._fetch(query, params, one=False)

    async def _fetch(self, query: PointQuery, params: dict[str, Any], *, one: bool) -> list[Row]:
        if any(isinstance(v, dt.datetime) for v in params.values()):
            raise TypeError("point queries take strings and numbers, not datetimes")
        reader = self._sqlite_reader
        if reader is not None:
            try:
                cursor = reader.execute(query.sql, params)
                rows = [cursor.fetchone()] if one else cursor.fetchall()
                return [dict(r) for r in rows if r is not None]
            except sqlite3.OperationalError:
                pass  # locked for a moment (a checkpoint, a recovery): take the pooled path
        elif self._pg_pool is not None:
            import asyncpg

            dropped = (
                asyncpg.PostgresConnectionError,
                asyncpg.exceptions.OperatorInterventionError,
                asyncpg.InterfaceError,
                asyncpg.exceptions.InternalClientError,
                OSError,
            )
            for attempt in (1, 2):
                try:
                    async with self._pg_pool.acquire() as conn:
                        args = query.args(params)
                        if one:
                            record = await conn.fetchrow(query.postgres, *args)
                            return [] if record is None else [dict(record)]
                        return [dict(r) for r in await conn.fetch(query.postgres, *args)]
                except dropped:
                    # The server dropped connections (restart, failover, termination): every
                    # pooled one is suspect. Replace them all, then try once more.
                    await self._pg_pool.expire_connections()
                    if attempt == 2:
                        raise
        async with self.read() as conn:
            result = await conn.execute(sa.text(query.sql), params)
            mappings = [dict(result.mappings().first() or {})] if one else []
            if not one:
                mappings = [dict(m) for m in result.mappings().all()]
            return [m for m in mappings if m]


def _private_sqlite_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 (its directory 0700 if missing) before SQLite opens
    it; narrow the database files that exist to owner-only."""
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        os.fchmod(fd, 0o600)  # whatever the umask; an empty file is an empty SQLite database
        os.close(fd)
    for suffix in _SQLITE_COMPANIONS:
        companion = Path(f"{path}{suffix}")
        try:
            mode = stat.S_IMODE(companion.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            try:
                os.chmod(companion, mode & 0o700)
            except OSError:
                log.warning(
                    "%s is accessible to other users (mode %o); chmod 600 it", companion, mode
                )
            else:
                log.warning("narrowed %s from mode %o to %o", companion, mode, mode & 0o700)


def _open_sqlite_reader(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA query_only=1")
    conn.execute("PRAGMA busy_timeout=0")
    return conn


def _sqlite_transactions(engine: AsyncEngine) -> None:
    """Let SQLAlchemy, not the driver, issue BEGIN; writers use BEGIN IMMEDIATE, and WAL."""

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        options = conn.get_execution_options()
        readonly = bool(options.get("sqlite_readonly", False))
        info = conn.connection.info  # lives as long as the pooled DBAPI connection
        if info.get("query_only", False) != readonly:
            conn.exec_driver_sql(f"PRAGMA query_only={int(readonly)}")
            info["query_only"] = readonly
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("sqlite_immediate") else "BEGIN")
