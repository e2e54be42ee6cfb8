"""The pull-through engine: manifests and blobs served from the content store, filled from
upstream on a miss (the first increment of issue 8's cache).

What callers (the registry face) may rely on:

* **Manifests by digest** come from the store when this repository's index records them; else
  ``GET /v2/<upstream>/manifests/<digest>`` (``Accept``: every manifest media type), the body's
  digest is checked against the one asked for, and the exact bytes are stored, indexed (with
  the descriptors they reference) and served with the upstream's media type. A cached digest
  never goes upstream again.
* **Manifests by tag**: a tag checked upstream less than ``tag_ttl`` seconds ago is served from
  the store (``hit``). Otherwise the upstream is asked (``HEAD``, then ``GET`` only when the
  digest it names is not cached here) and the tag moves (``miss``). When the upstream cannot be
  asked (unreachable, TLS failure, 5xx, 429) and a copy is cached, the copy is served as
  ``stale`` and a warning is logged; without a copy the upstream error is raised, naming the
  rule: 401 ``UNAUTHORIZED``, 403 ``DENIED``, 429 ``TOOMANYREQUESTS``, else 502.
* **Blobs** come from the store when present. On a miss one fill per digest runs per process
  (an in-memory table of fills) and across processes (the lease ``blob:<digest>``; a process
  that does not get it waits, boundedly, for the content to appear in the store, taking the
  lease over if its holder lets it go or dies). The fill runs as its own task, so it goes on
  when the client that started it disconnects; its bytes are written to a verified
  :meth:`~entrepot.storage.ContentStore.ingest` (size and digest checked before the content
  becomes visible; a failed or partial fill leaves nothing) and **streamed to the client that
  started it** while they arrive. Clients that arrive while a fill runs (late joiners) wait for
  it to finish and are then served from the store: streaming to them is a later increment. A
  client much slower than the upstream stops being fed from memory past
  :data:`MAX_BUFFERED` bytes and continues from the store once the fill is done. ``HEAD`` of a
  blob that is not cached asks the upstream with a ``HEAD`` and stores nothing.
* **Tags** lists the cached tags of the repository (the index).
* Upstream access: anonymous when the rule has no credential set, else with the set's
  credentials (:mod:`entrepot.proxy.credentials`); an upstream 401 (or a token server refusing
  them) has the set's health measured again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from entrepot import errors as e
from entrepot.metadata import SqlContentIndex, SqlLeases
from entrepot.metadata.database import utcnow
from entrepot.metadata.records import BlobRef, NewManifest
from entrepot.oci import MANIFEST_MEDIA_TYPES, Digest, parse_manifest
from entrepot.proxy.credentials import RuleCredentials
from entrepot.proxy.engine import (
    BlobDescriptor,
    BlobReader,
    ManifestContent,
    Origin,
)
from entrepot.proxy.resolution import Resolution
from entrepot.storage import ContentStore, Reader, StorageError
from entrepot.upstream.client import Credentials, UpstreamClient
from entrepot.upstream.response import UpstreamResponse

__all__ = ["MAX_BUFFERED", "MAX_MANIFEST_BYTES", "CachingEngine"]

log = logging.getLogger("entrepot.proxy")

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""The largest manifest accepted from upstream (distribution's limit)."""

MAX_BUFFERED = 64 * 1024 * 1024
"""Bytes of a fill held in memory for a slow first client before it falls back to the store."""

_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
_STALE_ERRORS = (e.UpstreamUnreachable, e.UpstreamTlsError, e.UpstreamTooManyRequests)


def _is_failure(exc: e.UpstreamError) -> bool:
    """Whether ``exc`` means the upstream could not be asked (serve a stale copy then)."""
    if isinstance(exc, _STALE_ERRORS):
        return True
    return type(exc) is e.UpstreamError  # 5xx after the retries, or not a registry


def _where(resolution: Resolution) -> str:
    up = resolution.upstream
    return f"cache rule '{resolution.rule.name}' (upstream {up.login_server}/{up.repository})"


def _named(resolution: Resolution, exc: e.UpstreamError) -> e.UpstreamError:
    """``exc`` again, its message naming the rule (the same class, so the same OCI code)."""
    return type(exc)(f"{exc.message} (pulling through {_where(resolution)})")


async def _check(resolution: Resolution, resp: UpstreamResponse, what: str) -> None:
    """Raise the domain error of a non-2xx upstream answer about ``what`` (closing it)."""
    if 200 <= resp.status < 300:
        return
    await resp.close()
    up = resolution.upstream
    where = _where(resolution)
    if resp.status == 401:
        raise e.UpstreamAuthenticationFailed(
            f"The upstream {up.login_server} refused access to {what} of {up.repository} "
            f"(401); check the credential set of {where}."
        )
    if resp.status == 403:
        raise e.UpstreamDenied(
            f"The upstream {up.login_server} denied access to {what} of {up.repository} (403), "
            f"{where}."
        )
    if resp.status == 404:
        text = (
            f"The {what} of repository '{resolution.repository}' is not cached, and the "
            f"upstream does not have it (404), {where}."
        )
        if what.startswith("blob"):
            raise e.BlobUnknown(text)
        raise e.ManifestUnknown(text)
    raise e.UpstreamError(
        f"The upstream {up.login_server} answered {resp.status} for {what} of {up.repository}, "
        f"{where}."
    )


def _media_type(resp: UpstreamResponse) -> str | None:
    value = resp.headers.get("Content-Type")
    return value.split(";", 1)[0].strip() if value else None


# -- the engine ----------------------------------------------------------------------------------
class CachingEngine:
    """The :class:`~entrepot.proxy.engine.Engine` that caches (see the module doc).

    :param index: the content index (repositories, tags, manifests, blobs).
    :param leases: cross-process single-flight of blob fills.
    :param upstream: the shared upstream client.
    :param tag_ttl: seconds a checked tag is served without asking the upstream again.
    :param lease_seconds: how long a fill's lease lasts between renewals.
    :param wait_seconds: how long a process waits for another process's fill of a blob.
    :param credentials: the credentials of rules with a credential set (``None``: every
        upstream is pulled anonymously); an upstream 401 has the set's health measured again.
    The content store is attached by :meth:`open` (the server opens it on startup).
    """

    def __init__(
        self,
        index: SqlContentIndex,
        leases: SqlLeases,
        upstream: UpstreamClient,
        *,
        tag_ttl: float = 300.0,
        lease_seconds: float = 30.0,
        wait_seconds: float = 600.0,
        credentials: RuleCredentials | None = None,
    ) -> None:
        self.credentials = credentials
        self.index = index
        self.leases = leases
        self.upstream = upstream
        self.tag_ttl = dt.timedelta(seconds=tag_ttl)
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._store: ContentStore | None = None
        self._repositories: dict[tuple[int, str], int] = {}
        self._fills: dict[Digest, _Fill] = {}

    def open(self, store: ContentStore) -> None:
        """Serve from ``store`` (opened by the caller)."""
        self._store = store

    async def close(self) -> None:
        """Cancel the running fills (their ingests are cancelled: nothing partial stays) and
        close the store."""
        if self.credentials is not None:
            await self.credentials.close()
        fills = list(self._fills.values())
        for fill in fills:
            fill.task.cancel()
        await asyncio.gather(*(f.task for f in fills), return_exceptions=True)
        if self._store is not None:
            await self._store.storage.close()
            self._store = None

    @property
    def store(self) -> ContentStore:
        if self._store is None:
            raise RuntimeError("the caching engine has no content store (open it first)")
        return self._store

    def repository(self, resolution: Resolution) -> CachedRepository:
        return CachedRepository(self, resolution)

    async def repository_id(self, resolution: Resolution) -> int:
        key = (resolution.registry_id, resolution.repository)
        found = self._repositories.get(key)
        if found is None:
            record = await self.index.ensure_repository(*key)
            found = self._repositories[key] = record.id
        return found

    async def _credentials(self, resolution: Resolution) -> Credentials | None:
        set_id = resolution.rule.credential_set_id
        if set_id is None or self.credentials is None:
            return None
        try:
            return await self.credentials.get(set_id)
        except e.UpstreamError as exc:
            raise _named(resolution, exc) from None

    def _refused(self, resolution: Resolution) -> None:
        set_id = resolution.rule.credential_set_id
        if set_id is not None and self.credentials is not None:
            self.credentials.unauthorized(set_id)

    async def request(
        self, resolution: Resolution, method: str, path: str, headers: dict[str, str] | None = None
    ) -> UpstreamResponse:
        """``method /v2/<upstream repository>/<path>`` upstream; client errors name the rule."""
        up = resolution.upstream
        credentials = await self._credentials(resolution)
        try:
            resp = await self.upstream.request(
                method,
                up.login_server,
                f"/v2/{up.repository}/{path}",
                credentials=credentials,
                scope=f"repository:{up.repository}:pull",
                headers=headers,
            )
        except e.UpstreamError as exc:
            if isinstance(exc, e.UpstreamAuthenticationFailed):
                self._refused(resolution)
            raise _named(resolution, exc) from None
        if resp.status == 401:
            self._refused(resolution)
        return resp

    # -- blob fills ---------------------------------------------------------------------------
    def fill(self, resolution: Resolution, digest: Digest) -> tuple[_Fill, bool]:
        """The running fill of ``digest`` (started if none); whether this call started it."""
        found = self._fills.get(digest)
        if found is not None:
            return found, False
        fill = _Fill(digest)
        self._fills[digest] = fill
        fill.task = asyncio.create_task(self._run_fill(resolution, fill), name=f"fill {digest}")
        fill.task.add_done_callback(lambda _t: self._fills.pop(digest, None))
        return fill, True

    async def _run_fill(self, resolution: Resolution, fill: _Fill) -> None:
        key = f"blob:{fill.digest}"
        try:
            deadline = asyncio.get_running_loop().time() + self.wait_seconds
            delay = 0.05
            while not await self.leases.acquire(key, self.owner, self.lease_seconds):
                if await self.store.has(fill.digest) is not None:
                    return  # another process filled it
                if asyncio.get_running_loop().time() > deadline:
                    raise e.UpstreamError(
                        f"Another server process has been fetching blob {fill.digest} for "
                        f"longer than {self.wait_seconds:.0f} s, {_where(resolution)}."
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
            try:
                if await self.store.has(fill.digest) is None:
                    await self._download(resolution, fill, key)
            finally:
                await self.leases.release(key, self.owner)
        except BaseException as exc:
            fill.fail(exc)
            if not isinstance(exc, e.EntrepotError | asyncio.CancelledError):
                log.exception("filling blob %s from %s failed", fill.digest, _where(resolution))
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            fill.finish()

    async def _download(self, resolution: Resolution, fill: _Fill, key: str) -> None:
        resp = await self.request(resolution, "GET", f"blobs/{fill.digest}")
        async with resp:
            await _check(resolution, resp, f"blob '{fill.digest}'")
            size = resp.content_length
            fill.start(size, _media_type(resp))
            renew_at = asyncio.get_running_loop().time() + self.lease_seconds / 3
            async with self.store.ingest(fill.digest, size) as ingest:
                async for chunk in resp.iter_chunks():
                    await ingest.write(chunk)
                    fill.feed(chunk)
                    now = asyncio.get_running_loop().time()
                    if now >= renew_at:
                        renew_at = now + self.lease_seconds / 3
                        await self.leases.renew(key, self.owner, self.lease_seconds)
                try:
                    await ingest.commit()
                except (e.DigestInvalid, e.SizeInvalid) as exc:
                    raise e.UpstreamError(
                        f"The upstream sent other content than blob {fill.digest}: "
                        f"{exc.message} ({_where(resolution)})."
                    ) from None
        await self.index.put_blob(str(fill.digest), ingest.size, fill.media_type)
        log.info("cached blob %s (%d bytes) from %s", fill.digest, ingest.size, _where(resolution))


_END = object()


@dataclass(eq=False)
class _Fill:
    """One running fill of a blob; see :meth:`CachingEngine.fill`."""

    digest: Digest
    task: asyncio.Task[None] = field(init=False)
    size: int | None = None
    media_type: str | None = None
    streaming: bool = False
    error: BaseException | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    queue: asyncio.Queue[object] = field(default_factory=asyncio.Queue)
    listening: bool = True
    buffered: int = 0

    def start(self, size: int | None, media_type: str | None) -> None:
        self.size = size
        self.media_type = media_type
        self.streaming = size is not None
        self.started.set()

    def feed(self, chunk: bytes) -> None:
        if not (self.streaming and self.listening):
            return
        self.buffered += len(chunk)
        if self.buffered > MAX_BUFFERED:  # the client is far behind: it resumes from the store
            self.listening = False
            self.queue.put_nowait(_END)
            return
        self.queue.put_nowait(chunk)

    def taken(self, n: int) -> None:
        self.buffered -= n

    def fail(self, exc: BaseException) -> None:
        self.error = exc

    def finish(self) -> None:
        if self.listening:
            self.queue.put_nowait(_END)
        self.started.set()
        self.done.set()


# -- the repository ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CachedRepository:
    """The :class:`~entrepot.proxy.engine.Repository` of one resolution (see the module doc)."""

    engine: CachingEngine
    resolution: Resolution

    @property
    def manifests(self) -> CachedRepository:
        return self

    @property
    def blobs(self) -> _Blobs:
        return _Blobs(self.engine, self.resolution)

    @property
    def tags(self) -> _Tags:
        return _Tags(self.engine, self.resolution)

    @property
    def referrers(self) -> _Referrers:
        return _Referrers(self.resolution)

    # -- manifests ----------------------------------------------------------------------------
    async def get(self, reference: str | Digest, accept: Sequence[str]) -> ManifestContent:
        repo = await self.engine.repository_id(self.resolution)
        if isinstance(reference, Digest):
            local = await self._local(repo, reference, Origin.CACHE)
            if local is not None:
                return local
            return await self._fetch(repo, str(reference), reference)
        return await self._by_tag(repo, reference)

    async def _local(self, repo: int, digest: Digest, origin: Origin) -> ManifestContent | None:
        record = await self.engine.index.manifest(repo, str(digest))
        if record is None:
            return None
        try:
            data = await self.engine.store.read(digest)
        except StorageError:
            return None  # indexed but gone from the store: fetch it again
        return ManifestContent(digest, record.media_type, data, origin)

    async def _fetch(self, repo: int, reference: str, expected: Digest | None) -> ManifestContent:
        """GET the manifest upstream, verify, store and index it."""
        what = f"manifest '{reference}'"
        resp = await self.engine.request(
            self.resolution, "GET", f"manifests/{reference}", {"Accept": _ACCEPT}
        )
        async with resp:
            await _check(self.resolution, resp, what)
            try:
                data = await resp.read(limit=MAX_MANIFEST_BYTES)
            except e.UpstreamError as exc:
                raise _named(self.resolution, exc) from None
            content_type = _media_type(resp)
        digest = Digest.of(data, expected.algorithm) if expected else Digest.of(data)
        if expected is not None and digest != expected:
            raise e.UpstreamError(
                f"The upstream sent a manifest of digest {digest} for {expected}, "
                f"{_where(self.resolution)}; not stored."
            )
        manifest = parse_manifest(data, content_type)
        await self.engine.store.put(data, digest)
        refs = manifest.references()
        await self.engine.index.put_manifest(
            NewManifest(
                repository_id=repo,
                digest=str(digest),
                media_type=manifest.media_type,
                size=len(data),
                artifact_type=manifest.artifact_type,
                subject=str(manifest.subject.digest) if manifest.subject else None,
                references=tuple(BlobRef(str(d.digest), d.size, d.media_type) for d in refs),
                now=utcnow(),
            )
        )
        return ManifestContent(digest, manifest.media_type, data, Origin.UPSTREAM)

    async def _by_tag(self, repo: int, tag: str) -> ManifestContent:
        index = self.engine.index
        record = await index.tag(repo, tag)
        local: ManifestContent | None = None
        if record is not None:
            local = await self._local(repo, Digest.parse(record.digest), Origin.CACHE)
            if local is not None and utcnow() - record.checked_at < self.engine.tag_ttl:
                return local
        checked = utcnow()
        try:
            content = await self._revalidate(repo, tag, local)
        except e.UpstreamError as exc:
            if local is None or not _is_failure(exc):
                raise
            log.warning(
                "serving the cached tag %s:%s (%s) stale: %s",
                self.resolution.repository,
                tag,
                local.digest,
                exc.message,
            )
            return ManifestContent(local.digest, local.media_type, local.data, Origin.STALE)
        await index.put_tag(repo, tag, str(content.digest), checked)
        return content

    async def _revalidate(
        self, repo: int, tag: str, local: ManifestContent | None
    ) -> ManifestContent:
        if local is not None:
            resp = await self.engine.request(
                self.resolution, "HEAD", f"manifests/{tag}", {"Accept": _ACCEPT}
            )
            async with resp:
                await _check(self.resolution, resp, f"manifest '{tag}'")
                named = resp.headers.get("Docker-Content-Digest")
            if named is not None and named == str(local.digest):
                return ManifestContent(local.digest, local.media_type, local.data, Origin.UPSTREAM)
            if named is not None:
                try:
                    other = await self._local(repo, Digest.parse(named), Origin.UPSTREAM)
                except e.DigestInvalid:
                    other = None
                if other is not None:
                    return other
        return await self._fetch(repo, tag, None)


@dataclass(frozen=True, slots=True)
class _Blobs:
    engine: CachingEngine
    resolution: Resolution

    async def stat(self, digest: Digest) -> BlobDescriptor:
        size = await self.engine.store.has(digest)
        if size is not None:
            return BlobDescriptor(digest, size, None, Origin.CACHE)
        resp = await self.engine.request(self.resolution, "HEAD", f"blobs/{digest}")
        async with resp:
            await _check(self.resolution, resp, f"blob '{digest}'")
            length = resp.content_length
            media_type = _media_type(resp)
        if length is None:
            raise e.UpstreamError(
                f"The upstream gave no size for blob {digest}, {_where(self.resolution)}."
            )
        return BlobDescriptor(digest, length, media_type, Origin.UPSTREAM)

    async def open(self, digest: Digest, offset: int = 0, length: int | None = None) -> BlobReader:
        store = self.engine.store
        size = await store.has(digest)
        if size is not None:
            return await _StoreReader.open(store, digest, size, offset, length, Origin.CACHE)
        fill, first = self.engine.fill(self.resolution, digest)
        await fill.started.wait()
        if first and fill.streaming and offset == 0 and length is None and fill.error is None:
            assert fill.size is not None
            return _FillReader(
                BlobDescriptor(digest, fill.size, fill.media_type, Origin.UPSTREAM), fill, store
            )
        if first:
            fill.listening = False  # nobody reads its queue
        await fill.done.wait()
        if fill.error is not None:
            error = fill.error
            if isinstance(error, e.EntrepotError):
                raise error
            raise e.UpstreamError(
                f"Fetching blob {digest} failed, {_where(self.resolution)}."
            ) from error
        size = await store.has(digest)
        if size is None:
            raise e.BlobUnknown(
                f"The blob '{digest}' is not cached and could not be fetched, "
                f"{_where(self.resolution)}."
            )
        return await _StoreReader.open(store, digest, size, offset, length, Origin.UPSTREAM)


class _StoreReader:
    """A blob from the store, ``length`` bytes from ``offset``."""

    def __init__(self, descriptor: BlobDescriptor, reader: Reader, length: int | None) -> None:
        self._descriptor = descriptor
        self._reader = reader
        self._left = length

    @classmethod
    async def open(
        cls,
        store: ContentStore,
        digest: Digest,
        size: int,
        offset: int,
        length: int | None,
        origin: Origin,
    ) -> _StoreReader:
        reader = await store.open(digest, offset)
        return cls(BlobDescriptor(digest, size, None, origin), reader, length)

    @property
    def descriptor(self) -> BlobDescriptor:
        return self._descriptor

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._reader:
            if self._left is not None:
                chunk = chunk[: self._left]
                self._left -= len(chunk)
            if chunk:
                yield chunk
            if self._left == 0:
                return

    async def close(self) -> None:
        await self._reader.close()


class _FillReader:
    """The first client of a fill: its bytes as they arrive (but for the last chunk, which is
    sent once the content is verified and committed, so a client never receives a whole body
    that was not), then, if it fell behind, the rest from the store."""

    def __init__(self, descriptor: BlobDescriptor, fill: _Fill, store: ContentStore) -> None:
        self._descriptor = descriptor
        self._fill = fill
        self._store = store

    @property
    def descriptor(self) -> BlobDescriptor:
        return self._descriptor

    async def chunks(self) -> AsyncIterator[bytes]:
        fill = self._fill
        sent = 0
        held = b""  # the last chunk is held back until the content is verified and committed
        while True:
            item = await fill.queue.get()
            if item is _END:
                break
            assert isinstance(item, bytes)
            fill.taken(len(item))
            if held:
                sent += len(held)
                yield held
            held = item
        await fill.done.wait()
        if fill.error is not None:
            raise fill.error
        if held:
            sent += len(held)
            yield held
        if sent < self._descriptor.size:  # fell behind: the rest from the store
            async with await self._store.open(self._descriptor.digest, sent) as reader:
                async for chunk in reader:
                    yield chunk

    async def close(self) -> None:
        self._fill.listening = False  # the fill goes on without this client


@dataclass(frozen=True, slots=True)
class _Tags:
    engine: CachingEngine
    resolution: Resolution

    async def list(self, after: str, limit: int) -> list[str]:
        found = await self.engine.index.repository(
            self.resolution.registry_id, self.resolution.repository
        )
        return [] if found is None else await self.engine.index.tags(found.id, after, limit)


@dataclass(frozen=True, slots=True)
class _Referrers:
    resolution: Resolution

    async def index(self, subject: Digest, artifact_type: str | None) -> ManifestContent:
        raise e.ManifestUnknown(
            f"The referrers of '{subject}' are not served yet, {_where(self.resolution)}."
        )
