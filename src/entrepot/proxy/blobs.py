"""Blobs of the pull-through cache: served from the content store, filled from upstream once.

What callers may rely on:

* A blob in the store is served from it (``hit``).
* On a miss one fill per digest runs per process (:class:`BlobFills`, an in-memory table of
  fills) and across processes (the lease ``blob:<digest>``; a process that does not get it
  waits, boundedly, for the content to appear in the store, taking the lease over if its holder
  lets it go or dies). The fill runs as its own task, so it goes on when the client that started
  it disconnects; its bytes are written to a verified
  :meth:`~entrepot.storage.ContentStore.ingest` (size and digest checked before the content
  becomes visible; a failed or partial fill leaves nothing) and **streamed to the client that
  started it** while they arrive. Clients that arrive while a fill runs (late joiners) wait for
  it to finish and are then served from the store. A client much slower than the upstream stops
  being fed from memory past :data:`MAX_BUFFERED` bytes and continues from the store once the
  fill is done.
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
from entrepot.storage import ContentStore, Reader

if TYPE_CHECKING:
    from entrepot.proxy.cache import CachingEngine

__all__ = ["MAX_BUFFERED", "BlobFills", "CachedBlobs"]

log = logging.getLogger("entrepot.proxy")

MAX_BUFFERED = 64 * 1024 * 1024
"""Bytes of a fill held in memory for a slow first client before it falls back to the store."""


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
            if not isinstance(exc, e.EntrepotError | asyncio.CancelledError):
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
            fill.start(size, media_type(resp))
            renew_at = asyncio.get_running_loop().time() + self.engine.lease_seconds / 3
            async with self.engine.store.ingest(fill.digest, size) as ingest:
                async for chunk in resp.iter_chunks():
                    await ingest.write(chunk)
                    fill.feed(chunk)
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
        await self.engine.index.put_blob(str(fill.digest), ingest.size, fill.media_type)
        log.info("cached blob %s (%d bytes) from %s", fill.digest, ingest.size, where(resolution))


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
        fill, first = self.engine.fills.fill(self.resolution, digest)
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
