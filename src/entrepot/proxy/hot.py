"""What a warm pull needs, in memory: tags and manifest bytes, bounded, one per process.

A warm pull by tag (tag → digest → manifest bytes) is answered from here without a database
read or a file read. What callers may rely on:

* Keys hold the repository id, so content cached for one repository is never served from
  another (rules of different repositories may use different credentials).
* **Tags** map ``(repository id, tag)`` to a :class:`HotTag` (the digest, and when the upstream
  was last asked). :meth:`HotCache.fresh_tag` returns one only while
  ``checked_at + ttl`` is in the future: another process may have moved the tag meanwhile, and
  the TTL is the contract for how long a tag may lag the upstream anyway. :meth:`put_tag` keeps
  the newest check (an older one never replaces it). At most ``max_tags`` entries, least
  recently used first out.
* **Manifests** map ``(repository id, digest)`` to their exact bytes and media type; they are
  immutable, so they never expire (:meth:`HotCache.forget_manifest` drops one that is deleted
  from the cache). Their total size is at most ``max_bytes`` (least recently
  used first out); a manifest larger than a quarter of it is not kept.
* ``stats`` counts hits and misses of each map (for tests and measurements); nothing here does
  I/O or awaits, so it needs no lock on one event loop.
* :class:`Flights` runs one upstream fetch per key at a time in this process: concurrent
  requests for the same manifest or tag share it, and it goes on when the request that started
  it is cancelled (a client hanging up).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from entrepot.oci import Digest

__all__ = ["Flights", "HotCache", "HotManifest", "HotStats", "HotTag"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class HotTag:
    """Where a tag pointed when the upstream was last asked, at ``checked_at``."""

    digest: Digest
    checked_at: dt.datetime


@dataclass(frozen=True, slots=True)
class HotManifest:
    media_type: str
    data: bytes


@dataclass(slots=True)
class HotStats:
    """Counts since the cache was made (reads that found, or did not find, an entry)."""

    tag_hits: int = 0
    tag_misses: int = 0
    manifest_hits: int = 0
    manifest_misses: int = 0


@dataclass(slots=True)
class HotCache:
    """The in-memory tags and manifests of one process (see the module doc)."""

    max_bytes: int = 64 * 1024 * 1024
    max_tags: int = 100_000
    stats: HotStats = field(default_factory=HotStats)
    _tags: OrderedDict[tuple[int, str], HotTag] = field(default_factory=OrderedDict)
    _manifests: OrderedDict[tuple[int, str], HotManifest] = field(default_factory=OrderedDict)
    _bytes: int = 0

    # -- tags --------------------------------------------------------------------------------
    def fresh_tag(
        self, repository_id: int, tag: str, ttl: dt.timedelta, now: dt.datetime
    ) -> HotTag | None:
        """The tag's entry if it was checked less than ``ttl`` before ``now``, else ``None``."""
        key = (repository_id, tag)
        found = self._tags.get(key)
        if found is None or now - found.checked_at >= ttl:
            self.stats.tag_misses += 1
            return None
        self._tags.move_to_end(key)
        self.stats.tag_hits += 1
        return found

    def put_tag(
        self, repository_id: int, tag: str, digest: Digest, checked_at: dt.datetime
    ) -> None:
        """Record that the upstream named ``digest`` for the tag at ``checked_at``."""
        key = (repository_id, tag)
        known = self._tags.get(key)
        if known is not None and known.checked_at > checked_at:
            return
        self._tags[key] = HotTag(digest, checked_at)
        self._tags.move_to_end(key)
        while len(self._tags) > self.max_tags:
            self._tags.popitem(last=False)

    def forget_tag(self, repository_id: int, tag: str) -> None:
        self._tags.pop((repository_id, tag), None)

    # -- manifests -----------------------------------------------------------------------------
    def manifest(self, repository_id: int, digest: Digest) -> HotManifest | None:
        key = (repository_id, str(digest))
        found = self._manifests.get(key)
        if found is None:
            self.stats.manifest_misses += 1
            return None
        self._manifests.move_to_end(key)
        self.stats.manifest_hits += 1
        return found

    def put_manifest(
        self, repository_id: int, digest: Digest, media_type: str, data: bytes
    ) -> None:
        """Keep the manifest's exact bytes (verified against ``digest`` by the caller)."""
        size = len(data)
        if size > self.max_bytes // 4:
            return
        key = (repository_id, str(digest))
        if key in self._manifests:
            self._manifests.move_to_end(key)
            return
        self._manifests[key] = HotManifest(media_type, data)
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, dropped = self._manifests.popitem(last=False)
            self._bytes -= len(dropped.data)

    def forget_manifest(self, repository_id: int, digest: Digest) -> None:
        """Drop the manifest (for whoever deletes it from the store or the index)."""
        dropped = self._manifests.pop((repository_id, str(digest)), None)
        if dropped is not None:
            self._bytes -= len(dropped.data)

    @property
    def manifest_bytes(self) -> int:
        """The total size of the manifests held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._tags) + len(self._manifests)


class Flights:
    """One running call per key (see the module doc)."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[Any]] = {}

    async def run(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        """The result of ``call()``, or of the call already running for ``key``; its
        exception, if it raises (every waiter gets it)."""
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(call())
            self._running[key] = task
            task.add_done_callback(lambda done: self._done(key, done))
        result: T = await asyncio.shield(task)
        return result

    def _done(self, key: Hashable, task: asyncio.Future[Any]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved: a failure nobody waits for any more is not logged

    async def cancel_all(self) -> None:
        """Cancel every running call and wait for them to end (on shutdown)."""
        running = list(self._running.values())
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    def __len__(self) -> int:
        return len(self._running)
