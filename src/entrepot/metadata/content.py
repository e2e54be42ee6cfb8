"""The content index of the pull-through cache: repositories, tags, manifests, blobs, accesses.

What callers may rely on:

* Every write is a conditional single statement or one short transaction of them
  (``INSERT ... ON CONFLICT``, ``UPDATE ... WHERE``), never the serialised write lock of
  :meth:`Database.write`: any number of processes may fill the cache at once.
* Content is immutable: putting a manifest or blob that exists changes nothing and is not an
  error. A manifest and the references it holds are written in one transaction, so a manifest is
  never visible without them.
* A blob belongs to a repository when a manifest of that repository references it
  (:meth:`SqlContentIndex.blob_in_repository`), as distribution links blobs to repositories;
  it is *linked* to the repository (:meth:`SqlContentIndex.blob_linked`) when it belongs to it
  or was linked by itself (:meth:`SqlContentIndex.link_blob`: the repository fetched it, or
  its upstream said it has it). A repository serves only the blobs linked to it.
* Access times are written in batches (:meth:`SqlContentIndex.record_accesses`), one statement
  per kind of row; a lost batch costs only freshness of eviction data.
* Point reads (repository, tag, manifest, blob) run without a transaction
  (:meth:`Database.fetch_one`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from entrepot.metadata import schema as t
from entrepot.metadata.database import Database, PointQuery, Row, as_utc, utcnow
from entrepot.metadata.records import (
    BlobRecord,
    BlobRef,
    ManifestRecord,
    NewManifest,
    RepositoryRecord,
    TagRecord,
)

__all__ = ["SqlContentIndex"]

_GET_REPOSITORY = PointQuery(
    "SELECT id, registry_id, name, created_at FROM repositories "
    "WHERE registry_id = :registry_id AND name = :name"
)
_GET_CACHED_REPOSITORY = PointQuery(
    "SELECT r.id, r.registry_id, r.name, r.created_at FROM repositories r "
    "WHERE r.registry_id = :registry_id AND r.name = :name "
    "AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id)"
)
_GET_TAG = PointQuery(
    "SELECT repository_id, tag, digest, checked_at FROM tags "
    "WHERE repository_id = :repository_id AND tag = :tag"
)
_MANIFEST_COLUMNS = (
    "repository_id, digest, media_type, size, artifact_type, subject, created_at, last_access"
)
_GET_MANIFEST = PointQuery(
    f"SELECT {_MANIFEST_COLUMNS} FROM manifests "
    "WHERE repository_id = :repository_id AND digest = :digest"
)
_GET_BLOB = PointQuery(
    "SELECT digest, size, media_type, created_at, last_access FROM blobs WHERE digest = :digest"
)
_BLOB_IN_REPOSITORY = PointQuery(
    "SELECT 1 AS found FROM manifest_references "
    "WHERE repository_id = :repository_id AND digest = :digest LIMIT 1"
)
_BLOB_LINKED = PointQuery(
    "SELECT 1 AS found FROM blob_links WHERE repository_id = :repository_id AND digest = :digest "
    "UNION ALL "
    "SELECT 1 AS found FROM manifest_references "
    "WHERE repository_id = :repository_id AND digest = :digest"
)

_COUNT_CONTENT = PointQuery(
    "SELECT (SELECT count(*) FROM repositories r "
    "WHERE EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id)) AS repositories, "
    "(SELECT count(*) FROM manifests) AS manifests, "
    "(SELECT count(*) FROM tags) AS tags, "
    "(SELECT count(*) FROM blobs) AS blobs, "
    "(SELECT coalesce(sum(size), 0) FROM blobs) AS blob_bytes"
)
CONTENT_COUNTS = ("repositories", "manifests", "tags", "blobs", "blob_bytes")
"""The keys of :meth:`SqlContentIndex.counts`."""


def _repository(row: Row) -> RepositoryRecord:
    created = as_utc(row["created_at"])
    assert created is not None
    return RepositoryRecord(int(row["id"]), int(row["registry_id"]), row["name"], created)


def _tag(row: Row) -> TagRecord:
    checked = as_utc(row["checked_at"])
    assert checked is not None
    return TagRecord(int(row["repository_id"]), row["tag"], row["digest"], checked)


def _manifest(row: Row) -> ManifestRecord:
    created = as_utc(row["created_at"])
    assert created is not None
    return ManifestRecord(
        repository_id=int(row["repository_id"]),
        digest=row["digest"],
        media_type=row["media_type"],
        size=int(row["size"]),
        artifact_type=row["artifact_type"],
        subject=row["subject"],
        created_at=created,
        last_access=as_utc(row["last_access"]),
    )


def _blob(row: Row) -> BlobRecord:
    created = as_utc(row["created_at"])
    assert created is not None
    return BlobRecord(
        row["digest"], int(row["size"]), row["media_type"], created, as_utc(row["last_access"])
    )


class SqlContentIndex:
    """The :class:`ContentIndex` over a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _insert(self, table: sa.Table) -> Any:
        return sqlite.insert(table) if self.db.is_sqlite else postgresql.insert(table)

    def _lexical(self, column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
        """``column`` compared and sorted by code point (byte order), as listings promise.

        SQLite's default collation already is; PostgreSQL's follows the database's locale
        (``en_US`` puts ``a-b`` after ``a_c`` and ``V1`` after ``latest``).
        """
        return column if self.db.is_sqlite else column.collate("C")

    # -- repositories --------------------------------------------------------------------------
    async def repository(self, registry_id: int, name: str) -> RepositoryRecord | None:
        row = await self.db.fetch_one(_GET_REPOSITORY, registry_id=registry_id, name=name)
        return None if row is None else _repository(row)

    async def cached_repository(self, registry_id: int, name: str) -> RepositoryRecord | None:
        """The repository ``name`` of the registry if it holds at least one manifest (what
        :meth:`cached_repositories` lists), else ``None``; one point read."""
        row = await self.db.fetch_one(_GET_CACHED_REPOSITORY, registry_id=registry_id, name=name)
        return None if row is None else _repository(row)

    async def ensure_repository(self, registry_id: int, name: str) -> RepositoryRecord:
        """The repository ``name`` of the registry, created if it does not exist yet."""
        found = await self.repository(registry_id, name)
        if found is not None:
            return found
        statement = (
            self._insert(t.repositories)
            .values(registry_id=registry_id, name=name, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["registry_id", "name"])
        )
        async with self.db.transaction() as conn:
            await conn.execute(statement)
        found = await self.repository(registry_id, name)
        assert found is not None, "a repository row vanished right after its insert"
        return found

    async def repositories(self, registry_id: int, after: str, limit: int) -> list[str]:
        """Names of the registry's repositories after ``after``, in lexical order (the catalog)."""
        r = t.repositories.c
        name = self._lexical(r.name)
        query = (
            sa.select(r.name)
            .where(r.registry_id == registry_id, name > after)
            .order_by(name)
            .limit(limit)
        )
        async with self.db.read() as conn:
            return [str(x) for x in (await conn.execute(query)).scalars()]

    async def cached_repositories(self, registry_id: int, after: str, limit: int) -> list[str]:
        """Names of the registry's repositories that hold at least one manifest, after
        ``after``, in lexical order, at most ``limit`` (the registry's ``/v2/_catalog``).

        A repository a pull only looked at (nothing was found upstream) is left out; one whose
        cache rule was deleted stays, as its content does.
        """
        r, m = t.repositories.c, t.manifests.c
        name = self._lexical(r.name)
        held = sa.exists().where(m.repository_id == r.id)
        query = (
            sa.select(r.name)
            .where(r.registry_id == registry_id, name > after, held)
            .order_by(name)
            .limit(limit)
        )
        async with self.db.read() as conn:
            return [str(x) for x in (await conn.execute(query)).scalars()]

    # -- tags ------------------------------------------------------------------------------------
    async def tag(self, repository_id: int, tag: str) -> TagRecord | None:
        row = await self.db.fetch_one(_GET_TAG, repository_id=repository_id, tag=tag)
        return None if row is None else _tag(row)

    async def put_tag(
        self, repository_id: int, tag: str, digest: str, checked_at: dt.datetime
    ) -> None:
        """Point ``tag`` at ``digest`` as checked upstream at ``checked_at`` (create or move).

        A check older than the stored one never overwrites it, so concurrent revalidations
        settle on the newest answer.
        """
        statement = self._insert(t.tags).values(
            repository_id=repository_id, tag=tag, digest=digest, checked_at=checked_at
        )
        statement = statement.on_conflict_do_update(
            index_elements=["repository_id", "tag"],
            set_={"digest": statement.excluded.digest, "checked_at": statement.excluded.checked_at},
            where=t.tags.c.checked_at <= statement.excluded.checked_at,
        )
        async with self.db.transaction() as conn:
            await conn.execute(statement)

    async def tags(self, repository_id: int, after: str, limit: int) -> list[str]:
        """Tags of the repository after ``after``, in lexical order."""
        c = t.tags.c
        tag = self._lexical(c.tag)
        query = (
            sa.select(c.tag)
            .where(c.repository_id == repository_id, tag > after)
            .order_by(tag)
            .limit(limit)
        )
        async with self.db.read() as conn:
            return [str(x) for x in (await conn.execute(query)).scalars()]

    async def delete_tag(self, repository_id: int, tag: str) -> bool:
        c = t.tags.c
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.delete(t.tags).where(c.repository_id == repository_id, c.tag == tag)
            )
            return int(result.rowcount) > 0

    # -- manifests -------------------------------------------------------------------------------
    async def manifest(self, repository_id: int, digest: str) -> ManifestRecord | None:
        row = await self.db.fetch_one(_GET_MANIFEST, repository_id=repository_id, digest=digest)
        return None if row is None else _manifest(row)

    async def put_manifest(self, new: NewManifest) -> None:
        """Record a verified manifest and the descriptors it references (idempotent)."""
        manifest = (
            self._insert(t.manifests)
            .values(
                repository_id=new.repository_id,
                digest=new.digest,
                media_type=new.media_type,
                size=new.size,
                artifact_type=new.artifact_type,
                subject=new.subject,
                created_at=new.now,
            )
            .on_conflict_do_nothing(index_elements=["repository_id", "digest"])
        )
        references = _unique(new.references)
        async with self.db.transaction() as conn:
            await conn.execute(manifest)
            if references:
                await conn.execute(
                    self._insert(t.manifest_references).on_conflict_do_nothing(),
                    [
                        {
                            "repository_id": new.repository_id,
                            "manifest_digest": new.digest,
                            "digest": ref.digest,
                            "size": ref.size,
                            "media_type": ref.media_type,
                        }
                        for ref in references
                    ],
                )

    async def references(self, repository_id: int, digest: str) -> list[BlobRef]:
        """The descriptors manifest ``digest`` references, by digest."""
        c = t.manifest_references.c
        query = (
            sa.select(c.digest, c.size, c.media_type)
            .where(c.repository_id == repository_id, c.manifest_digest == digest)
            .order_by(c.digest)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [BlobRef(str(d), int(s), m) for d, s, m in rows]

    async def referrers(
        self, repository_id: int, subject: str, artifact_type: str | None = None
    ) -> list[ManifestRecord]:
        """Manifests of the repository whose ``subject`` is ``subject``, by digest."""
        m = t.manifests.c
        query = sa.select(t.manifests).where(m.repository_id == repository_id, m.subject == subject)
        if artifact_type is not None:
            query = query.where(m.artifact_type == artifact_type)
        async with self.db.read() as conn:
            rows = (await conn.execute(query.order_by(m.digest))).mappings().all()
        return [_manifest(r) for r in rows]

    # -- blobs -----------------------------------------------------------------------------------
    async def blob(self, digest: str) -> BlobRecord | None:
        row = await self.db.fetch_one(_GET_BLOB, digest=digest)
        return None if row is None else _blob(row)

    async def put_blob(self, digest: str, size: int, media_type: str | None) -> None:
        """Record a verified blob (idempotent: an existing record is left as it is)."""
        statement = (
            self._insert(t.blobs)
            .values(digest=digest, size=size, media_type=media_type, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["digest"])
        )
        async with self.db.transaction() as conn:
            await conn.execute(statement)

    async def blob_in_repository(self, repository_id: int, digest: str) -> bool:
        """Whether a manifest of the repository references blob ``digest``."""
        row = await self.db.fetch_one(
            _BLOB_IN_REPOSITORY, repository_id=repository_id, digest=digest
        )
        return row is not None

    async def blob_linked(self, repository_id: int, digest: str) -> bool:
        """Whether blob ``digest`` is linked to the repository: a manifest of it references
        the blob, or :meth:`link_blob` linked it; one point read."""
        row = await self.db.fetch_one(_BLOB_LINKED, repository_id=repository_id, digest=digest)
        return row is not None

    async def link_blob(self, repository_id: int, digest: str) -> None:
        """Link blob ``digest`` to the repository (idempotent)."""
        statement = (
            self._insert(t.blob_links)
            .values(repository_id=repository_id, digest=digest)
            .on_conflict_do_nothing(index_elements=["repository_id", "digest"])
        )
        async with self.db.transaction() as conn:
            await conn.execute(statement)

    # -- the whole cache -------------------------------------------------------------------------
    async def counts(self) -> dict[str, int]:
        """What the cache holds on the whole server, read in one statement (no transaction):
        ``repositories`` (those holding at least one manifest, as the catalog lists them),
        ``manifests`` (one per repository and digest), ``tags``, ``blobs`` (verified, each
        digest once, shared by repositories) and ``blob_bytes`` (their total size). One
        statement, so the numbers agree with each other; it counts whole tables, so it is
        meant for status pages, not for a hot path."""
        row = await self.db.fetch_one(_COUNT_CONTENT)
        assert row is not None
        return {key: int(row[key]) for key in CONTENT_COUNTS}

    # -- access times ----------------------------------------------------------------------------
    async def record_accesses(
        self,
        manifests: Iterable[tuple[int, str]],
        blobs: Iterable[str],
        when: dt.datetime,
    ) -> None:
        """Set the last access of the given manifests ``(repository_id, digest)`` and blobs.

        A later access already recorded is kept (access times only move forward).
        """
        manifest_rows = [{"r": r, "d": d, "w": when} for r, d in set(manifests)]
        blob_rows = [{"d": d, "w": when} for d in set(blobs)]
        if not manifest_rows and not blob_rows:
            return
        m, b = t.manifests.c, t.blobs.c
        async with self.db.transaction() as conn:
            if manifest_rows:
                await _executemany(
                    conn,
                    sa.update(t.manifests)
                    .where(
                        m.repository_id == sa.bindparam("r"),
                        m.digest == sa.bindparam("d"),
                        sa.or_(m.last_access.is_(None), m.last_access < sa.bindparam("w")),
                    )
                    .values(last_access=sa.bindparam("w")),
                    manifest_rows,
                )
            if blob_rows:
                await _executemany(
                    conn,
                    sa.update(t.blobs)
                    .where(
                        b.digest == sa.bindparam("d"),
                        sa.or_(b.last_access.is_(None), b.last_access < sa.bindparam("w")),
                    )
                    .values(last_access=sa.bindparam("w")),
                    blob_rows,
                )


async def _executemany(conn: AsyncConnection, statement: Any, rows: list[dict[str, Any]]) -> None:
    await conn.execute(statement.execution_options(synchronize_session=False), rows)


def _unique(refs: Iterable[BlobRef]) -> list[BlobRef]:
    seen: dict[str, BlobRef] = {}
    for ref in refs:
        seen.setdefault(ref.digest, ref)
    return list(seen.values())
