"""Manifests and tags of the pull-through cache.

What callers may rely on:

* **Manifests by digest** come from memory (:mod:`entrepot.proxy.hot`) or from the store when
  this repository's index records them; else ``GET /v2/<upstream>/manifests/<digest>``
  (``Accept``: every manifest media type), the body's digest is checked against the one asked
  for, and the exact bytes are stored, indexed (with the descriptors they reference) and served
  with their media type. A cached digest never goes upstream again. A child manifest of a cached
  index is pulled the same way, by its digest, through the same repository.
* **Manifests by tag**: a tag checked upstream less than ``tag_ttl`` seconds ago is served from
  the cache (``hit``). This process answers that from memory, without reading the database or
  the store, while its own record of the check is younger than the TTL; otherwise it reads the
  index (another process may have checked the tag). A stale tag is revalidated upstream
  (``HEAD``, then ``GET`` only when the digest it names is not cached here) and moves (``miss``);
  concurrent requests in this process share one check, and one fetch of a manifest by digest.
  When the upstream cannot be asked (unreachable, TLS failure, 5xx, 429, an invalid manifest)
  and a copy is cached, the copy is served as ``stale`` and a warning is logged; the ``HEAD``
  of a cached tag is one try of at most ``[cache] revalidate_timeout_seconds``, and none at
  all while the upstream rests after a failure (:mod:`entrepot.proxy.cache`). Without a copy
  the upstream error is raised, naming the rule: 401 ``UNAUTHORIZED``, 403 ``DENIED``, 429
  ``TOOMANYREQUESTS``, else 502 (an invalid manifest from upstream included).
* **Accept** (the client's manifest media types; none, or ``*/*``, accepts anything), as
  distribution negotiates it, except that nothing is ever converted: an OCI manifest or index
  the client does not accept is 404 ``MANIFEST_UNKNOWN`` ("OCI manifest found, but accept header
  does not support OCI manifests", as distribution words it); a Docker manifest list pulled by
  tag by a client that does not accept lists is answered with its ``linux/amd64`` manifest (by
  digest through the cache), if the client accepts that one's type; a Docker schema 2 manifest
  pulled by tag by a client that does not accept it (schema 1 only) is 404 ``MANIFEST_UNKNOWN``
  (distribution would convert it to schema 1). By digest, Docker manifests and lists are served
  as stored whatever the client accepts: nothing else has that digest.
* **Tags** lists the cached tags of the repository (the index), including the
  ``<alg>-<hex>`` tags of cached referrers (:mod:`entrepot.proxy.referrers`).
* **Cache-only** (a :class:`~entrepot.proxy.resolution.CacheOnly` repository, whose rule is
  gone: :mod:`entrepot.proxy.orphans`): manifests by digest and by tag are what is cached, tags
  as they were last cached (never revalidated), all ``hit``; anything else is 404
  ``MANIFEST_UNKNOWN`` saying the rule is gone. Nothing goes upstream.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from entrepot import errors as e
from entrepot.metadata.database import utcnow
from entrepot.metadata.records import BlobRef, NewManifest
from entrepot.oci import (
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1_MANIFEST,
    DOCKER_SCHEMA1_SIGNED_MANIFEST,
    MANIFEST_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Digest,
    parse_manifest,
)
from entrepot.proxy.engine import ManifestContent, Origin
from entrepot.proxy.resolution import CacheOnly, Resolution
from entrepot.proxy.upstream_answers import check, is_failure, media_type, named, where
from entrepot.storage import StorageError

if TYPE_CHECKING:
    from entrepot.proxy.cache import CachingEngine

__all__ = ["MAX_MANIFEST_BYTES", "CachedManifests", "CachedTags", "accepted_manifest_types"]

log = logging.getLogger("entrepot.proxy")

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""The largest manifest accepted from upstream (distribution's limit)."""

ACCEPT_ALL = ", ".join(MANIFEST_MEDIA_TYPES)
"""The ``Accept`` sent upstream for manifests: every type this cache serves."""

_NEGOTIATED = frozenset(
    {*MANIFEST_MEDIA_TYPES, DOCKER_SCHEMA1_MANIFEST, DOCKER_SCHEMA1_SIGNED_MANIFEST}
)
DEFAULT_PLATFORM = ("linux", "amd64")
"""The platform whose manifest answers for a list a client cannot read (distribution's)."""


def accepted_manifest_types(accept: Sequence[str]) -> frozenset[str] | None:
    """The manifest media types a client named in ``accept``; ``None``: it takes any (no
    ``Accept``, ``*/*``, or no manifest media type named)."""
    if "*/*" in accept:
        return None
    wanted = frozenset(t for t in accept if t in _NEGOTIATED)
    return wanted or None


@dataclass(frozen=True, slots=True)
class CachedManifests:
    """The manifests of one resolution (see the module doc)."""

    engine: CachingEngine
    resolution: Resolution | CacheOnly

    def _upstream(self, what: str) -> Resolution:
        """The rule's resolution, to fetch ``what`` (``"manifest 'x'"``) with.

        :raises ManifestUnknown: the repository is cache-only (its rule is gone).
        """
        resolution = self.resolution
        if isinstance(resolution, CacheOnly):
            raise e.ManifestUnknown(resolution.not_cached(what))
        return resolution

    async def get(self, reference: str | Digest, accept: Sequence[str]) -> ManifestContent:
        repo = await self.engine.repository_id(self.resolution)
        if isinstance(reference, Digest):
            content = await self.by_digest(repo, reference)
        else:
            content = await self.by_tag(repo, reference)
        wanted = accepted_manifest_types(accept)
        if wanted is None or content.media_type in wanted:
            return content
        return await self._negotiate(repo, reference, content, wanted)

    # -- accept ----------------------------------------------------------------------------------
    async def _negotiate(
        self,
        repo: int,
        reference: str | Digest,
        content: ManifestContent,
        wanted: frozenset[str],
    ) -> ManifestContent:
        """What a client that accepts only ``wanted`` gets instead of ``content``."""
        stored = content.media_type
        shown = f"'{reference}' of repository '{self.resolution.repository}'"
        accepts = ", ".join(sorted(wanted))
        if stored == OCI_MANIFEST:
            raise e.ManifestUnknown(
                f"OCI manifest found, but accept header does not support OCI manifests: {shown} "
                f"is an OCI image manifest, and the Accept header lists only {accepts}."
            )
        if stored == OCI_INDEX:
            raise e.ManifestUnknown(
                f"OCI index found, but accept header does not support OCI indexes: {shown} is "
                f"an OCI image index, and the Accept header lists only {accepts}."
            )
        if isinstance(reference, Digest):
            return content  # Docker types by digest: nothing else has that digest
        if stored == DOCKER_MANIFEST_LIST:
            child = _platform_child(content, *DEFAULT_PLATFORM)
            if child is None:
                raise e.ManifestUnknown(
                    f"The manifest list {shown} has no {'/'.join(DEFAULT_PLATFORM)} manifest "
                    f"to give a client that does not accept manifest lists (Accept: {accepts})."
                )
            found = await self.by_digest(repo, child)
            if found.media_type in wanted:
                return found
            stored, shown = found.media_type, f"'{child}', the linux/amd64 manifest of {shown},"
        raise e.ManifestUnknown(
            f"The manifest {shown} is of type {stored}, which the Accept header does not list "
            f"(it lists {accepts}); this cache never converts manifests."
        )

    # -- by digest -------------------------------------------------------------------------------
    async def by_digest(self, repo: int, digest: Digest) -> ManifestContent:
        """The manifest ``digest`` of repository ``repo`` (local, else fetched)."""
        local = await self.local(repo, digest, Origin.CACHE)
        if local is not None:
            return local
        resolution = self._upstream(f"manifest '{digest}'")
        key = ("manifest", repo, str(digest))
        return await self.engine.manifest_flights.run(
            key, lambda: self._fetch(resolution, repo, str(digest), digest)
        )

    async def local(self, repo: int, digest: Digest, origin: Origin) -> ManifestContent | None:
        """The manifest from memory or the store when the repository's index holds it."""
        hot = self.engine.hot.manifest(repo, digest)
        if hot is not None:
            return ManifestContent(digest, hot.media_type, hot.data, origin)
        record = await self.engine.index.manifest(repo, str(digest))
        if record is None:
            return None
        try:
            data = await self.engine.store.read(digest)
        except StorageError:
            return None  # indexed but gone from the store: fetch it again
        self.engine.hot.put_manifest(repo, digest, record.media_type, data)
        return ManifestContent(digest, record.media_type, data, origin)

    async def _fetch(
        self, resolution: Resolution, repo: int, reference: str, expected: Digest | None
    ) -> ManifestContent:
        """GET the manifest upstream, verify, store and index it."""
        what = f"manifest '{reference}'"
        resp = await self.engine.request(
            resolution, "GET", f"manifests/{reference}", {"Accept": ACCEPT_ALL}
        )
        async with resp:
            await check(resolution, resp, what)
            try:
                data = await resp.read(limit=MAX_MANIFEST_BYTES)
            except e.UpstreamError as exc:
                raise named(resolution, exc) from None
            content_type = media_type(resp)
        return await self.keep(repo, data, content_type, expected)

    async def keep(
        self, repo: int, data: bytes, content_type: str | None, expected: Digest | None
    ) -> ManifestContent:
        """Verify ``data`` (against ``expected`` when given), then store, index and hold it.

        :raises UpstreamError: the digest differs from ``expected`` (nothing is stored).
        :raises UpstreamManifestInvalid: ``data`` is not a valid manifest (502).
        :raises Unsupported: ``data`` is a manifest of a type this cache does not serve.
        """
        digest = Digest.of(data, expected.algorithm) if expected else Digest.of(data)
        if expected is not None and digest != expected:
            raise e.UpstreamError(
                f"The upstream sent a manifest of digest {digest} for {expected}, "
                f"{where(self._upstream(f'manifest {expected}'))}; not stored."
            )
        try:
            manifest = parse_manifest(data, content_type)
        except e.ManifestInvalid as exc:  # the upstream's fault: 502, never the client's 400
            raise e.UpstreamManifestInvalid(
                f"The upstream sent an invalid manifest ({exc.message}), "
                f"{where(self._upstream('a manifest'))}; not stored."
            ) from None
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
        self.engine.hot.put_manifest(repo, digest, manifest.media_type, data)
        self.engine.cached_names.forget(self.resolution.registry_id, self.resolution.repository)
        return ManifestContent(digest, manifest.media_type, data, Origin.UPSTREAM)

    # -- by tag ----------------------------------------------------------------------------------
    async def fresh(self, repo: int, tag: str) -> tuple[ManifestContent | None, bool]:
        """The cached manifest of ``tag`` (or ``None``), and whether it is fresh (checked less
        than the TTL ago): from memory when this process checked it, else from the index."""
        engine = self.engine
        now = utcnow()
        hot = engine.hot.fresh_tag(repo, tag, engine.tag_ttl, now)
        if hot is not None:
            local = await self.local(repo, hot.digest, Origin.CACHE)
            if local is not None:
                return local, True
        record = await engine.index.tag(repo, tag)
        if record is None:
            return None, False
        local = await self.local(repo, Digest.parse(record.digest), Origin.CACHE)
        if local is None:
            return None, False
        if now - record.checked_at < engine.tag_ttl:
            engine.hot.put_tag(repo, tag, local.digest, record.checked_at)
            return local, True
        return local, False

    async def moved(self, repo: int, tag: str, digest: Digest, checked: dt.datetime) -> None:
        """Record that the upstream named ``digest`` for ``tag`` at ``checked``."""
        await self.engine.index.put_tag(repo, tag, str(digest), checked)
        self.engine.hot.put_tag(repo, tag, digest, checked)

    async def by_tag(self, repo: int, tag: str) -> ManifestContent:
        local, fresh = await self.fresh(repo, tag)
        if local is not None and fresh:
            return local
        if local is not None and isinstance(self.resolution, CacheOnly):
            return local  # as last cached: there is no upstream to ask
        resolution = self._upstream(f"manifest '{tag}'")
        return await self.engine.manifest_flights.run(
            ("tag", repo, tag), lambda: self._check(resolution, repo, tag, local)
        )

    async def _check(
        self, resolution: Resolution, repo: int, tag: str, local: ManifestContent | None
    ) -> ManifestContent:
        """Ask the upstream about ``tag`` (``local``: the cached copy) and move it."""
        checked = utcnow()
        try:
            content = await self._revalidate(resolution, repo, tag, local)
        except e.UpstreamError as exc:
            if local is None or not is_failure(exc):
                raise
            return self.stale(tag, local, exc)
        await self.moved(repo, tag, content.digest, checked)
        return content

    def stale(self, tag: str, local: ManifestContent, exc: e.UpstreamError) -> ManifestContent:
        """``local`` served as ``stale`` because the upstream failed with ``exc`` (logged: a
        warning when it was asked, at debug level while it rests after a failure, which the
        engine logged once)."""
        level = logging.DEBUG if isinstance(exc, e.UpstreamNotAsked) else logging.WARNING
        log.log(
            level,
            "serving the cached tag %s:%s (%s) stale: %s",
            self.resolution.repository,
            tag,
            local.digest,
            exc.message,
        )
        return ManifestContent(local.digest, local.media_type, local.data, Origin.STALE)

    async def _revalidate(
        self, resolution: Resolution, repo: int, tag: str, local: ManifestContent | None
    ) -> ManifestContent:
        if local is not None:  # one quick try: the cached copy is served if it fails
            resp = await self.engine.request(
                resolution, "HEAD", f"manifests/{tag}", {"Accept": ACCEPT_ALL}, cached=True
            )
            async with resp:
                await check(resolution, resp, f"manifest '{tag}'")
                named = resp.headers.get("Docker-Content-Digest")
            if named is not None and named == str(local.digest):
                return ManifestContent(local.digest, local.media_type, local.data, Origin.UPSTREAM)
            if named is not None:
                try:
                    other = await self.local(repo, Digest.parse(named), Origin.UPSTREAM)
                except e.DigestInvalid:
                    other = None
                if other is not None:
                    return other
        return await self._fetch(resolution, repo, tag, None)


def _platform_child(content: ManifestContent, os: str, architecture: str) -> Digest | None:
    """The digest of the index entry for ``os/architecture`` (the first one), or ``None``."""
    for entry in parse_manifest(content.data, content.media_type).manifests:
        platform = entry.platform
        if platform is not None and platform.os == os and platform.architecture == architecture:
            return entry.digest
    return None


@dataclass(frozen=True, slots=True)
class CachedTags:
    engine: CachingEngine
    resolution: Resolution | CacheOnly

    async def list(self, after: str, limit: int) -> list[str]:
        found = await self.engine.index.repository(
            self.resolution.registry_id, self.resolution.repository
        )
        return [] if found is None else await self.engine.index.tags(found.id, after, limit)
