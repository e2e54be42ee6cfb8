"""The pull-through engine: manifests and blobs served from the content store, filled from
upstream on a miss.

:class:`CachingEngine` holds what every pull shares: the content index, the store, the leases,
the upstream client, the credentials of rules and the running fills. Its
:class:`CachedRepository` is the :class:`~entrepot.proxy.engine.Repository` the registry face
asks, made of the services in :mod:`entrepot.proxy.manifests` (manifests by tag and digest,
tags), :mod:`entrepot.proxy.blobs` (blobs and their single-flight fills) and
:mod:`entrepot.proxy.referrers`. A repository no rule covers that holds cached content (its rule
was deleted) is a :class:`~entrepot.proxy.orphans.CacheOnlyRepository`
(:meth:`CachingEngine.cached_repository`): served from the cache only.

Upstream access (:meth:`CachingEngine.request`): anonymous when the rule has no credential set,
else with the set's credentials (:mod:`entrepot.proxy.credentials`); an upstream 401 (or a token
server refusing them) has the set's health measured again; errors name the rule
(:mod:`entrepot.proxy.upstream_answers`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from entrepot import errors as e
from entrepot.metadata import SqlContentIndex, SqlLeases
from entrepot.proxy.blobs import BlobFills, CachedBlobs
from entrepot.proxy.credentials import RuleCredentials
from entrepot.proxy.hot import Flights, HotCache
from entrepot.proxy.links import BlobLinks
from entrepot.proxy.manifests import CachedManifests, CachedTags
from entrepot.proxy.orphans import CachedNames, CacheOnlyRepository
from entrepot.proxy.owners import process_owner
from entrepot.proxy.referrers import CachedReferrers
from entrepot.proxy.resolution import CacheOnly, Resolution
from entrepot.proxy.upstream_answers import named
from entrepot.storage import ContentStore
from entrepot.upstream.client import Credentials, UpstreamClient
from entrepot.upstream.response import UpstreamResponse

__all__ = ["CachedRepository", "CachingEngine"]


# -- the engine ----------------------------------------------------------------------------------
class CachingEngine:
    """The :class:`~entrepot.proxy.engine.Engine` that caches (see the module doc).

    :param index: the content index (repositories, tags, manifests, blobs).
    :param leases: cross-process single-flight of blob fills.
    :param upstream: the shared upstream client.
    :param tag_ttl: seconds a checked tag is served without asking the upstream again.
    :param lease_seconds: how long a fill's lease lasts between renewals.
    :param wait_seconds: how long a process waits for another process's fill of a blob.
    :param credentials: the credentials of rules with a credential set (``None``: every
        upstream is pulled anonymously); an upstream 401 has the set's health measured again.
    :param hot_bytes: the most manifest bytes held in memory (:attr:`hot`).
    :param names_ttl: seconds the answer to "does this repository no rule covers hold cached
        content" is reused (:attr:`cached_names`).
    :param max_blob_bytes: the largest blob fetched from an upstream.
    :param min_free_bytes: the free space of the store a fill must leave.
    The content store is attached by :meth:`open` (the server opens it on startup).
    """

    def __init__(
        self,
        index: SqlContentIndex,
        leases: SqlLeases,
        upstream: UpstreamClient,
        *,
        tag_ttl: float = 300.0,
        lease_seconds: float = 30.0,
        wait_seconds: float = 600.0,
        credentials: RuleCredentials | None = None,
        hot_bytes: int = 64 * 1024 * 1024,
        names_ttl: float = 5.0,
        max_blob_bytes: int = 32 * 1024**3,
        min_free_bytes: int = 1024**3,
    ) -> None:
        self.credentials = credentials
        self.index = index
        self.leases = leases
        self.upstream = upstream
        self.tag_ttl = dt.timedelta(seconds=tag_ttl)
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.max_blob_bytes = max_blob_bytes
        self.min_free_bytes = min_free_bytes
        self.owner = process_owner()
        """This engine's name as a lease owner (:mod:`entrepot.proxy.owners`)."""
        self._store: ContentStore | None = None
        self._repositories: dict[tuple[int, str], int] = {}
        self.hot = HotCache(max_bytes=hot_bytes)
        """What warm pulls need in memory (:mod:`entrepot.proxy.hot`)."""
        self.manifest_flights = Flights()
        """Upstream fetches of manifests and tag checks running in this process."""
        self.fills = BlobFills(self)
        self.blob_links = BlobLinks(index)
        """Which blobs each repository may serve (:mod:`entrepot.proxy.links`)."""
        self.blob_heads = Flights()
        """Upstream ``HEAD`` requests of blobs running in this process."""
        self.cached_names = CachedNames(index, ttl=names_ttl)
        """Which repositories no rule covers hold cached content (:mod:`entrepot.proxy.orphans`)."""

    def open(self, store: ContentStore) -> None:
        """Serve from ``store`` (opened by the caller)."""
        self._store = store

    async def close(self) -> None:
        """Cancel the running fills (their ingests are cancelled: nothing partial stays) and
        manifest fetches, and close the store."""
        if self.credentials is not None:
            await self.credentials.close()
        await self.fills.cancel_all()
        await self.manifest_flights.cancel_all()
        await self.blob_heads.cancel_all()
        await self.cached_names.close()
        if self._store is not None:
            await self._store.storage.close()
            self._store = None

    @property
    def store(self) -> ContentStore:
        if self._store is None:
            raise RuntimeError("the caching engine has no content store (open it first)")
        return self._store

    def repository(self, resolution: Resolution) -> CachedRepository:
        return CachedRepository(self, resolution)

    async def cached_repository(
        self, registry_id: int, registry: str, name: str
    ) -> CacheOnlyRepository | None:
        """The repository ``name`` that no rule covers, served from the cache only, when it
        holds cached content; ``None`` otherwise (see :mod:`entrepot.proxy.orphans`)."""
        found = await self.cached_names.find(registry_id, name)
        if found is None:
            return None
        self._repositories[(registry_id, name)] = found
        return CacheOnlyRepository(self, CacheOnly(registry_id, registry, name, found))

    async def catalog(self, registry_id: int, after: str, limit: int) -> list[str]:
        return await self.index.cached_repositories(registry_id, after, limit)

    async def repository_id(self, resolution: Resolution | CacheOnly) -> int:
        key = (resolution.registry_id, resolution.repository)
        found = self._repositories.get(key)
        if found is None:
            record = await self.index.ensure_repository(*key)
            found = self._repositories[key] = record.id
        return found

    async def _credentials(self, resolution: Resolution) -> Credentials | None:
        set_id = resolution.rule.credential_set_id
        if set_id is None or self.credentials is None:
            return None
        try:
            return await self.credentials.get(set_id)
        except e.UpstreamError as exc:
            raise named(resolution, exc) from None

    def _refused(self, resolution: Resolution) -> None:
        set_id = resolution.rule.credential_set_id
        if set_id is not None and self.credentials is not None:
            self.credentials.unauthorized(set_id)

    async def request(
        self, resolution: Resolution, method: str, path: str, headers: dict[str, str] | None = None
    ) -> UpstreamResponse:
        """``method /v2/<upstream repository>/<path>`` upstream; client errors name the rule."""
        up = resolution.upstream
        credentials = await self._credentials(resolution)
        try:
            resp = await self.upstream.request(
                method,
                up.login_server,
                f"/v2/{up.repository}/{path}",
                credentials=credentials,
                scope=f"repository:{up.repository}:pull",
                headers=headers,
            )
        except e.UpstreamError as exc:
            if isinstance(exc, e.UpstreamAuthenticationFailed):
                self._refused(resolution)
            raise named(resolution, exc) from None
        if resp.status == 401:
            self._refused(resolution)
        return resp


# -- the repository ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CachedRepository:
    """The :class:`~entrepot.proxy.engine.Repository` of one resolution."""

    engine: CachingEngine
    resolution: Resolution

    @property
    def manifests(self) -> CachedManifests:
        return CachedManifests(self.engine, self.resolution)

    @property
    def blobs(self) -> CachedBlobs:
        return CachedBlobs(self.engine, self.resolution)

    @property
    def tags(self) -> CachedTags:
        return CachedTags(self.engine, self.resolution)

    @property
    def referrers(self) -> CachedReferrers:
        return CachedReferrers(self.engine, self.resolution)
