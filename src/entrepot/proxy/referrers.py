"""Referrers of a manifest through the pull-through cache.

What callers may rely on (:meth:`CachedReferrers.index`):

* The answer is an OCI image index (``application/vnd.oci.image.index.v1+json``) of the
  manifests whose ``subject`` is the digest asked about: the upstream's own answer, cached like
  a tag under the OCI 1.1 referrers tag-schema name ``<alg>-<hex>`` of the subject (so it is
  listed in ``tags/list``, and a client that falls back to the tag schema against this cache
  reads the same index). It is fresh for ``tag_ttl`` seconds (answered from memory or the
  store, no upstream request); then the upstream is asked again, and when it cannot be asked
  (unreachable, 5xx, 429) a cached answer is served ``stale`` (logged). Concurrent requests in
  this process share one question to the upstream.
* The upstream is asked with ``GET /v2/<upstream>/referrers/<digest>``. A registry without the
  referrers API (a 404 or 405 there, as distribution 2.8 answers) is asked for the tag-schema
  tag ``<alg>-<hex>`` instead; when that does not exist either, the answer is an empty index
  (``schemaVersion`` 2, ``manifests`` ``[]``), cached the same way.
* With ``artifact_type``, only the entries of that ``artifactType`` are listed (the index is
  re-serialised; unfiltered, the bytes are the cached ones, exactly).
* The referrer manifests listed are pulled by digest through the cache like any manifest.
* In a cache-only repository (:mod:`entrepot.proxy.orphans`) the cached answer is served as it
  was last cached (``hit``); without one, 404 ``MANIFEST_UNKNOWN`` says the rule is gone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from entrepot import errors as e
from entrepot.metadata.database import utcnow
from entrepot.oci import OCI_INDEX, Digest
from entrepot.proxy.engine import ManifestContent
from entrepot.proxy.manifests import MAX_MANIFEST_BYTES, CachedManifests
from entrepot.proxy.resolution import CacheOnly, Resolution
from entrepot.proxy.upstream_answers import check, is_failure, named
from entrepot.upstream.response import UpstreamResponse

if TYPE_CHECKING:
    from entrepot.proxy.cache import CachingEngine

__all__ = ["EMPTY_INDEX", "CachedReferrers", "referrers_tag"]

EMPTY_INDEX = json.dumps(
    {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}, separators=(",", ":")
).encode()
"""The answer when the upstream knows no referrer."""

_NO_API = frozenset({400, 404, 405})  # what registries without the referrers API answer


def referrers_tag(subject: Digest) -> str:
    """The OCI 1.1 referrers tag-schema tag of ``subject``: ``<alg>-<ref>``, ``<ref>`` being
    the encoded digest cut to its first 64 characters (the spec's limit: all of a sha256)."""
    return f"{subject.algorithm}-{subject.hex[:64]}"


@dataclass(frozen=True, slots=True)
class CachedReferrers:
    engine: CachingEngine
    resolution: Resolution | CacheOnly

    async def index(self, subject: Digest, artifact_type: str | None) -> ManifestContent:
        content = await self._cached_or_fetched(subject)
        if artifact_type is None:
            return content
        return _filtered(content, artifact_type)

    async def _cached_or_fetched(self, subject: Digest) -> ManifestContent:
        manifests = CachedManifests(self.engine, self.resolution)
        repo = await self.engine.repository_id(self.resolution)
        tag = referrers_tag(subject)
        local, fresh = await manifests.fresh(repo, tag)
        if local is not None and fresh:
            return local
        resolution = self.resolution
        if isinstance(resolution, CacheOnly):  # as last cached: there is no upstream to ask
            if local is not None:
                return local
            raise e.ManifestUnknown(resolution.not_cached(f"referrers index of '{subject}'"))
        return await self.engine.manifest_flights.run(
            ("referrers", repo, tag),
            lambda: self._check(resolution, manifests, repo, subject, local),
        )

    async def _check(
        self,
        resolution: Resolution,
        manifests: CachedManifests,
        repo: int,
        subject: Digest,
        local: ManifestContent | None,
    ) -> ManifestContent:
        tag = referrers_tag(subject)
        checked = utcnow()
        try:
            data = await self._ask(resolution, subject, tag, cached=local is not None)
            content = await manifests.keep(repo, data, OCI_INDEX, None)
        except e.UpstreamError as exc:
            if local is None or not is_failure(exc):
                raise
            return manifests.stale(tag, local, exc)
        await manifests.moved(repo, tag, content.digest, checked)
        return content

    async def _ask(
        self, resolution: Resolution, subject: Digest, tag: str, *, cached: bool
    ) -> bytes:
        """The upstream's referrers index of ``subject`` (see the module doc); ``cached``: a
        copy is cached (one quick try; a resting upstream is not asked)."""
        accept = {"Accept": OCI_INDEX}
        what = f"referrers of '{subject}'"
        resp = await self.engine.request(
            resolution, "GET", f"referrers/{subject}", accept, cached=cached
        )
        async with resp:
            if resp.status not in _NO_API:
                await check(resolution, resp, what)
                return await _body(resolution, resp)
        resp = await self.engine.request(
            resolution, "GET", f"manifests/{tag}", accept, cached=cached
        )
        async with resp:
            if resp.status == 404:
                return EMPTY_INDEX
            await check(resolution, resp, f"manifest '{tag}' ({what}, tag schema)")
            return await _body(resolution, resp)


async def _body(resolution: Resolution, resp: UpstreamResponse) -> bytes:
    try:
        return await resp.read(limit=MAX_MANIFEST_BYTES)
    except e.UpstreamError as exc:
        raise named(resolution, exc) from None


def _filtered(content: ManifestContent, artifact_type: str) -> ManifestContent:
    """``content`` (an index) with only the entries of ``artifact_type``."""
    body = json.loads(content.data)
    entries = body.get("manifests") or []
    body["manifests"] = [
        m for m in entries if isinstance(m, dict) and m.get("artifactType") == artifact_type
    ]
    data = json.dumps(body, separators=(",", ":")).encode()
    return ManifestContent(Digest.of(data), content.media_type, data, content.origin)
