"""What the registry face asks of the pull-through engine: a small protocol, and a stand-in.

The face (:mod:`entrepot.web.oci`) authenticates, finds the registry, validates the name, the
reference or digest and the query, refuses pushes and resolves the cache rule
(:mod:`entrepot.proxy.resolution`). Then it asks an :class:`Engine` for the
:class:`Repository` of that :class:`~entrepot.proxy.resolution.Resolution` and calls one of its
services, as distribution's ``Repository`` does:

* ``manifests.get(reference, accept)``: a manifest by tag or :class:`~entrepot.oci.Digest`, as
  a :class:`ManifestContent` (its exact bytes, digest, media type); ``accept`` lists the media
  types the client accepts (empty: any). ``HEAD`` uses the same call and sends no body.
* ``blobs.stat(digest)`` and ``blobs.open(digest, offset, length)``: a blob's
  :class:`BlobDescriptor`, and a :class:`BlobReader` of its bytes from ``offset`` (``length``
  bytes, or to the end).
* ``tags.list(after, limit)``: the repository's cached tags after ``after``, sorted, at most
  ``limit`` (the face pages them and writes the ``Link`` header).
* ``referrers.index(subject, artifact_type)``: the referrers of a manifest as an image index.

When no rule covers a name (and the request is not in mirror mode), the face asks
``cached_repository(registry_id, registry, name)``: the :class:`Repository` of a repository that
holds cached content although its rule is gone, served from the cache only (its
``resolution`` is a :class:`~entrepot.proxy.resolution.CacheOnly`), or ``None``.

The engine itself answers one question about a whole registry: ``catalog(registry_id, after,
limit)``, the repositories it holds content for (as pulled here: target names), sorted, after
``after``, at most ``limit`` (``GET /v2/_catalog``; the face pages it).

Each answer says where it came from (:class:`Origin`); the face writes it in the
:data:`CACHE_HEADER` response header. Services raise the domain errors of
:mod:`entrepot.errors` (``ManifestUnknown``, ``BlobUnknown``, upstream errors naming the rule),
never HTTP errors: the face renders them as OCI errors.

:class:`NotCachedEngine` stands in until the engine exists: nothing is cached and nothing is
fetched, so a manifest or a referrers index is 404 ``MANIFEST_UNKNOWN`` and a blob 404
``BLOB_UNKNOWN``, each message naming the repository, the rule and the upstream and saying that
this server does not fetch from upstream yet; the tag list and the catalog are the (empty)
lists of what is cached.
404 rather than 502/503: nothing failed, the content is simply not there, which is what a
client must be told; the engine replaces exactly these answers by fetching.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from entrepot import errors as e
from entrepot.oci import Digest
from entrepot.proxy.resolution import CacheOnly, Resolution
from entrepot.storage import FileSpan

__all__ = [
    "CACHE_HEADER",
    "BlobDescriptor",
    "BlobReader",
    "BlobService",
    "Engine",
    "ManifestContent",
    "ManifestService",
    "NotCachedEngine",
    "Origin",
    "ReferrerService",
    "Repository",
    "TagService",
]

CACHE_HEADER = "X-Entrepot-Cache"
"""The response header that says where an answer came from (an :class:`Origin` value)."""


class Origin(StrEnum):
    """Where the content of an answer came from."""

    CACHE = "hit"  # the local store, fresh: no upstream request was made
    UPSTREAM = "miss"  # fetched from (or revalidated with) the upstream for this request
    STALE = "stale"  # the local store, served because the upstream could not be asked


@dataclass(frozen=True, slots=True)
class ManifestContent:
    """A manifest (or index) exactly as stored: ``data`` are the bytes ``digest`` covers."""

    digest: Digest
    media_type: str
    data: bytes
    origin: Origin


@dataclass(frozen=True, slots=True)
class BlobDescriptor:
    """A blob's digest and size (``media_type`` when known)."""

    digest: Digest
    size: int
    media_type: str | None
    origin: Origin


class BlobReader(Protocol):
    """The bytes of one blob from an offset; ``close`` releases it (always called)."""

    @property
    def descriptor(self) -> BlobDescriptor: ...

    def chunks(self) -> AsyncIterator[bytes | FileSpan]:
        """The bytes in order, in chunks of any size, as they become available; a
        :class:`~entrepot.storage.FileSpan` stands for bytes of a verified local file, to be
        sent with ``sendfile`` (or read from it: :meth:`~entrepot.storage.FileSpan.chunks`)."""
        ...

    async def close(self) -> None: ...


class ManifestService(Protocol):
    async def get(self, reference: str | Digest, accept: Sequence[str]) -> ManifestContent:
        """The manifest that tag or digest ``reference`` names.

        :raises ManifestUnknown: it is not cached and cannot be fetched.
        """
        ...


class BlobService(Protocol):
    async def stat(self, digest: Digest) -> BlobDescriptor:
        """:raises BlobUnknown: it is not cached and cannot be fetched."""
        ...

    async def open(self, digest: Digest, offset: int = 0, length: int | None = None) -> BlobReader:
        """:raises BlobUnknown: it is not cached and cannot be fetched."""
        ...


class TagService(Protocol):
    async def list(self, after: str, limit: int) -> list[str]:
        """Cached tags greater than ``after`` (``""``: from the first), sorted, at most
        ``limit``."""
        ...


class ReferrerService(Protocol):
    async def index(self, subject: Digest, artifact_type: str | None) -> ManifestContent:
        """The referrers of ``subject`` as an OCI image index (filtered by ``artifact_type``)."""
        ...


class Repository(Protocol):
    """One repository of one registry, as a rule resolved it (or a cache-only one)."""

    @property
    def resolution(self) -> Resolution | CacheOnly: ...
    @property
    def manifests(self) -> ManifestService: ...
    @property
    def blobs(self) -> BlobService: ...
    @property
    def tags(self) -> TagService: ...
    @property
    def referrers(self) -> ReferrerService: ...


class Engine(Protocol):
    """The pull-through engine: a :class:`Repository` for each resolved pull."""

    def repository(self, resolution: Resolution) -> Repository: ...

    async def cached_repository(
        self, registry_id: int, registry: str, name: str
    ) -> Repository | None:
        """The cache-only repository ``name`` (no rule covers it, it holds cached content),
        or ``None``."""
        ...

    async def catalog(self, registry_id: int, after: str, limit: int) -> list[str]:
        """The registry's repositories with cached content greater than ``after`` (``""``: from
        the first), sorted, at most ``limit``."""
        ...


# -- the stand-in --------------------------------------------------------------------------------
def _where(resolution: Resolution) -> str:
    up = resolution.upstream
    return (
        f"repository '{resolution.repository}' (cache rule '{resolution.rule.name}', upstream "
        f"{up.login_server}/{up.repository})"
    )


_NO_FETCH = "this server does not fetch from upstream registries yet"


@dataclass(frozen=True, slots=True)
class _NotCached:
    resolution: Resolution

    @property
    def manifests(self) -> _NotCached:
        return self

    @property
    def blobs(self) -> _NotCached:
        return self

    @property
    def tags(self) -> _NotCached:
        return self

    @property
    def referrers(self) -> _NotCached:
        return self

    async def get(self, reference: str | Digest, accept: Sequence[str]) -> ManifestContent:
        raise e.ManifestUnknown(
            f"The manifest '{reference}' of {_where(self.resolution)} is not cached, and "
            f"{_NO_FETCH}."
        )

    async def stat(self, digest: Digest) -> BlobDescriptor:
        raise e.BlobUnknown(
            f"The blob '{digest}' of {_where(self.resolution)} is not cached, and {_NO_FETCH}."
        )

    async def open(self, digest: Digest, offset: int = 0, length: int | None = None) -> BlobReader:
        await self.stat(digest)
        raise AssertionError("unreachable")  # pragma: no cover

    async def list(self, after: str, limit: int) -> list[str]:
        return []

    async def index(self, subject: Digest, artifact_type: str | None) -> ManifestContent:
        raise e.ManifestUnknown(
            f"The referrers of '{subject}' in {_where(self.resolution)} are not cached, and "
            f"{_NO_FETCH}."
        )


class NotCachedEngine:
    """The :class:`Engine` of a server that caches nothing yet (see the module doc)."""

    def repository(self, resolution: Resolution) -> Repository:
        return _NotCached(resolution)

    async def cached_repository(
        self, registry_id: int, registry: str, name: str
    ) -> Repository | None:
        return None

    async def catalog(self, registry_id: int, after: str, limit: int) -> list[str]:
        return []
