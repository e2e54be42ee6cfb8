"""Manifests and tags of the pull-through cache.

What callers may rely on:

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
* **Tags** lists the cached tags of the repository (the index).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from entrepot import errors as e
from entrepot.metadata.database import utcnow
from entrepot.metadata.records import BlobRef, NewManifest
from entrepot.oci import MANIFEST_MEDIA_TYPES, Digest, parse_manifest
from entrepot.proxy.engine import ManifestContent, Origin
from entrepot.proxy.resolution import Resolution
from entrepot.proxy.upstream_answers import check, is_failure, media_type, named, where
from entrepot.storage import StorageError

if TYPE_CHECKING:
    from entrepot.proxy.cache import CachingEngine

__all__ = ["MAX_MANIFEST_BYTES", "CachedManifests", "CachedTags"]

log = logging.getLogger("entrepot.proxy")

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""The largest manifest accepted from upstream (distribution's limit)."""

_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)


@dataclass(frozen=True, slots=True)
class CachedManifests:
    """The manifests of one resolution (see the module doc)."""

    engine: CachingEngine
    resolution: Resolution

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
            await check(self.resolution, resp, what)
            try:
                data = await resp.read(limit=MAX_MANIFEST_BYTES)
            except e.UpstreamError as exc:
                raise named(self.resolution, exc) from None
            content_type = media_type(resp)
        digest = Digest.of(data, expected.algorithm) if expected else Digest.of(data)
        if expected is not None and digest != expected:
            raise e.UpstreamError(
                f"The upstream sent a manifest of digest {digest} for {expected}, "
                f"{where(self.resolution)}; not stored."
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
            if local is None or not is_failure(exc):
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
                await check(self.resolution, resp, f"manifest '{tag}'")
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
class CachedTags:
    engine: CachingEngine
    resolution: Resolution

    async def list(self, after: str, limit: int) -> list[str]:
        found = await self.engine.index.repository(
            self.resolution.registry_id, self.resolution.repository
        )
        return [] if found is None else await self.engine.index.tags(found.id, after, limit)
