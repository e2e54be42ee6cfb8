"""Blobs of the pull-through cache: served from the content store, filled from upstream once.

What callers may rely on:

* A blob in the store is served from it (``hit``).
* On a miss one fill per digest runs per process (:class:`BlobFills`, an in-memory table of
  fills) and across processes (the lease ``blob:<digest>``; a process that does not get it
  waits, boundedly, for the content to appear in the store, taking the lease over if its holder
  lets it go or dies). The fill runs as its own task, so it goes on when its clients
  disconnect; its bytes are written to a verified :meth:`~entrepot.storage.ContentStore.ingest`
  (size and digest checked before the content becomes visible; a failed or partial fill leaves
  nothing).
* **Every client of a fill in this process is streamed while the bytes arrive**: the one that
  started it, the ones that arrive later (late joiners) and ranges (``open`` with an offset and
  a length). Each reads what the ingest has written so far from its own offset (through
  :meth:`~entrepot.storage.Ingest.open_partial`), then follows as more is written, so memory
  does not grow with the blob's size nor with the number of clients, and a slow client slows
  nobody. The last byte of every answer (whole blob or range) is held back until the content
  is verified and committed: a client never receives a complete body that was not verified.
  When a fill fails, its readers raise the error mid-stream (the web layer then hangs up: the
  client sees a short body).
* **Across processes too** (filesystem driver): a process that does not get the lease waits
  until the holder's ingest file exists, then follows it while it grows
  (:meth:`~entrepot.storage.ContentStore.follow`), so its clients are streamed as the bytes
  arrive in the other process, with the same guarantee: the last byte of every answer is sent
  only once the content is in the store (the holder committed it, verified). It learns the
  size with an upstream ``HEAD`` (one per following fill: the holder's ``Content-Length`` is
  not shared). If the holder lets go of its ingest without the content appearing (it failed or
  died), or the ingest stops growing for twice ``upstream_stall_seconds``, its clients get an
  error mid-stream (a short body); the next request fills again. With other drivers, or when
  the upstream's ``HEAD`` gives no size, clients of a process that waits for another process's
  fill are served from the store once the content is there. So are clients of a blob whose
  upstream gave no ``Content-Length``.
* **Zero copy**: bytes of the store (cache hits, and the part of a fill's answer read after its
  commit) come as a :class:`~entrepot.storage.FileSpan` of the store's open, committed file
  when the driver has local files (filesystem), for the web layer to ``sendfile``; as bytes
  otherwise (memory driver). Unverified bytes of a running fill are always bytes.
* ``HEAD`` (:meth:`CachedBlobs.stat`) of a blob that is not cached asks the upstream with a
  ``HEAD`` and stores nothing; concurrent ``HEAD`` requests of one blob in one repository share
  one upstream ``HEAD`` in a process.
* **Blobs are scoped per repository** (:mod:`entrepot.proxy.links`): the store is shared, but
  a repository serves a stored blob only when it is linked to it (a manifest of it references
  the blob, or it fetched the blob, or its upstream said it has it). A stored blob that is not
  linked is asked of the repository's upstream with a ``HEAD`` (through its rule and
  credentials): if the upstream has it, it is linked and served from the store (``miss``,
  nothing downloaded again); a 404 is ``BLOB_UNKNOWN``. A client of a repository that joins a
  fill another repository started is asked the same way first. Warm pulls of linked blobs
  read the links from memory.
* **Limits** (``[cache] max_blob_bytes``, ``min_free_bytes``): a blob whose upstream announces
  more than ``max_blob_bytes`` (``GET`` or ``HEAD``), or more than the store's free space less
  ``min_free_bytes`` (less what the running fills of this process still have to write), is
  refused at once with a 502 that names the rule and the limit; a download of unknown size is
  cut (nothing kept) once it passes ``max_blob_bytes`` or the free space falls below
  ``min_free_bytes`` (checked every :data:`SPACE_CHECK_BYTES`). Each refusal is logged as a
  warning. Drivers that cannot tell their free space (``free_bytes`` is ``None``) are not
  checked for space.
* **A dead fill's lease**: a process that waits for the lease of a blob held by a process of
  this host that is gone (:func:`~entrepot.proxy.owners.is_gone`: killed, say) takes it over
  at once instead of waiting for it to expire.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from entrepot import errors as e
from entrepot.oci import Digest
from entrepot.proxy.engine import BlobDescriptor, BlobReader, Origin
from entrepot.proxy.owners import is_gone
from entrepot.proxy.resolution import Resolution
from entrepot.proxy.upstream_answers import check, media_type, where
from entrepot.storage import (
    ContentStore,
    FileSpan,
    FollowedIngest,
    Ingest,
    Reader,
    StorageError,
)

if TYPE_CHECKING:
    from entrepot.proxy.cache import CachingEngine

__all__ = ["BlobFills", "CachedBlobs"]

log = logging.getLogger("entrepot.proxy")

SPACE_CHECK_BYTES = 64 * 1024 * 1024
"""How often (in bytes written) a download of unknown size checks the store's free space."""

FOLLOW_CHUNK = 256 * 1024
"""The chunk a client of a running fill reads at a time: what it holds in memory, with as much
in its connection's buffer, is about twice this (so memory per cold client stays small)."""

FOLLOW_POLL_SECONDS = 0.02
"""How often a process following another process's fill looks at its ingest file."""


class BlobFills:
    """The running blob fills of one engine (one per digest in this process)."""

    def __init__(self, engine: CachingEngine) -> None:
        self.engine = engine
        self._fills: dict[Digest, _Fill] = {}

    async def cancel_all(self) -> None:
        """Cancel the running fills (their ingests are cancelled: nothing partial stays)."""
        fills = list(self._fills.values())
        for fill in fills:
            fill.task.cancel()
        await asyncio.gather(*(f.task for f in fills), return_exceptions=True)

    def fill(
        self, resolution: Resolution, digest: Digest, repository_id: int
    ) -> tuple[_Fill, bool]:
        """The running fill of ``digest`` (started for the repository if none); whether this
        call started it. A fill links the blob to the repository that started it."""
        found = self._fills.get(digest)
        if found is not None:
            return found, False
        fill = _Fill(digest, repository_id)
        self._fills[digest] = fill
        fill.task = asyncio.create_task(self._run_fill(resolution, fill), name=f"fill {digest}")
        fill.task.add_done_callback(lambda _t: self._fills.pop(digest, None))
        return fill, True

    def _pending_bytes(self, besides: _Fill) -> int:
        """What the other running fills of this process announced and have not written yet."""
        return sum(
            max(0, f.size - f.readable)
            for f in self._fills.values()
            if f is not besides and f.size is not None and not f.done.is_set()
        )

    async def _run_fill(self, resolution: Resolution, fill: _Fill) -> None:
        engine = self.engine
        key = f"blob:{fill.digest}"
        try:
            lease = await self._lease(resolution, fill, key)
            if isinstance(lease, FollowedIngest):
                try:
                    await self._follow(resolution, fill, lease)
                finally:
                    lease.close()
                return
            held = lease
            try:
                if await engine.store.has(fill.digest) is None:
                    await self._download(resolution, fill, key)
                elif not await engine.blob_links.linked(fill.repository_id, str(fill.digest)):
                    # another process filled it for another repository: served here only if
                    # this upstream has it
                    await upstream_head(engine, resolution, fill.repository_id, fill.digest)
                    await engine.blob_links.link(fill.repository_id, str(fill.digest))
            finally:
                if held:
                    await engine.leases.release(key, engine.owner)
        except BaseException as exc:
            fill.fail(exc)
            if isinstance(exc, e.EntrepotError):
                if fill.streaming:  # before, its clients get the error as their answer
                    log.warning("filling blob %s failed: %s", fill.digest, exc.message)
            elif not isinstance(exc, asyncio.CancelledError):
                log.exception("filling blob %s from %s failed", fill.digest, where(resolution))
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            fill.finish()

    async def _lease(self, resolution: Resolution, fill: _Fill, key: str) -> bool | FollowedIngest:
        """Take the lease of the fill (``True``), or wait until the content is in the store
        (``False``: another process filled it) or until the holder's ingest can be followed
        (returned). The lease of a process of this host that is gone is taken over at once;
        others are waited for until they expire."""
        engine = self.engine
        loop = asyncio.get_running_loop()
        deadline = loop.time() + engine.wait_seconds
        delay = 0.05
        judged: str | None = None  # the holder already found alive
        while not await engine.leases.acquire(key, engine.owner, engine.lease_seconds):
            if await engine.store.has(fill.digest) is not None:
                return False
            followed = await engine.store.follow(fill.digest)
            if followed is not None:
                return followed
            holder = await engine.leases.holder(key)
            if holder is not None and holder.owner != judged:
                judged = holder.owner
                if is_gone(holder.owner) and await engine.leases.take_over(
                    key, engine.owner, holder.owner, engine.lease_seconds
                ):
                    log.warning(
                        "took over the fill of blob %s from %s, a process of this host that "
                        "is gone",
                        fill.digest,
                        holder.owner,
                    )
                    return True
            if loop.time() > deadline:
                raise e.UpstreamError(
                    f"Another server process has been fetching blob {fill.digest} for "
                    f"longer than {engine.wait_seconds:.0f} s, {where(resolution)}."
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        return True

    async def _follow(self, resolution: Resolution, fill: _Fill, followed: FollowedIngest) -> None:
        """Stream another process's fill to this fill's clients: follow its ingest file until
        its writer lets go, then check the content is in the store (else raise)."""
        engine = self.engine
        digest = fill.digest
        head = await upstream_head(engine, resolution, fill.repository_id, digest)
        fill.start(head.size, head.media_type, followed)
        loop = asyncio.get_running_loop()
        # the holder fails a stalled upstream itself (and lets go); this catches a hung holder
        stall = 2 * engine.upstream.stall_timeout
        last, moved = -1, loop.time()
        while (size := await followed.poll()) is not None:
            now = loop.time()
            if size != last:
                last, moved = size, now
                fill.progress()
            elif now - moved > stall:
                raise e.UpstreamError(
                    f"Another server process fetching blob {digest} wrote nothing for "
                    f"{stall:.0f} s ({where(resolution)})."
                )
            await asyncio.sleep(FOLLOW_POLL_SECONDS)
        stored = await engine.store.has(digest)
        if stored is None or (head.size is not None and stored != head.size):
            raise e.UpstreamError(
                f"Another server process fetching blob {digest} stopped before storing it "
                f"({where(resolution)})."
            )
        # linked before its clients get their last byte: their next request is a hit
        await engine.blob_links.link(fill.repository_id, str(digest))
        fill.commit()

    async def _check_room(
        self, resolution: Resolution, fill: _Fill, size: int | None, written: int = 0
    ) -> None:
        """Refuse (raise) a fill of ``size`` bytes (``None``: unknown, ``written`` so far)
        that would leave less than ``[cache] min_free_bytes`` free in the store."""
        engine = self.engine
        free = await engine.store.storage.free_bytes()
        if free is None:
            return
        room = free - engine.min_free_bytes - self._pending_bytes(fill)
        if size is not None and size > room:
            raise refused(
                f"Blob {fill.digest} ({size} bytes) does not fit in the cache: the store has "
                f"{free} bytes free, [cache] min_free_bytes = {engine.min_free_bytes} must stay "
                f"free and other downloads need {free - engine.min_free_bytes - room}; not "
                f"fetched ({where(resolution)})."
            )
        if size is None and room < 0:
            raise refused(
                f"The store's free space fell below [cache] min_free_bytes = "
                f"{engine.min_free_bytes} while fetching blob {fill.digest} of unknown size "
                f"({written} bytes so far); the download was stopped and nothing kept "
                f"({where(resolution)})."
            )

    async def _download(self, resolution: Resolution, fill: _Fill, key: str) -> None:
        engine = self.engine
        limit = engine.max_blob_bytes
        resp = await engine.request(resolution, "GET", f"blobs/{fill.digest}")
        async with resp:
            await check(resolution, resp, f"blob '{fill.digest}'")
            size = resp.content_length
            if size is not None and size > limit:
                raise too_large(resolution, fill.digest, size, limit)
            await self._check_room(resolution, fill, size)
            next_space_check = SPACE_CHECK_BYTES
            renew_at = asyncio.get_running_loop().time() + engine.lease_seconds / 3
            async with engine.store.ingest(fill.digest, size) as ingest:
                fill.start(size, media_type(resp), ingest)
                async for chunk in resp.iter_chunks():
                    if size is None:  # no announced size: bounded as it arrives
                        total = ingest.size + len(chunk)
                        if total > limit:
                            raise refused(
                                f"The upstream sent more than [cache] max_blob_bytes = {limit} "
                                f"bytes for blob {fill.digest} without announcing a size; the "
                                f"download was stopped and nothing kept ({where(resolution)})."
                            )
                        if total >= next_space_check:
                            next_space_check = total + SPACE_CHECK_BYTES
                            await self._check_room(resolution, fill, None, total)
                    await ingest.write(chunk)
                    fill.progress()
                    now = asyncio.get_running_loop().time()
                    if now >= renew_at:
                        renew_at = now + engine.lease_seconds / 3
                        await engine.leases.renew(key, engine.owner, engine.lease_seconds)
                try:
                    await ingest.commit()
                except (e.DigestInvalid, e.SizeInvalid) as exc:
                    raise e.UpstreamError(
                        f"The upstream sent other content than blob {fill.digest}: "
                        f"{exc.message} ({where(resolution)})."
                    ) from None
                # linked before its clients get their last byte: their next request is a hit
                try:
                    await engine.blob_links.link(fill.repository_id, str(fill.digest))
                except Exception:  # stored anyway; the next request asks the upstream again
                    log.warning("could not link blob %s to its repository", fill.digest)
                fill.commit()
        await engine.index.put_blob(str(fill.digest), ingest.size, fill.media_type)
        log.info("cached blob %s (%d bytes) from %s", fill.digest, ingest.size, where(resolution))


def refused(message: str) -> e.UpstreamError:
    """The 502 of a blob refused by a limit of ``[cache]`` (logged as a warning)."""
    log.warning("%s", message)
    return e.UpstreamError(message)


def too_large(resolution: Resolution, digest: Digest, size: int, limit: int) -> e.UpstreamError:
    return refused(
        f"The upstream announced {size} bytes for blob {digest}, more than [cache] "
        f"max_blob_bytes = {limit}; not fetched ({where(resolution)})."
    )


@dataclass(frozen=True, slots=True)
class _Head:
    size: int | None
    media_type: str | None


async def upstream_head(
    engine: CachingEngine, resolution: Resolution, repository_id: int, digest: Digest
) -> _Head:
    """The upstream's ``HEAD`` of the blob through the rule, shared by concurrent callers of
    the same repository and digest in this process.

    :raises BlobUnknown: the upstream does not have it (404).
    :raises UpstreamError: it announces more than ``[cache] max_blob_bytes`` (or fails).
    """

    async def ask() -> _Head:
        resp = await engine.request(resolution, "HEAD", f"blobs/{digest}")
        async with resp:
            await check(resolution, resp, f"blob '{digest}'")
            answer = _Head(resp.content_length, media_type(resp))
        if answer.size is not None and answer.size > engine.max_blob_bytes:
            raise too_large(resolution, digest, answer.size, engine.max_blob_bytes)
        return answer

    return await engine.blob_heads.run((repository_id, str(digest)), ask)


@dataclass(eq=False)
class _Fill:
    """One running fill of a blob; see :meth:`BlobFills.fill`.

    ``repository_id`` is the repository that started it (the blob is linked to it once
    stored). ``started`` is set once the size is known (``streaming``: the ingest is being
    written and can be followed) or the fill ended without streaming; ``readable`` is how many
    leading bytes of the ingest can be read back; ``committed`` once the content is verified
    and stored; ``done`` when the fill task is over (``error``: why it failed). Every change
    wakes the readers waiting in :meth:`changed`.
    """

    digest: Digest
    repository_id: int = -1
    task: asyncio.Task[None] = field(init=False)
    size: int | None = None
    media_type: str | None = None
    ingest: Ingest | FollowedIngest | None = None
    streaming: bool = False
    readable: int = 0
    committed: bool = False
    error: BaseException | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def start(
        self, size: int | None, media_type: str | None, ingest: Ingest | FollowedIngest
    ) -> None:
        self.size = size
        self.media_type = media_type
        self.ingest = ingest
        self.streaming = size is not None
        self.started.set()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def changed(self) -> asyncio.Event:
        """An event set at the next change (take it before looking at the state)."""
        return self._changed

    def progress(self) -> None:
        assert self.ingest is not None
        readable = self.ingest.readable
        if readable != self.readable:
            self.readable = readable
            self._notify()

    def commit(self) -> None:
        self.committed = True
        self._notify()

    def fail(self, exc: BaseException) -> None:
        self.error = exc

    def finish(self) -> None:
        self.started.set()
        self.done.set()
        self._notify()


@dataclass(frozen=True, slots=True)
class CachedBlobs:
    engine: CachingEngine
    resolution: Resolution

    async def stat(self, digest: Digest) -> BlobDescriptor:
        engine = self.engine
        repository_id = await engine.repository_id(self.resolution)
        size = await engine.store.has(digest)
        if size is not None and await engine.blob_links.linked(repository_id, str(digest)):
            return BlobDescriptor(digest, size, None, Origin.CACHE)
        answer = await upstream_head(engine, self.resolution, repository_id, digest)
        if size is not None:  # stored for another repository, and this upstream has it
            await engine.blob_links.link(repository_id, str(digest))
            return BlobDescriptor(digest, size, answer.media_type, Origin.UPSTREAM)
        if answer.size is None:
            raise e.UpstreamError(
                f"The upstream gave no size for blob {digest}, {where(self.resolution)}."
            )
        return BlobDescriptor(digest, answer.size, answer.media_type, Origin.UPSTREAM)

    async def open(self, digest: Digest, offset: int = 0, length: int | None = None) -> BlobReader:
        engine = self.engine
        store = engine.store
        repository_id = await engine.repository_id(self.resolution)
        size = await store.has(digest)
        if size is not None:
            if await engine.blob_links.linked(repository_id, str(digest)):
                return await _StoreReader.open(store, digest, size, offset, length, Origin.CACHE)
            # stored for another repository: served here only if this upstream has it
            await upstream_head(engine, self.resolution, repository_id, digest)
            await engine.blob_links.link(repository_id, str(digest))
            return await _StoreReader.open(store, digest, size, offset, length, Origin.UPSTREAM)
        fill, started = engine.fills.fill(self.resolution, digest, repository_id)
        if not started and fill.repository_id != repository_id:
            # another repository's fill: joined only if this upstream has the blob
            await upstream_head(engine, self.resolution, repository_id, digest)
            await engine.blob_links.link(repository_id, str(digest))
        await fill.started.wait()
        if fill.streaming and fill.error is None and not fill.done.is_set():
            assert fill.size is not None
            descriptor = BlobDescriptor(digest, fill.size, fill.media_type, Origin.UPSTREAM)
            return _FillReader(descriptor, fill, store, offset, length)
        await fill.done.wait()
        if fill.error is not None and not fill.committed:
            error = fill.error
            if isinstance(error, e.EntrepotError):
                raise error
            raise e.UpstreamError(
                f"Fetching blob {digest} failed, {where(self.resolution)}."
            ) from error
        size = await store.has(digest)
        if size is None:
            raise e.BlobUnknown(
                f"The blob '{digest}' is not cached and could not be fetched, "
                f"{where(self.resolution)}."
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

    async def chunks(self) -> AsyncIterator[bytes | FileSpan]:
        reader = self._reader
        end = None if self._left is None else reader.offset + self._left
        span = reader.local_span(end)
        if span is not None:  # the whole answer at once: one sendfile
            self._left = 0
            yield span
            return
        async for chunk in reader:
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
    """A client of a running fill, ``length`` bytes (default: to the end) from ``offset``: what
    the ingest has written, then what it writes, read back from the ingest, and once the
    content is committed, the rest from the store. The last byte of the answer (of a range as
    of the whole blob) comes only after the commit, so no answer is complete before the
    content is verified. A failed fill raises its error (what was sent is a short body)."""

    def __init__(
        self,
        descriptor: BlobDescriptor,
        fill: _Fill,
        store: ContentStore,
        offset: int,
        length: int | None,
    ) -> None:
        self._descriptor = descriptor
        self._fill = fill
        self._store = store
        self._offset = offset
        self._end = descriptor.size if length is None else min(offset + length, descriptor.size)
        self._reader: Reader | None = None

    @property
    def descriptor(self) -> BlobDescriptor:
        return self._descriptor

    async def chunks(self) -> AsyncIterator[bytes | FileSpan]:
        fill = self._fill
        position, end = self._offset, self._end
        while position < end:
            changed = fill.changed()
            stop = end
            if fill.committed:
                self._reader = await self._store.open(self._descriptor.digest, position)
                span = self._reader.local_span(end)  # verified: the rest at once
                if span is not None:
                    position = end
                    yield span
                    continue  # the span uses the reader's descriptor: close() closes it
            elif fill.done.is_set():
                raise self._failed()
            else:
                # unverified bytes: never the last one of the answer before the commit
                stop = min(fill.readable, end - 1)
                if position >= stop:
                    await changed.wait()
                    continue
                assert fill.ingest is not None
                try:
                    self._reader = await fill.ingest.open_partial(position)
                except StorageError:
                    # Being committed or cancelled: wait for the fill's outcome. Its ingest
                    # may be committed already while the fill still links the blob (a
                    # database write): looping without waiting here would hold the event
                    # loop, and with it that write's lock on the database, forever.
                    await changed.wait()
                    continue
            start = position
            try:
                while position < stop:
                    chunk = await self._reader.read(min(FOLLOW_CHUNK, stop - position))
                    if not chunk:
                        break
                    position += len(chunk)
                    yield chunk
            finally:
                reader, self._reader = self._reader, None
                await reader.close()
            if position == start:  # nothing read: never go round again without waiting
                if fill.committed:
                    raise e.UpstreamError(
                        f"The stored blob {self._descriptor.digest} ended at byte {position} "
                        f"of {self._descriptor.size}."
                    )
                await changed.wait()
        while not fill.committed:  # an empty answer is complete too: only once verified
            changed = fill.changed()
            if fill.done.is_set():
                raise self._failed()
            await changed.wait()

    def _failed(self) -> e.UpstreamError:
        """What a reader raises when the fill ended without the content (its own exception,
        the fill's error as its cause)."""
        error = self._fill.error
        why = error.message if isinstance(error, e.EntrepotError) else "it was interrupted"
        failed = e.UpstreamError(f"Fetching blob {self._descriptor.digest} failed: {why}")
        failed.__cause__ = error
        return failed

    async def close(self) -> None:
        # the fill goes on without this client
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await reader.close()
