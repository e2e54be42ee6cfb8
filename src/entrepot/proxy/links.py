"""Which blobs each repository may serve, in memory for the hot ones (beside :mod:`.hot`).

The content store is shared by every repository of every registry, but a repository serves a
blob only when the blob is *linked* to it (as distribution does): a manifest of the repository
references it, or the repository fetched it, or its upstream said it has it
(:meth:`~entrepot.metadata.SqlContentIndex.blob_linked`). What callers may rely on:

* :meth:`BlobLinks.linked` answers from memory when the link was seen before in this process
  (no I/O), else with one point read of the content index; a link found is remembered.
  Links are never removed while the content index keeps the repository, so remembering them
  cannot serve what a repository may not serve.
* :meth:`BlobLinks.link` records a link in the index and in memory.
* At most ``capacity`` links are held (least recently used dropped first); ``reads`` counts
  the point reads (for tests and measurements).
"""

from __future__ import annotations

from collections import OrderedDict

from entrepot.metadata import SqlContentIndex

__all__ = ["BlobLinks"]


class BlobLinks:
    """``(repository id, blob digest)`` links, in memory up to ``capacity`` (see the module doc)."""

    def __init__(self, index: SqlContentIndex, capacity: int = 200_000) -> None:
        self._index = index
        self._capacity = max(1, capacity)
        self._known: OrderedDict[tuple[int, str], None] = OrderedDict()
        self.reads = 0

    def _remember(self, key: tuple[int, str]) -> None:
        self._known[key] = None
        self._known.move_to_end(key)
        while len(self._known) > self._capacity:
            self._known.popitem(last=False)

    async def linked(self, repository_id: int, digest: str) -> bool:
        """Whether blob ``digest`` is linked to the repository."""
        key = (repository_id, digest)
        if key in self._known:
            self._known.move_to_end(key)
            return True
        self.reads += 1
        if not await self._index.blob_linked(repository_id, digest):
            return False
        self._remember(key)
        return True

    async def link(self, repository_id: int, digest: str) -> None:
        """Link blob ``digest`` to the repository (in the index and here)."""
        key = (repository_id, digest)
        if key in self._known:
            return
        await self._index.link_blob(repository_id, digest)
        self._remember(key)

    def __len__(self) -> int:
        return len(self._known)
