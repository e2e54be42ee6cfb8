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
* Clients in a process that waits for another process's fill are served from the store once
  the content is there (no streaming across processes: the other process's ingest is not
  verified). So are clients of a blob whose upstream gave no ``Content-Length``.
* **Zero copy**: bytes of the store (cache hits, and the part of a fill's answer read after its
  commit) come as a :class:`~entrepot.storage.FileSpan` of the store's open, committed file
  when the driver has local files (filesystem), for the web layer to ``sendfile``; as bytes
  otherwise (memory driver). Unverified bytes of a running fill are always bytes.
* ``HEAD`` (:meth:`CachedBlobs.stat`) of a blob that is not cached asks the upstream with a
  ``HEAD`` and stores nothing.
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
from entrepot.proxy.resolution import Resolution
from entrepot.proxy.upstream_answers import check, media_type, where
from entrepot.storage import ContentStore, FileSpan, Ingest, Reader, StorageError

if TYPE_CHECKING:
    from entrepot.proxy.cache import CachingEngine

__all__ = ["BlobFills", "CachedBlobs"]

log = logging.getLogger("entrepot.proxy")

FOLLOW_CHUNK = 256 * 1024
"""The chunk a client of a running fill reads at a time: what it holds in memory, with as much
in its connection's buffer, is about twice this (so memory per cold client stays small)."""


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
            deadline = asyncio.get_running_loop().time() + self.engine.wait_seconds
            delay = 0.05
            while not await self.engine.leases.acquire(
                key, self.engine.owner, self.engine.lease_seconds
            ):
                if await self.engine.store.has(fill.digest) is not None:
                    return  # another process filled it
                if asyncio.get_running_loop().time() > deadline:
                    raise e.UpstreamError(
                        f"Another server process has been fetching blob {fill.digest} for "
                        f"longer than {self.engine.wait_seconds:.0f} s, {where(resolution)}."
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
            try:
                if await self.engine.store.has(fill.digest) is None:
                    await self._download(resolution, fill, key)
            finally:
                await self.engine.leases.release(key, self.engine.owner)
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

    async def _download(self, resolution: Resolution, fill: _Fill, key: str) -> None:
        resp = await self.engine.request(resolution, "GET", f"blobs/{fill.digest}")
        async with resp:
            await check(resolution, resp, f"blob '{fill.digest}'")
            size = resp.content_length
            renew_at = asyncio.get_running_loop().time() + self.engine.lease_seconds / 3
            async with self.engine.store.ingest(fill.digest, size) as ingest:
                fill.start(size, media_type(resp), ingest)
                async for chunk in resp.iter_chunks():
                    await ingest.write(chunk)
                    fill.progress()
                    now = asyncio.get_running_loop().time()
                    if now >= renew_at:
                        renew_at = now + self.engine.lease_seconds / 3
                        await self.engine.leases.renew(
                            key, self.engine.owner, self.engine.lease_seconds
                        )
                try:
                    await ingest.commit()
                except (e.DigestInvalid, e.SizeInvalid) as exc:
                    raise e.UpstreamError(
                        f"The upstream sent other content than blob {fill.digest}: "
                        f"{exc.message} ({where(resolution)})."
                    ) from None
                fill.commit()
        await self.engine.index.put_blob(str(fill.digest), ingest.size, fill.media_type)
        log.info("cached blob %s (%d bytes) from %s", fill.digest, ingest.size, where(resolution))


@dataclass(eq=False)
class _Fill:
    """One running fill of a blob; see :meth:`BlobFills.fill`.

    ``started`` is set once the size is known (``streaming``: the ingest is being written and
    can be followed) or the fill ended without streaming; ``readable`` is how many leading
    bytes of the ingest can be read back; ``committed`` once the content is verified and
    stored; ``done`` when the fill task is over (``error``: why it failed). Every change wakes
    the readers waiting in :meth:`changed`.
    """

    digest: Digest
    task: asyncio.Task[None] = field(init=False)
    size: int | None = None
    media_type: str | None = None
    ingest: Ingest | None = None
    streaming: bool = False
    readable: int = 0
    committed: bool = False
    error: BaseException | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self, size: int | None, media_type: str | None, ingest: Ingest) -> None:
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
        size = await self.engine.store.has(digest)
        if size is not None:
            return BlobDescriptor(digest, size, None, Origin.CACHE)
        resp = await self.engine.request(self.resolution, "HEAD", f"blobs/{digest}")
        async with resp:
            await check(self.resolution, resp, f"blob '{digest}'")
            length = resp.content_length
            content_type = media_type(resp)
        if length is None:
            raise e.UpstreamError(
                f"The upstream gave no size for blob {digest}, {where(self.resolution)}."
            )
        return BlobDescriptor(digest, length, content_type, Origin.UPSTREAM)

    async def open(self, digest: Digest, offset: int = 0, length: int | None = None) -> BlobReader:
        store = self.engine.store
        size = await store.has(digest)
        if size is not None:
            return await _StoreReader.open(store, digest, size, offset, length, Origin.CACHE)
        fill, _ = self.engine.fills.fill(self.resolution, digest)
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
                    if fill.ingest.committed or fill.done.is_set() or fill.committed:
                        continue
                    await changed.wait()  # being committed or cancelled: wait for the outcome
                    continue
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
