"""Which cache rule serves a pulled repository, and from where upstream. Pure code, no I/O.

:class:`RegistryRules` holds the cache rules of one registry, indexed both ways:

* **by target** (:meth:`RegistryRules.resolve`, a ``/v2/<name>/...`` request): the rule whose
  target equals ``<name>`` (static) wins, else the wildcard rule whose target is the longest
  prefix of it at a ``/`` (:class:`entrepot.rules.RuleIndex`); the rest of the name after a
  wildcard's prefix is appended to the source's prefix, and on Docker Hub a one-component
  upstream name gets ``library/``;
* **by source** (:meth:`RegistryRules.resolve_mirror`, a request with ``?ns=<registry>``, as
  containerd sends to a mirror of ``<registry>`` configured in ``hosts.toml``): ``<registry>/
  <name>`` is matched against the rules' *sources* the same way (static source first, then the
  wildcard source with the longest prefix) and mapped back to the target repository. Docker Hub
  aliases (``docker.io``, ``index.docker.io``, ``registry-1.docker.io``) are one registry, and
  ``alpine`` there is ``library/alpine``. A Docker Hub official image reached through a
  wildcard of the whole of Docker Hub (``docker.io/*``) maps to the short target name
  (``hub/alpine``, as ``docker pull`` would name it), so mirror and direct pulls share the cache.
  The answer is always the one :meth:`resolve` gives for that target: when a static rule
  shadows the wildcard's target with another upstream, the next candidate is tried.

Both cost a number of dict lookups bounded by the depth of the name, whatever the number of
rules (ties between rules of one source are broken by rule name, lower case). Rules being
deleted (provisioning state ``Deleting``) serve nothing; every other state serves.

A :class:`Resolution` is what the engine gets: the registry, the repository as pulled here (the
target: where the content is cached), the rule (name, credential set) and the upstream login
server (as the rule writes it; ``docker.io`` is reached at ``registry-1.docker.io`` or the
configured endpoint by the upstream client) and repository. A :class:`CacheOnly` stands in
for it where no rule covers a repository that still holds cached content (its rule was deleted):
the engine serves that from the cache only and never asks an upstream.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from entrepot import errors as e
from entrepot.metadata.records import CacheRuleRecord, State
from entrepot.oci import (
    docker_hub_repository,
    is_docker_hub,
    is_repository,
    parse_login_server,
)
from entrepot.rules import RuleIndex, RulePattern, UpstreamRef, parse_rule

__all__ = ["CacheOnly", "CacheRuleRef", "RegistryRules", "Resolution", "canonical_login_server"]

log = logging.getLogger("entrepot.proxy")


@dataclass(frozen=True, slots=True)
class CacheRuleRef:
    """The rule a repository resolved to: its name and row id, source and target as written,
    and its credential set (``None``: the upstream is pulled anonymously)."""

    id: int
    name: str
    source_repository: str
    target_repository: str
    credential_set_id: int | None
    credential_set_name: str | None


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where a pull of ``repository`` in registry ``registry`` goes.

    :param registry_id: the registry's row id (the content index is keyed by it).
    :param registry: the registry's name as written.
    :param repository: the repository in this registry (the rule's target side), valid.
    :param rule: the cache rule that covers it.
    :param upstream: the upstream login server (as the rule writes it) and repository (with
        ``library/`` on Docker Hub), a valid repository name.
    :param mirror: the ``ns`` the request named when it came in mirror mode, else ``None``.
    """

    registry_id: int
    registry: str
    repository: str
    rule: CacheRuleRef
    upstream: UpstreamRef
    mirror: str | None = None


@dataclass(frozen=True, slots=True)
class CacheOnly:
    """A repository of registry ``registry`` that no cache rule covers but that holds cached
    content (a manifest at least): served from the cache only, never from an upstream.

    :param registry_id: the registry's row id.
    :param registry: the registry's name as written.
    :param repository: the repository's name in this registry, valid.
    :param repository_id: its row id in the content index.
    """

    registry_id: int
    registry: str
    repository: str
    repository_id: int
    mirror: None = None  # never reached in mirror mode: the mirror maps sources through rules

    def not_cached(self, what: str) -> str:
        """The message of a 404 for ``what`` (``"manifest 'latest'"``) that is not cached."""
        return (
            f"The {what} of repository '{self.repository}' is not cached, and no cache rule "
            f"of registry '{self.registry}' covers that repository any more (its rule is "
            "gone): only what was cached before can be pulled, nothing is fetched from "
            "upstream. Create a cache rule whose targetRepository covers it to pull from "
            "upstream again."
        )


def canonical_login_server(login_server: str) -> str:
    """``login_server`` in normal form, with every Docker Hub alias as ``docker.io``.

    :raises InvalidLoginServer: when it is not ``host[:port]``.
    """
    text = str(parse_login_server(login_server))
    return "docker.io" if is_docker_hub(text) else text


def _join(prefix: str, rest: str) -> str:
    return f"{prefix}/{rest}" if prefix else rest


def _prefixes(repository: str) -> Iterator[tuple[str, str]]:
    """``(prefix, rest)`` for every proper prefix at a ``/``, longest first, then ``("", all)``."""
    cut = len(repository)
    while (cut := repository.rfind("/", 0, cut)) > 0:
        yield repository[:cut], repository[cut + 1 :]
    yield "", repository


class RegistryRules:
    """The cache rules of one registry, indexed by target and by source (see the module doc).

    Built from the rule records as the metadata store returns them; immutable afterwards (a
    change of the rules builds a new one). Records that do not parse or that overlap an earlier
    one (which the management API never lets happen) are left out and logged.
    """

    __slots__ = (
        "_by_source",
        "_index",
        "_patterns",
        "_refs",
        "_wild_sources",
        "registry",
        "registry_id",
    )

    def __init__(self, registry_id: int, registry: str, rules: Iterable[CacheRuleRecord]) -> None:
        self.registry_id = registry_id
        self.registry = registry
        self._index = RuleIndex()
        self._refs: dict[str, CacheRuleRef] = {}
        self._patterns: dict[str, RulePattern] = {}
        # (canonical login server, upstream repository) -> static rule names
        self._by_source: dict[tuple[str, str], list[str]] = {}
        # (canonical login server, source prefix) -> wildcard rule names
        self._wild_sources: dict[tuple[str, str], list[str]] = {}
        for record in rules:
            if record.state is State.DELETING:
                continue
            try:
                pattern = parse_rule(record.source_repository, record.target_repository)
                self._index.add(record.name, pattern)
            except e.EntrepotError as exc:
                log.warning(
                    "cache rule %r of registry %r is left out: %s", record.name, registry, exc
                )
                continue
            self._patterns[record.name] = pattern
            self._refs[record.name] = CacheRuleRef(
                id=record.id,
                name=record.name,
                source_repository=record.source_repository,
                target_repository=record.target_repository,
                credential_set_id=record.credential_set_id,
                credential_set_name=record.credential_set_name,
            )
            login = canonical_login_server(pattern.source_login_server)
            if pattern.wildcard:
                self._wild_sources.setdefault((login, pattern.source_path), []).append(record.name)
            else:
                upstream = pattern.source_path
                if login == "docker.io":
                    upstream = docker_hub_repository(upstream)
                self._by_source.setdefault((login, upstream), []).append(record.name)
        for names in (*self._by_source.values(), *self._wild_sources.values()):
            names.sort(key=str.lower)

    def __len__(self) -> int:
        return len(self._refs)

    def resolve(self, repository: str, *, mirror: str | None = None) -> Resolution | None:
        """The resolution of ``repository`` (a valid name) by target, or ``None``.

        :raises NameInvalid: when the rule maps it to an upstream name that is not valid (too
            long: the source prefix is longer than the target's).
        """
        found = self._index.match(repository)
        if found is None:
            return None
        name, _pattern, upstream = found
        if not is_repository(upstream.repository):
            raise e.NameInvalid(
                f"The repository '{repository}' maps to '{upstream.repository}' on "
                f"{upstream.login_server} by cache rule '{name}', which is not a valid "
                "repository name (it is too long)."
            )
        return Resolution(
            registry_id=self.registry_id,
            registry=self.registry,
            repository=repository,
            rule=self._refs[name],
            upstream=upstream,
            mirror=mirror,
        )

    def resolve_mirror(self, ns: str, repository: str) -> Resolution | None:
        """The resolution of ``<ns>/<repository>`` by source, or ``None`` (see the module doc).

        ``repository`` is a valid name; ``ns`` a login server in any case (Docker Hub by any
        alias).

        :raises InvalidLoginServer: when ``ns`` is not a login server.
        """
        login = canonical_login_server(ns)
        hub = login == "docker.io"
        upstream = docker_hub_repository(repository) if hub else repository
        for target in self._mirror_targets(login, upstream, hub):
            if not is_repository(target):
                continue
            found = self._index.match(target)
            if found is None:
                continue
            _name, _pattern, ref = found
            if canonical_login_server(ref.login_server) != login or ref.repository != upstream:
                continue  # shadowed by a rule with another upstream
            return self.resolve(target, mirror=ns)
        return None

    def _mirror_targets(self, login: str, upstream: str, hub: bool) -> Iterator[str]:
        """The target repositories that could map to ``login/upstream``, best first."""
        for name in self._by_source.get((login, upstream), ()):
            yield self._pattern(name).target_path
        for prefix, rest in _prefixes(upstream):
            for name in self._wild_sources.get((login, prefix), ()):
                target = self._pattern(name).target_path
                if hub and not prefix and rest.startswith("library/") and rest.count("/") == 1:
                    yield _join(target, rest[len("library/") :])
                yield _join(target, rest)

    def _pattern(self, name: str) -> RulePattern:
        return self._patterns[name]
