"""Conformance suite of :class:`entrepot.metadata.content.SqlContentIndex` (ContentIndex).

Repositories, tags, manifests with their references, blobs and access times of the cache.
Every test runs on a fresh SQLite file and on a fresh PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from entrepot.metadata import schema as t
from entrepot.metadata.content import SqlContentIndex
from entrepot.metadata.database import Database
from entrepot.metadata.protocols import ContentIndex
from entrepot.metadata.records import BlobRef, ManifestRecord, NewManifest, ResourceKind
from entrepot.metadata.resources import SqlResourceStore
from tests.conftest import _pg_admin, _pg_url
from tests.metadata_support import NOW, add_registry, assert_aware_utc, opened, store_url

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"


def digest(n: int | str) -> str:
    return f"sha256:{str(n).rjust(64, '0')}"


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
def index(db: Database) -> SqlContentIndex:
    return SqlContentIndex(db)


@pytest.fixture
async def reg(store: SqlResourceStore) -> int:
    return await add_registry(store, "cache-registry")


def manifest(
    repository_id: int,
    n: int | str,
    references: tuple[BlobRef, ...] = (),
    *,
    media_type: str = OCI_MANIFEST,
    artifact_type: str | None = None,
    subject: str | None = None,
    now: dt.datetime = NOW,
) -> NewManifest:
    return NewManifest(
        repository_id=repository_id,
        digest=digest(n),
        media_type=media_type,
        size=1000 + len(references),
        artifact_type=artifact_type,
        subject=subject,
        references=references,
        now=now,
    )


async def _count(db: Database, table: sa.Table) -> int:
    async with db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


def test_sql_index_is_a_content_index(index: SqlContentIndex) -> None:
    typed: ContentIndex = index
    assert typed is index


# -- repositories -----------------------------------------------------------------------------
async def test_ensure_repository_is_idempotent(
    index: SqlContentIndex, store: SqlResourceStore, reg: int
) -> None:
    other = await add_registry(store, "other-registry")
    assert await index.repository(reg, "library/alpine") is None
    before = dt.datetime.now(dt.UTC)
    repo = await index.ensure_repository(reg, "library/alpine")
    assert (repo.registry_id, repo.name) == (reg, "library/alpine")
    assert_aware_utc(repo.created_at)
    assert before - dt.timedelta(seconds=5) <= repo.created_at <= dt.datetime.now(dt.UTC)
    assert await index.ensure_repository(reg, "library/alpine") == repo
    assert await index.repository(reg, "library/alpine") == repo
    assert await index.repository(reg, "Library/Alpine") is None  # repository names are exact
    elsewhere = await index.ensure_repository(other, "library/alpine")
    assert elsewhere.id != repo.id and elsewhere.registry_id == other
    assert await index.repository(other, "library/alpine") == elsewhere


async def test_concurrent_ensure_repository_creates_one_row(
    db: Database, db_url: str, reg: int
) -> None:
    async with opened(db_url) as other_db:
        indexes = [SqlContentIndex(db), SqlContentIndex(other_db)]
        repos = await asyncio.gather(
            *(indexes[i % 2].ensure_repository(reg, "busy/repo") for i in range(20))
        )
    assert len({r.id for r in repos}) == 1
    assert len(set(repos)) == 1  # the same record everywhere, creation time included
    assert await _count(db, t.repositories) == 1


async def test_repositories_are_listed_in_pages(
    index: SqlContentIndex, store: SqlResourceStore, reg: int
) -> None:
    other = await add_registry(store, "other-registry")
    names = ["b/two", "a/one", "c", "a/one/deeper", "B/upper"]
    for name in names:
        await index.ensure_repository(reg, name)
    await index.ensure_repository(other, "elsewhere")
    assert await index.repositories(reg, "", 100) == sorted(names)
    first = await index.repositories(reg, "", 2)
    assert first == sorted(names)[:2]
    assert await index.repositories(reg, first[-1], 2) == sorted(names)[2:4]
    assert await index.repositories(reg, sorted(names)[-1], 2) == []
    assert await index.repositories(other, "", 100) == ["elsewhere"]


# -- tags -------------------------------------------------------------------------------------
async def test_tags_put_move_and_older_checks_do_not_overwrite(
    index: SqlContentIndex, reg: int
) -> None:
    repo = (await index.ensure_repository(reg, "app")).id
    assert await index.tag(repo, "latest") is None
    await index.put_tag(repo, "latest", digest(1), NOW)
    tag = await index.tag(repo, "latest")
    assert tag is not None
    assert (tag.repository_id, tag.tag, tag.digest, tag.checked_at) == (
        repo,
        "latest",
        digest(1),
        NOW,
    )
    assert_aware_utc(tag.checked_at)

    later = NOW + dt.timedelta(minutes=5)
    await index.put_tag(repo, "latest", digest(2), later)  # moved upstream
    moved = await index.tag(repo, "latest")
    assert moved is not None and (moved.digest, moved.checked_at) == (digest(2), later)

    await index.put_tag(repo, "latest", digest(3), NOW)  # an older check: ignored
    kept = await index.tag(repo, "latest")
    assert kept == moved

    await index.put_tag(repo, "latest", digest(2), later + dt.timedelta(seconds=1))
    refreshed = await index.tag(repo, "latest")  # the same digest, checked again: newer time
    assert refreshed is not None and refreshed.checked_at == later + dt.timedelta(seconds=1)

    other_repo = (await index.ensure_repository(reg, "other")).id
    assert await index.tag(other_repo, "latest") is None  # tags belong to one repository


async def test_concurrent_tag_checks_settle_on_the_newest(index: SqlContentIndex, reg: int) -> None:
    repo = (await index.ensure_repository(reg, "app")).id
    checks = [(digest(i), NOW + dt.timedelta(seconds=i)) for i in range(20)]
    await asyncio.gather(*(index.put_tag(repo, "v1", d, when) for d, when in reversed(checks)))
    tag = await index.tag(repo, "v1")
    assert tag is not None and (tag.digest, tag.checked_at) == checks[-1]


async def test_tags_list_in_pages_and_delete(index: SqlContentIndex, reg: int) -> None:
    repo = (await index.ensure_repository(reg, "app")).id
    other = (await index.ensure_repository(reg, "other")).id
    tags = ["v2", "latest", "v1.0", "V1", "1.0", "v10"]
    for i, name in enumerate(tags):
        await index.put_tag(repo, name, digest(i), NOW)
    await index.put_tag(other, "elsewhere", digest(99), NOW)
    expected = sorted(tags)  # lexical (byte) order, as the distribution API lists them
    seen: list[str] = []
    after = ""
    while page := await index.tags(repo, after, 4):
        assert len(page) <= 4
        seen += page
        after = page[-1]
    assert seen == expected
    assert await index.tags(repo, "v1.0", 100) == [n for n in expected if n > "v1.0"]

    assert await index.delete_tag(repo, "latest") is True
    assert await index.delete_tag(repo, "latest") is False
    assert await index.delete_tag(repo, "elsewhere") is False  # another repository's tag
    assert await index.tag(repo, "latest") is None
    assert "latest" not in await index.tags(repo, "", 100)
    assert await index.tags(other, "", 100) == ["elsewhere"]


@pytest.fixture
def icu_postgres_url() -> Iterator[str]:
    """A PostgreSQL database whose default collation is ICU ``en-US`` (not byte order)."""
    name = f"entrepot_test_icu_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(
            _pg_admin(
                f'CREATE DATABASE "{name}" TEMPLATE template0 '
                "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
            )
        )
    except asyncpg.PostgresError as exc:  # pragma: no cover - PostgreSQL < 15 or without ICU
        pytest.skip(f"PostgreSQL cannot create an ICU database here: {exc}")
    yield store_url(_pg_url(name), Path("unused"))
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.postgres
async def test_listings_are_in_code_point_order_whatever_the_collation(
    icu_postgres_url: str,
) -> None:
    names = ["v2", "latest", "v1.0", "V1", "1.0", "v10", "a-b", "ab", "a_c"]
    async with opened(icu_postgres_url) as db:
        async with db.read() as conn:  # the database itself sorts otherwise
            assert (await conn.execute(sa.text("SELECT 'V1' > 'latest'"))).scalar_one() is True
        reg = await add_registry(SqlResourceStore(db), "cache-registry")
        index = SqlContentIndex(db)
        repo = (await index.ensure_repository(reg, "app")).id
        for name in names:
            await index.put_tag(repo, name, digest(1), NOW)
            await index.ensure_repository(reg, name)
        paged: list[str] = []
        while page := await index.tags(repo, paged[-1] if paged else "", 2):
            paged += page
        assert paged == sorted(names)
        assert await index.repositories(reg, "", 100) == sorted([*names, "app"])
        assert await index.repositories(reg, "a-b", 2) == ["a_c", "ab"]


# -- manifests and references -----------------------------------------------------------------
async def test_put_manifest_is_idempotent_with_its_references(
    index: SqlContentIndex, db: Database, reg: int
) -> None:
    repo = (await index.ensure_repository(reg, "app")).id
    refs = (
        BlobRef(digest("c"), 10, CONFIG),
        BlobRef(digest("a"), 200, LAYER),
        BlobRef(digest("b"), 300, None),
        BlobRef(digest("a"), 200, LAYER),  # listed twice: stored once
    )
    new = manifest(repo, 1, refs)
    assert await index.manifest(repo, new.digest) is None
    await index.put_manifest(new)
    stored = await index.manifest(repo, new.digest)
    assert stored == ManifestRecord(
        repository_id=repo,
        digest=digest(1),
        media_type=OCI_MANIFEST,
        size=new.size,
        artifact_type=None,
        subject=None,
        created_at=NOW,
        last_access=None,
    )
    expected_refs = [
        BlobRef(digest("a"), 200, LAYER),
        BlobRef(digest("b"), 300, None),
        BlobRef(digest("c"), 10, CONFIG),
    ]
    assert await index.references(repo, new.digest) == expected_refs

    # Putting it again (content is immutable) changes nothing and is not an error.
    await index.put_manifest(manifest(repo, 1, refs, now=NOW + dt.timedelta(days=1)))
    assert await index.manifest(repo, new.digest) == stored
    assert await index.references(repo, new.digest) == expected_refs
    assert await _count(db, t.manifests) == 1
    assert await _count(db, t.manifest_references) == 3

    # The same manifest in another repository is another row with its own references.
    other = (await index.ensure_repository(reg, "other")).id
    await index.put_manifest(manifest(other, 1, refs[:1]))
    assert await index.references(other, new.digest) == [BlobRef(digest("c"), 10, CONFIG)]
    assert await index.references(repo, new.digest) == expected_refs
    assert await index.references(repo, digest(404)) == []
    assert await index.manifest(other, digest(404)) is None

    # A manifest without references.
    await index.put_manifest(manifest(repo, "empty"))
    assert await index.references(repo, digest("empty")) == []
    assert await index.manifest(repo, digest("empty")) is not None


async def test_put_manifest_writes_manifest_and_references_in_one_transaction(
    index: SqlContentIndex, db: Database, reg: int
) -> None:
    repo = (await index.ensure_repository(reg, "app")).id
    broken = BlobRef(digest("bad"), None, LAYER)  # type: ignore[arg-type]  # NOT NULL fails
    with pytest.raises(IntegrityError):
        await index.put_manifest(manifest(repo, 1, (BlobRef(digest("a"), 1, LAYER), broken)))
    assert await index.manifest(repo, digest(1)) is None  # the manifest rolled back too
    assert await index.references(repo, digest(1)) == []
    assert await _count(db, t.manifests) == 0
    assert await _count(db, t.manifest_references) == 0
    with pytest.raises(IntegrityError):  # and a manifest needs its repository
        await index.put_manifest(manifest(repo + 1000, 2))


async def test_referrers_by_subject_and_artifact_type(index: SqlContentIndex, reg: int) -> None:
    repo = (await index.ensure_repository(reg, "app")).id
    other = (await index.ensure_repository(reg, "other")).id
    subject = digest("subject")
    await index.put_manifest(manifest(repo, "subject"))
    sig = "application/vnd.dev.cosign.artifact.sig.v1+json"
    sbom = "application/spdx+json"
    await index.put_manifest(manifest(repo, "s2", artifact_type=sig, subject=subject))
    await index.put_manifest(manifest(repo, "s1", artifact_type=sbom, subject=subject))
    await index.put_manifest(manifest(repo, "s3", artifact_type=sig, subject=subject))
    await index.put_manifest(manifest(repo, "unrelated", artifact_type=sig, subject=digest(9)))
    await index.put_manifest(manifest(other, "s4", artifact_type=sig, subject=subject))

    everything = await index.referrers(repo, subject)
    assert [m.digest for m in everything] == [digest("s1"), digest("s2"), digest("s3")]
    assert everything[0].artifact_type == sbom and everything[0].subject == subject
    assert all(m.repository_id == repo for m in everything)
    signatures = await index.referrers(repo, subject, artifact_type=sig)
    assert [m.digest for m in signatures] == [digest("s2"), digest("s3")]
    assert await index.referrers(repo, subject, artifact_type="application/none") == []
    assert await index.referrers(repo, digest(404)) == []
    assert [m.digest for m in await index.referrers(other, subject)] == [digest("s4")]
    for m in everything:
        assert_aware_utc(m.created_at)
        assert m.created_at == NOW


# -- blobs ------------------------------------------------------------------------------------
async def test_put_blob_is_idempotent(index: SqlContentIndex) -> None:
    assert await index.blob(digest("b")) is None
    before = dt.datetime.now(dt.UTC)
    await index.put_blob(digest("b"), 1234, LAYER)
    blob = await index.blob(digest("b"))
    assert blob is not None
    assert (blob.digest, blob.size, blob.media_type, blob.last_access) == (
        digest("b"),
        1234,
        LAYER,
        None,
    )
    assert_aware_utc(blob.created_at)
    assert before - dt.timedelta(seconds=5) <= blob.created_at <= dt.datetime.now(dt.UTC)
    await index.put_blob(digest("b"), 9999, None)  # an existing record is left as it is
    assert await index.blob(digest("b")) == blob
    await index.put_blob(digest("no-type"), 5, None)
    untyped = await index.blob(digest("no-type"))
    assert untyped is not None and untyped.media_type is None
    big = 5 * 1024**3  # sizes beyond 32 bits
    await index.put_blob(digest("big"), big, LAYER)
    big_blob = await index.blob(digest("big"))
    assert big_blob is not None and big_blob.size == big


async def test_blob_in_repository_only_through_a_manifest_of_that_repository(
    index: SqlContentIndex, store: SqlResourceStore, reg: int
) -> None:
    repo = (await index.ensure_repository(reg, "app")).id
    sibling = (await index.ensure_repository(reg, "sibling")).id
    other_reg = await add_registry(store, "other-registry")
    foreign = (await index.ensure_repository(other_reg, "app")).id
    layer = digest("layer")
    await index.put_blob(layer, 10, LAYER)
    assert not await index.blob_in_repository(repo, layer)  # a blob record alone: no
    await index.put_manifest(manifest(sibling, 1, (BlobRef(layer, 10, LAYER),)))
    await index.put_manifest(manifest(foreign, 1, (BlobRef(layer, 10, LAYER),)))
    assert await index.blob_in_repository(sibling, layer)
    assert await index.blob_in_repository(foreign, layer)
    assert not await index.blob_in_repository(repo, layer)  # other repositories' manifests: no
    await index.put_manifest(manifest(repo, 2, (BlobRef(layer, 10, LAYER),)))
    assert await index.blob_in_repository(repo, layer)
    assert not await index.blob_in_repository(repo, digest("unknown"))
    # A referenced digest belongs even before its blob is recorded (an index's child manifest).
    child = digest("child")
    await index.put_manifest(
        manifest(repo, 3, (BlobRef(child, 500, OCI_MANIFEST),), media_type=OCI_INDEX)
    )
    assert await index.blob(child) is None
    assert await index.blob_in_repository(repo, child)
    assert not await index.blob_in_repository(sibling, child)


# -- access times -----------------------------------------------------------------------------
async def test_record_accesses_only_moves_forward(index: SqlContentIndex, reg: int) -> None:
    repo = (await index.ensure_repository(reg, "app")).id
    other = (await index.ensure_repository(reg, "other")).id
    for r in (repo, other):
        await index.put_manifest(manifest(r, 1))
    await index.put_manifest(manifest(repo, 2))
    await index.put_blob(digest("b1"), 1, None)
    await index.put_blob(digest("b2"), 2, None)
    t1 = NOW + dt.timedelta(hours=1)
    t2 = NOW + dt.timedelta(hours=2)
    t3 = NOW + dt.timedelta(hours=3)

    await index.record_accesses([], [], t1)  # nothing to do
    await index.record_accesses(
        [(repo, digest(1)), (repo, digest(1)), (repo, digest(404))],  # repeats, unknown: fine
        [digest("b1"), digest("b1"), digest("unknown")],
        t2,
    )

    async def last(r: int, n: int) -> dt.datetime | None:
        found = await index.manifest(r, digest(n))
        assert found is not None
        return found.last_access

    async def blob_last(name: str) -> dt.datetime | None:
        found = await index.blob(digest(name))
        assert found is not None
        return found.last_access

    assert await last(repo, 1) == t2
    assert await last(other, 1) is None  # the same digest in another repository: untouched
    assert await last(repo, 2) is None
    assert await blob_last("b1") == t2
    assert await blob_last("b2") is None
    assert await index.blob(digest("unknown")) is None  # no row is created

    await index.record_accesses([(repo, digest(1)), (repo, digest(2))], [digest("b1")], t1)
    assert await last(repo, 1) == t2  # an earlier access does not move it back
    assert await last(repo, 2) == t1
    assert await blob_last("b1") == t2

    await index.record_accesses([(repo, digest(1))], [digest("b1"), digest("b2")], t3)
    assert await last(repo, 1) == t3
    assert await blob_last("b1") == t3
    assert await blob_last("b2") == t3
    for value in (await last(repo, 1), await blob_last("b1")):
        assert_aware_utc(value)

    # Only blobs, only manifests.
    t4 = t3 + dt.timedelta(hours=1)
    await index.record_accesses([], [digest("b2")], t4)
    await index.record_accesses([(other, digest(1))], [], t4)
    assert await blob_last("b2") == t4
    assert await last(other, 1) == t4
    assert await last(repo, 1) == t3


# -- registry deletion ------------------------------------------------------------------------
async def test_deleting_the_registry_removes_its_content_index(
    index: SqlContentIndex, store: SqlResourceStore, db: Database, reg: int
) -> None:
    kept_reg = await add_registry(store, "kept-registry")
    repo = (await index.ensure_repository(reg, "app")).id
    kept = (await index.ensure_repository(kept_reg, "app")).id
    layer = BlobRef(digest("layer"), 10, LAYER)
    for r in (repo, kept):
        await index.put_manifest(manifest(r, 1, (layer,)))
        await index.put_tag(r, "latest", digest(1), NOW)
    await index.put_blob(layer.digest, layer.size, layer.media_type)

    async with store.write() as tx:
        assert await tx.delete(ResourceKind.REGISTRY, reg) is True

    assert await index.repository(reg, "app") is None
    assert await index.repositories(reg, "", 100) == []
    assert await index.tag(repo, "latest") is None
    assert await index.tags(repo, "", 100) == []
    assert await index.manifest(repo, digest(1)) is None
    assert await index.references(repo, digest(1)) == []
    assert not await index.blob_in_repository(repo, layer.digest)
    # The other registry's content is untouched; blobs are shared and stay.
    assert await index.repository(kept_reg, "app") is not None
    assert await index.tag(kept, "latest") is not None
    assert await index.references(kept, digest(1)) == [layer]
    assert await index.blob_in_repository(kept, layer.digest)
    assert await index.blob(layer.digest) is not None
    for table, rows in (
        (t.repositories, 1),
        (t.tags, 1),
        (t.manifests, 1),
        (t.manifest_references, 1),
        (t.blobs, 1),
    ):
        assert await _count(db, table) == rows, table.name
