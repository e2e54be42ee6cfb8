"""The content-addressed layout above the drivers, and :class:`ContentStore`, its one door.

Layout version ``v1`` (:data:`LAYOUT_VERSION`), in storage paths (the filesystem driver puts
them under its root, ``<data_dir>/content`` by default)::

    blobs/                              every piece of content, by digest
      sha256/                           one directory per digest algorithm
        ab/                             the first two hex characters of the digest
          abcdef0123...                 the content of sha256:abcdef0123... (the full hex)
      sha512/
        ...
    uploads/                            reserved for push upload sessions (a later issue)
      <upload id>/data
    _uploads/                           the filesystem driver's own ingest area (not a storage
                                        path: the driver writes a file there, then renames it
                                        to its blob path on commit)

Manifests are blobs like any other content: ``blobs/sha256/..`` holds image layers, config
blobs, manifests and indexes alike, with their exact bytes. Which repository references what,
media types and tags live in the metadata store (:class:`entrepot.metadata.ContentIndex`), not
here: this layout holds bytes only, so a blob is stored once however many repositories use it.

What callers may rely on:

* **Nothing unverified is ever visible.** :meth:`ContentStore.ingest` hashes what is written,
  and its :meth:`Ingest.commit` checks digest and size *before* the driver makes the content
  visible; a mismatch raises :class:`~entrepot.errors.DigestInvalid` or
  :class:`~entrepot.errors.SizeInvalid` and leaves nothing. Content larger than an expected
  size is refused as soon as it is written.
* **Content at a blob path is whole and immutable.** Concurrent ingests of one digest are
  harmless: each is verified, and a commit that finds the content already there keeps it.
* **Reading back is explicit.** :meth:`Ingest.open_partial` reads what an ingest has written
  so far, unverified, for a caller that streams content while it arrives and holds back its
  end until :meth:`Ingest.commit` succeeded.
* **Following another process's ingest** (:meth:`ContentStore.follow`, filesystem driver
  only): a process reads, unverified, what a writer in another process sharing the root has
  written so far, and learns when that writer let go (then the content is at its blob path,
  or the ingest failed).
* Digests may be given as :class:`~entrepot.oci.Digest` or as text (parsed, so a malformed one
  raises :class:`~entrepot.errors.DigestInvalid`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Self

from entrepot.errors import DigestInvalid, SizeInvalid
from entrepot.oci import ALGORITHMS, Digest, Hasher, new_hasher
from entrepot.storage.driver import (
    CHUNK_SIZE,
    PathNotFound,
    Reader,
    Storage,
    StorageError,
    Writer,
)
from entrepot.storage.filesystem import FilesystemDriver, FollowedIngest

__all__ = ["LAYOUT_VERSION", "ContentStore", "Ingest", "blob_path", "upload_path"]

LAYOUT_VERSION = "v1"
BLOBS = "blobs"
UPLOADS = "uploads"
_INLINE_HASH = 64 * 1024  # smaller pending data is hashed on the event loop, larger in a thread


def _digest(digest: Digest | str) -> Digest:
    return digest if isinstance(digest, Digest) else Digest.parse(digest)


def blob_path(digest: Digest | str) -> str:
    """The storage path of the content of ``digest``: ``blobs/<alg>/<hex[:2]>/<hex>``."""
    d = _digest(digest)
    return f"{BLOBS}/{d.algorithm}/{d.hex[:2]}/{d.hex}"


def upload_path(upload_id: str) -> str:
    """The storage path of the data of push upload session ``upload_id`` (reserved)."""
    return f"{UPLOADS}/{upload_id}/data"


class ContentStore:
    """Blobs (and manifests) by digest, on one :class:`~entrepot.storage.Storage`.

    Every method may raise :class:`~entrepot.storage.StorageError` when the driver fails.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def has(self, digest: Digest | str) -> int | None:
        """The size of the content of ``digest`` if it is stored, else ``None``."""
        try:
            info = await self.storage.stat(blob_path(digest))
        except PathNotFound:
            return None
        return None if info.is_dir else info.size

    async def open(self, digest: Digest | str, offset: int = 0) -> Reader:
        """A reader of the content of ``digest`` from ``offset``.

        :raises PathNotFound: when it is not stored (it may have been deleted since
            :meth:`has`).
        :raises InvalidOffset: when ``offset`` is negative or past the end.
        """
        return await self.storage.reader(blob_path(digest), offset)

    async def read(self, digest: Digest | str) -> bytes:
        """The whole content of ``digest`` (for small content such as manifests); it was
        verified when it was stored.

        :raises PathNotFound: when it is not stored.
        """
        return await self.storage.get_content(blob_path(digest))

    async def put(self, data: bytes, expected: Digest | str | None = None) -> Digest:
        """Store small content (a manifest) whole; return its digest.

        :param expected: the digest ``data`` must have (its algorithm is used); default: the
            sha256 of ``data`` is computed and nothing is checked.
        :raises DigestInvalid: when ``data`` does not match ``expected`` (nothing is stored).
        """
        if expected is None:
            digest = Digest.of(data)
        else:
            want = _digest(expected)
            digest = Digest.of(data, want.algorithm)
            if digest != want:
                raise DigestInvalid(f"Content of digest {digest} was expected to be {want}.")
        if await self.has(digest) != len(data):
            await self.storage.put_content(blob_path(digest), data)
        return digest

    def ingest(self, expected: Digest | str, expected_size: int | None = None) -> Ingest:
        """A writer of the content of ``expected``, verified on :meth:`Ingest.commit`.

        Use as ``async with store.ingest(digest, size) as ingest:`` then ``write`` and
        ``commit``; leaving the block without committing (or with an exception) cancels.

        :param expected_size: the size the content must have, when known (a descriptor's
            ``size``, a ``Content-Length``); checked as data arrives and on commit.
        :raises DigestInvalid: when ``expected`` is malformed or of an unknown algorithm.
        """
        digest = _digest(expected)
        if expected_size is not None and expected_size < 0:
            raise SizeInvalid(f"Invalid size {expected_size} for {digest}.")
        return Ingest(self, digest, expected_size)

    async def follow(self, digest: Digest | str) -> FollowedIngest | None:
        """A live ingest of ``digest`` by any process sharing this store, to read while it
        grows (filesystem driver; ``None`` with other drivers or when there is none). Its
        bytes are **not verified**: hold back the end until :meth:`has` finds the content."""
        driver = self.storage.driver
        if not isinstance(driver, FilesystemDriver):
            return None
        return await driver.follow(blob_path(digest))

    def local_path(self, digest: Digest | str) -> Path | None:
        """Where the content of ``digest`` is on this machine, for ``sendfile`` (filesystem
        driver), else ``None``. No I/O: it may not exist, or vanish (see
        :meth:`Storage.local_path`)."""
        return self.storage.local_path(blob_path(digest))

    async def delete(self, digest: Digest | str) -> bool:
        """Delete the content of ``digest``; whether it was there."""
        try:
            await self.storage.delete(blob_path(digest))
        except PathNotFound:
            return False
        return True

    async def digests(self) -> AsyncIterator[tuple[Digest, int]]:
        """Every stored digest with its size (in no promised order; for audits and GC).
        Files that are not content of this layout are skipped."""
        for algorithm in ALGORITHMS:
            try:
                async for info in self.storage.walk(f"{BLOBS}/{algorithm}"):
                    if info.is_dir:
                        continue
                    try:
                        digest = Digest(algorithm, info.path.rsplit("/", 1)[-1])
                    except DigestInvalid:
                        continue
                    if info.path == blob_path(digest):
                        yield digest, info.size
            except PathNotFound:
                continue


class Ingest:
    """Content of an expected digest being written; see :meth:`ContentStore.ingest`.

    ``size`` is the number of bytes written so far. Once :meth:`commit` or :meth:`cancel` has
    run the ingest is done (``committed`` says which). One task at a time may use it.
    """

    def __init__(self, store: ContentStore, digest: Digest, expected_size: int | None) -> None:
        self.store = store
        self.digest = digest
        self.expected_size = expected_size
        self.size = 0
        self.committed = False
        self._hasher: Hasher = new_hasher(digest.algorithm)
        self._writer: Writer | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._done = False

    @property
    def path(self) -> str:
        """The storage path the content will have."""
        return blob_path(self.digest)

    async def _open(self) -> Writer:
        if self._done:
            state = "committed" if self.committed else "cancelled"
            raise StorageError(self.path, f"the ingest of {self.digest} is {state}")
        if self._writer is None:
            self._writer = await self.store.storage.writer(self.path)
        return self._writer

    async def write(self, data: bytes) -> None:
        """Add ``data`` to the content.

        :raises SizeInvalid: when the content grows past the expected size (the ingest is then
            cancelled).
        :raises StorageError: when the driver fails (cancel the ingest then).
        """
        await self._open()
        if not data:
            return
        size = self.size + len(data)
        if self.expected_size is not None and size > self.expected_size:
            await self.cancel()
            raise SizeInvalid(
                f"Content of {self.digest} is larger than the expected {self.expected_size} bytes."
            )
        self._pending.append(bytes(data))
        self._pending_size += len(data)
        self.size = size
        if self._pending_size >= CHUNK_SIZE:
            await self._flush()

    async def _flush(self) -> None:
        """Hash the pending data and hand it to the writer, both at once (hashing a large
        chunk runs in a thread: ``hashlib`` releases the GIL, so it overlaps the write)."""
        if not self._pending:
            return
        writer = await self._open()
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        if len(data) < _INLINE_HASH:
            self._hasher.update(data)
            await writer.write(data)
        else:
            await asyncio.gather(asyncio.to_thread(self._hasher.update, data), writer.write(data))

    @property
    def readable(self) -> int:
        """How many leading bytes :meth:`open_partial` can read now (the bytes that reached
        the driver; up to about two :data:`CHUNK_SIZE` behind :attr:`size`)."""
        return self._writer.readable if self._writer is not None else 0

    async def open_partial(self, offset: int) -> Reader:
        """A :class:`Reader` of the bytes written so far, from ``offset`` up to
        :attr:`readable` as it is now (its ``size``). These bytes are **not verified**: the
        caller must not let them pass for the content (hold back the end until
        :meth:`commit` succeeded). The reader keeps reading them after a commit or cancel.

        :raises StorageError: once the ingest is committing or done.
        :raises UnsupportedOperation: when the driver cannot read back what it is writing.
        """
        if self._done or self._writer is None:
            raise StorageError(self.path, f"the ingest of {self.digest} is not being written")
        return await self._writer.open_partial(offset)

    async def commit(self) -> Digest:
        """Verify size and digest, then make the content visible at its blob path.

        :return: the digest.
        :raises SizeInvalid: when fewer or more bytes than ``expected_size`` were written.
        :raises DigestInvalid: when the content has another digest.
        :raises StorageError: when the driver fails.
        On any error nothing is visible and the ingest is cancelled.
        """
        writer = await self._open()
        try:
            await self._flush()
            if self.expected_size is not None and self.size != self.expected_size:
                raise SizeInvalid(
                    f"Content of {self.digest} has {self.size} bytes, not the expected "
                    f"{self.expected_size}."
                )
            actual = Digest.from_hasher(self._hasher)
            if actual != self.digest:
                raise DigestInvalid(
                    f"Content expected to be {self.digest} has digest {actual}; not stored."
                )
            if await self.store.has(self.digest) == self.size:
                await writer.cancel()  # the same content is there already (another ingest)
            else:
                await writer.commit()
        except BaseException:
            await self.cancel()
            raise
        self._done = True
        self.committed = True
        return self.digest

    async def cancel(self) -> None:
        """Discard what was written; idempotent, and a no-op after a commit."""
        if self._done:
            return
        self._done = True
        self._pending.clear()
        if self._writer is not None:
            await self._writer.cancel()

    async def __aenter__(self) -> Self:
        await self._open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.cancel()
