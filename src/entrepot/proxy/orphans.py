"""Repositories whose cache rule is gone: what they cached stays pullable, from the cache only.

A cache rule's target repository keeps its content when the rule is deleted (as ACR does). The
registry face asks the engine for such a repository when no rule covers a pulled name
(:meth:`~entrepot.proxy.cache.CachingEngine.cached_repository`); what callers may rely on:

* **Which names**: a repository of the registry that holds at least one cached manifest (the
  repositories ``_catalog`` lists), addressed by its own name. Not in mirror mode (``?ns=``):
  the mirror maps upstream names to repositories through the rules' sources, and without a rule
  there is no such mapping.
* **What it serves** (a :class:`~entrepot.proxy.cache.CachedRepository` over a
  :class:`~entrepot.proxy.resolution.CacheOnly`, its blobs :class:`CacheOnlyBlobs`): manifests
  by digest and by tag, blobs linked to the repository (:mod:`entrepot.proxy.links`; a blob
  cached for another repository is not served here), ``tags/list`` and referrers exactly as they
  were last cached, each ``hit``; tags are never revalidated and nothing is ever asked of an
  upstream. What is not cached is 404 ``MANIFEST_UNKNOWN`` / ``BLOB_UNKNOWN`` saying that the
  repository's cache rule is gone. Pushes are refused by the face as for any name no rule covers
  (``UNSUPPORTED``).
* **A rule created again** over the name makes it a rule target again: pulls go through the
  rule (tags revalidated, misses fetched) and reuse what is cached (the same repository row).
* **The cost of a lookup** (:class:`CachedNames`): the answer for ``(registry, name)``, found
  or not, is kept in memory for ``ttl`` seconds, so a name that is simply wrong costs one point
  read per ``ttl`` however often it is asked, and a warm pull of a cache-only repository reads
  no repository row. Concurrent lookups of one name share one read; at most ``capacity``
  names are held (least recently used dropped first). When this process caches a manifest, the
  entry of its repository is dropped (:meth:`CachedNames.forget`), so a name that was not found
  before is found at once; content cached by another process is seen within ``ttl`` seconds
  (it can only be cached while a rule covers the name, and the rules themselves reach other
  processes within ``[registry] rules_refresh_seconds``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from entrepot import errors as e
from entrepot.metadata import SqlContentIndex
from entrepot.oci import Digest
from entrepot.proxy.blobs import _StoreReader
from entrepot.proxy.engine import BlobDescriptor, BlobReader, Origin
from entrepot.proxy.hot import Flights
from entrepot.proxy.resolution import CacheOnly

if TYPE_CHECKING:
    from entrepot.proxy.cache import CachingEngine

__all__ = ["CacheOnlyBlobs", "CachedNames"]


@dataclass(slots=True)
class _Entry:
    repository_id: int | None
    checked: float


class CachedNames:
    """``(registry id, name)`` → the id of the repository if it holds cached content, held in
    memory (see the module doc).

    :param index: the content index (:meth:`~entrepot.metadata.SqlContentIndex.cached_repository`).
    :param ttl: seconds an answer is reused before it is read again.
    :param capacity: the most names held.
    :param clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        index: SqlContentIndex,
        ttl: float = 5.0,
        capacity: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._index = index
        self._ttl = ttl
        self._capacity = max(1, capacity)
        self._clock = clock
        self._entries: OrderedDict[tuple[int, str], _Entry] = OrderedDict()
        self._flights = Flights()
        self._generation = 0
        self.reads = 0
        """How many point reads the lookups made (for tests and measurements)."""

    async def find(self, registry_id: int, name: str) -> int | None:
        """The row id of repository ``name`` of the registry if it holds a cached manifest."""
        key = (registry_id, name)
        entry = self._entries.get(key)
        if entry is not None and self._clock() - entry.checked < self._ttl:
            self._entries.move_to_end(key)
            return entry.repository_id
        return await self._flights.run(key, lambda: self._read(key))

    async def _read(self, key: tuple[int, str]) -> int | None:
        generation = self._generation
        started = self._clock()
        self.reads += 1
        record = await self._index.cached_repository(*key)
        found = None if record is None else record.id
        if generation == self._generation:  # else content was cached meanwhile: do not keep
            self._entries[key] = _Entry(found, started)
            self._entries.move_to_end(key)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return found

    def forget(self, registry_id: int, name: str) -> None:
        """Drop the answer for the repository (content was cached there)."""
        self._generation += 1
        self._entries.pop((registry_id, name), None)

    def __len__(self) -> int:
        return len(self._entries)

    async def close(self) -> None:
        await self._flights.cancel_all()


@dataclass(frozen=True, slots=True)
class CacheOnlyBlobs:
    """Blobs from the content store only, those linked to the repository."""

    engine: CachingEngine
    resolution: CacheOnly

    async def _size(self, digest: Digest) -> int:
        """The stored size of a blob linked to the repository (others are not served)."""
        size = await self.engine.store.has(digest)
        linked = size is not None and await self.engine.blob_links.linked(
            self.resolution.repository_id, str(digest)
        )
        if size is None or not linked:
            raise e.BlobUnknown(self.resolution.not_cached(f"blob '{digest}'"))
        return size

    async def stat(self, digest: Digest) -> BlobDescriptor:
        return BlobDescriptor(digest, await self._size(digest), None, Origin.CACHE)

    async def open(self, digest: Digest, offset: int = 0, length: int | None = None) -> BlobReader:
        size = await self._size(digest)
        store = self.engine.store
        return await _StoreReader.open(store, digest, size, offset, length, Origin.CACHE)
