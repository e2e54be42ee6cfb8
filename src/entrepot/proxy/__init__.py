"""The pull-through cache behind the registry face.

* :mod:`entrepot.proxy.resolution`: which cache rule serves a pulled repository (by target, or
  by source in mirror mode) and the upstream it maps to; pure code.
* :mod:`entrepot.proxy.directory`: the registries and their rules in memory, bounded and
  revalidated across processes, so a warm pull reads no rule from the database.
* :mod:`entrepot.proxy.engine`: the protocol the face asks of the engine (a ``Repository`` with
  manifest, blob, tag and referrer services) and a stand-in that fetches nothing.
* :mod:`entrepot.proxy.cache`: :class:`CachingEngine`, the engine that caches and fills from
  upstream, made of :mod:`~entrepot.proxy.manifests` (manifests and tags),
  :mod:`~entrepot.proxy.blobs` (blobs, single-flight fills) and :mod:`~entrepot.proxy.referrers`;
  :mod:`entrepot.proxy.upstream_answers`: what an upstream answer means, naming the rule;
  :mod:`entrepot.proxy.credentials`: the upstream credentials of a rule;
  :mod:`entrepot.proxy.orphans`: repositories whose rule is gone, served from the cache only.
"""

from entrepot.proxy.cache import CachingEngine
from entrepot.proxy.credentials import RuleCredentials
from entrepot.proxy.directory import RegistryDirectory, RegistrySource
from entrepot.proxy.engine import (
    CACHE_HEADER,
    BlobDescriptor,
    BlobReader,
    Engine,
    ManifestContent,
    NotCachedEngine,
    Origin,
    Repository,
)
from entrepot.proxy.resolution import (
    CacheOnly,
    CacheRuleRef,
    RegistryRules,
    Resolution,
    canonical_login_server,
)

__all__ = [
    "CACHE_HEADER",
    "BlobDescriptor",
    "BlobReader",
    "CacheOnly",
    "CacheRuleRef",
    "CachingEngine",
    "Engine",
    "ManifestContent",
    "NotCachedEngine",
    "Origin",
    "RegistryDirectory",
    "RegistryRules",
    "RegistrySource",
    "Repository",
    "Resolution",
    "RuleCredentials",
    "canonical_login_server",
]
