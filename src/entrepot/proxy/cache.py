"""The pull-through engine: manifests and blobs served from the content store, filled from
upstream on a miss.

:class:`CachingEngine` holds what every pull shares: the content index, the store, the leases,
the upstream client, the credentials of rules and the running fills. Its
:class:`CachedRepository` is the :class:`~entrepot.proxy.engine.Repository` the registry face
asks, made of the services in :mod:`entrepot.proxy.manifests` (manifests by tag and digest,
tags), :mod:`entrepot.proxy.blobs` (blobs and their single-flight fills) and
:mod:`entrepot.proxy.referrers`. A repository no rule covers that holds cached content (its rule
was deleted) is a :class:`CachedRepository` over a :class:`~entrepot.proxy.resolution.CacheOnly`
(:meth:`CachingEngine.cached_repository`): served from the cache only
(:mod:`entrepot.proxy.orphans`).

Upstream access (:meth:`CachingEngine.request`): anonymous when the rule has no credential set,
else with the set's credentials (:mod:`entrepot.proxy.credentials`); an upstream 401 (or a token
server refusing them) has the set's health measured again; errors name the rule
(:mod:`entrepot.proxy.upstream_answers`). A set that cannot be used gets clients an
``UNAUTHORIZED`` naming only the set and the rule; why goes to the log.

Failing upstreams: a request that has a cached copy to fall back on (``cached=True``: a stale
tag's revalidation) makes one try that waits at most ``revalidate_timeout`` seconds per step.
When an upstream (its login server) cannot be reached at all (a connection or TLS failure of a
manifest or referrers request: :func:`_rests`; not a 5xx or 429 for one path, not a blob's
redirect target, not an address the guard refused), it *rests* for ``upstream_backoff`` seconds:
requests with a cached copy raise :class:`~entrepot.errors.UpstreamNotAsked` at once (the caller
serves the copy ``stale``), and requests without one still ask, with one try each (no retries)
until an answer ends the rest. One WARNING says the upstream rests; operator-side failures (the
upstream unreachable or failing for a request without a cached copy, an upstream 401 to a
credential set, a set whose secrets cannot be read) log one WARNING per (rule, kind) a minute,
naming the rule, the upstream and the reason
(:class:`~entrepot.proxy.operator_log.OperatorLog`).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from entrepot import errors as e
from entrepot.metadata import SqlContentIndex, SqlLeases
from entrepot.proxy.blobs import BlobFills, CachedBlobs
from entrepot.proxy.credentials import CredentialsUnusable, RuleCredentials
from entrepot.proxy.hot import Flights, HotCache
from entrepot.proxy.links import BlobLinks
from entrepot.proxy.manifests import CachedManifests, CachedTags
from entrepot.proxy.operator_log import OperatorLog
from entrepot.proxy.orphans import CachedNames, CacheOnlyBlobs
from entrepot.proxy.owners import process_owner
from entrepot.proxy.referrers import CachedReferrers
from entrepot.proxy.resolution import CacheOnly, Resolution
from entrepot.proxy.upstream_answers import is_failure, named, where
from entrepot.storage import ContentStore
from entrepot.upstream.client import Credentials, UpstreamClient
from entrepot.upstream.endpoints import normalize_login_server
from entrepot.upstream.response import UpstreamResponse

__all__ = ["MAX_REPOSITORY_IDS", "CachedRepository", "CachingEngine"]

MAX_REPOSITORY_IDS = 65536
"""Repository ids an engine keeps in memory (the least recently used are read again)."""

log = logging.getLogger("entrepot.proxy")


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
    :param revalidate_timeout: seconds each step of a request with a cached copy may wait.
    :param upstream_backoff: seconds an upstream that could not be asked rests (0: never).
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
        revalidate_timeout: float = 3.0,
        upstream_backoff: float = 15.0,
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
        self._repositories: OrderedDict[tuple[int, str], int] = OrderedDict()
        """Repository ids by (registry id, name), least recently used first (bounded by
        :data:`MAX_REPOSITORY_IDS`: names are chosen by clients)."""
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
        self.revalidate_timeout = revalidate_timeout
        self.upstream_backoff = upstream_backoff
        self._resting: dict[str, float] = {}  # login server -> time.monotonic() it may be asked
        self.warnings = OperatorLog(log)
        """Rate-limited operator warnings (see the module doc)."""

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
    ) -> CachedRepository | None:
        """The repository ``name`` that no rule covers, served from the cache only, when it
        holds cached content; ``None`` otherwise (see :mod:`entrepot.proxy.orphans`)."""
        found = await self.cached_names.find(registry_id, name)
        if found is None:
            return None
        self._remember((registry_id, name), found)
        return CachedRepository(self, CacheOnly(registry_id, registry, name, found))

    async def catalog(self, registry_id: int, after: str, limit: int) -> list[str]:
        return await self.index.cached_repositories(registry_id, after, limit)

    async def repository_id(self, resolution: Resolution | CacheOnly) -> int:
        key = (resolution.registry_id, resolution.repository)
        found = self._repositories.get(key)
        if found is None:
            record = await self.index.ensure_repository(*key)
            found = record.id
        self._remember(key, found)
        return found

    def _remember(self, key: tuple[int, str], repository_id: int) -> None:
        self._repositories[key] = repository_id
        self._repositories.move_to_end(key)
        while len(self._repositories) > MAX_REPOSITORY_IDS:
            self._repositories.popitem(last=False)

    async def _credentials(self, resolution: Resolution) -> Credentials | None:
        set_id = resolution.rule.credential_set_id
        if set_id is None or self.credentials is None:
            return None
        try:
            return await self.credentials.get(set_id)
        except CredentialsUnusable as exc:
            self.warnings.warning(
                resolution.rule.name,
                "credentials",
                "cache rule '%s' (upstream %s): its credentials cannot be used: %s",
                resolution.rule.name,
                resolution.upstream.login_server,
                exc.detail,
            )
            raise e.UpstreamAuthenticationFailed(cannot_log_in(resolution, exc.set_name)) from None

    def _refused(self, resolution: Resolution, by: str) -> None:
        """The upstream (``by`` says which part) refused the rule's credentials."""
        set_id = resolution.rule.credential_set_id
        if set_id is None:
            return
        self.warnings.warning(
            resolution.rule.name,
            "refused",
            "cache rule '%s': %s refused the credentials of credential set '%s'; its health "
            "is measured again",
            resolution.rule.name,
            by,
            resolution.rule.credential_set_name or "?",
        )
        if self.credentials is not None:
            self.credentials.unauthorized(set_id)

    def resting(self, login_server: str) -> float:
        """Seconds until ``login_server`` is asked again by requests with a cached copy
        (0: now)."""
        until = self._resting.get(normalize_login_server(login_server))
        return 0.0 if until is None else max(0.0, until - time.monotonic())

    async def request(
        self,
        resolution: Resolution,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        *,
        cached: bool = False,
    ) -> UpstreamResponse:
        """``method /v2/<upstream repository>/<path>`` upstream; client errors name the rule.

        :param cached: the caller has a cached copy to serve stale if this fails: one try,
            ``revalidate_timeout`` seconds per step, and none at all while the upstream rests
            (see the module doc).
        :raises UpstreamNotAsked: ``cached`` and the upstream rests (nothing was sent).
        :raises UpstreamError: and its subclasses, naming the rule.
        """
        up = resolution.upstream
        server = normalize_login_server(up.login_server)
        rest = self.resting(server)
        if cached and rest > 0:
            raise named(
                resolution,
                e.UpstreamNotAsked(
                    f"The upstream {up.login_server} failed moments ago; it is asked again in "
                    f"{rest:.0f} s."
                ),
            )
        credentials = await self._credentials(resolution)
        attempts: int | None = 1 if cached or rest > 0 else None
        try:
            resp = await self.upstream.request(
                method,
                up.login_server,
                f"/v2/{up.repository}/{path}",
                credentials=credentials,
                scope=f"repository:{up.repository}:pull",
                headers=headers,
                attempts=attempts,
                step_timeout=self.revalidate_timeout if cached else None,
            )
        except e.UpstreamAuthenticationFailed as exc:
            if credentials is None:
                raise named(resolution, exc) from None
            self._refused(resolution, f"the token server of upstream {up.login_server}")
            raise e.UpstreamAuthenticationFailed(
                cannot_log_in(resolution, resolution.rule.credential_set_name)
            ) from None
        except e.UpstreamError as exc:
            self._failed(resolution, server, exc, cached, rests=_rests(exc, path))
            raise named(resolution, exc) from None
        self._resting.pop(server, None)  # it answered
        if resp.status == 401 and credentials is not None:
            self._refused(resolution, f"the upstream {up.login_server} (401)")
        return resp

    def _failed(
        self,
        resolution: Resolution,
        server: str,
        exc: e.UpstreamError,
        cached: bool,
        *,
        rests: bool,
    ) -> None:
        """Log ``exc`` for the operator, and let ``server`` rest if ``rests`` (it could not be
        reached at all: see :func:`_rests`)."""
        rule = resolution.rule.name
        if not is_failure(exc):
            self.warnings.warning(
                rule, "error", "pulling through %s failed: %s", where(resolution), exc.message
            )
            return
        if rests and self.upstream_backoff > 0 and self.resting(server) == 0:
            self._resting[server] = time.monotonic() + self.upstream_backoff
            log.warning(
                "upstream %s could not be asked (%s): %s; for %g s, pulls with a cached copy are "
                "served stale without asking it",
                server,
                where(resolution),
                exc.message.rstrip("."),
                self.upstream_backoff,
            )
        elif not cached:
            self.warnings.warning(
                rule, "unreachable", "pulling through %s failed: %s", where(resolution), exc.message
            )


def _rests(exc: e.UpstreamError, path: str) -> bool:
    """Whether ``exc`` from a request for ``path`` says the login server itself cannot be
    reached (so every repository behind it would fail): a connection or TLS failure of a
    manifest or referrers request. Not an answer of the server (5xx, 429: they concern a path
    and say nothing of the others), not an address the guard refused (a redirect's target, or
    a setting), not a blob request (blobs are often redirected to another host, whose failure
    says nothing of the registry's)."""
    if path.startswith("blobs/") or isinstance(exc, e.UpstreamAddressRefused):
        return False
    return isinstance(exc, e.UpstreamUnreachable | e.UpstreamTlsError)


def cannot_log_in(resolution: Resolution, set_name: str | None) -> str:
    """What a client is told when the rule's credential set cannot be used (nothing more)."""
    return (
        f"The credential set '{set_name or '?'}' of cache rule '{resolution.rule.name}' could not "
        f"log in to {resolution.upstream.login_server}; its credential health says why."
    )


# -- the repository ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CachedRepository:
    """The :class:`~entrepot.proxy.engine.Repository` of one resolution: through its rule, or
    from the cache only (:class:`~entrepot.proxy.resolution.CacheOnly`: blobs linked to it
    only, never an upstream request)."""

    engine: CachingEngine
    resolution: Resolution | CacheOnly

    @property
    def manifests(self) -> CachedManifests:
        return CachedManifests(self.engine, self.resolution)

    @property
    def blobs(self) -> CachedBlobs | CacheOnlyBlobs:
        if isinstance(self.resolution, CacheOnly):
            return CacheOnlyBlobs(self.engine, self.resolution)
        return CachedBlobs(self.engine, self.resolution)

    @property
    def tags(self) -> CachedTags:
        return CachedTags(self.engine, self.resolution)

    @property
    def referrers(self) -> CachedReferrers:
        return CachedReferrers(self.engine, self.resolution)
