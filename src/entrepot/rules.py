"""Cache-rule patterns: parsing, overlap, mapping to upstream, and fast lookup. No I/O.

Contract for callers:

* :func:`parse_rule` is the only validating constructor of :class:`RulePattern`. It takes the
  written ``sourceRepository`` and ``targetRepository`` of a cache rule and raises

  - :class:`~entrepot.errors.InvalidSourceRepository` (``target="properties.sourceRepository"``)
    or :class:`~entrepot.errors.InvalidTargetRepository`
    (``target="properties.targetRepository"``) when one side is malformed; every such message
    names the offending value and contains :data:`NAMING_CONVENTIONS`;
  - :class:`~entrepot.errors.WildcardMismatch` (``target="properties.targetRepository"``) when
    both sides are well formed but only one of them is a wildcard.

  The source is checked before the target. Accepted shapes::

      source                          target
      <login server>/<path>           <path>        static: exactly one repository
      <login server>/<path>/*         <path>/*      wildcard: every repository below <path>
      <login server>/*                *             wildcard: every repository

  ``<login server>`` is a lowercase login server as :mod:`entrepot.oci` defines it (host
  name, IPv4 address or bracketed IPv6 address, optional ``:port`` 1-65535 without leading
  zero). Following the Docker convention (:func:`entrepot.oci.looks_like_login_server`) the
  first segment of a source is a login server only if it contains ``.`` or ``:`` or is
  ``localhost``; a source must start with one. ``<path>`` is one or more OCI name components
  (:func:`entrepot.oci.is_path_component`) joined by ``/``. ``*`` may only be the whole last
  segment. No tag, no digest, no whitespace, no empty segment. The written path of each side
  (login server excluded, ``/*`` included) is at most
  :data:`~entrepot.oci.MAX_REPOSITORY_LENGTH` (255) characters, so a wildcard accepted here
  can always match at least one valid repository name.

* :func:`overlaps` says whether two rules may not coexist in one registry: wildcard rules whose
  targets are equal or nested (``*`` nests everything), or static rules with equal targets. A
  static rule inside a wildcard one is allowed and wins over it.
* :func:`target_ancestors` lists the targets of the wildcard rules that would contain a given
  target prefix, for an indexed ``IN`` query in the metadata store.
* :func:`upstream_for` maps a repository pulled from us to the upstream repository a rule
  names, or ``None``. Static rules match their target exactly (no subdirectories); a wildcard
  captures the non-empty rest of the path, slashes included. On Docker Hub
  (:func:`entrepot.oci.is_docker_hub`) an upstream repository of one component gets
  ``library/`` (:func:`entrepot.oci.docker_hub_repository`). The
  returned ``login_server`` is the rule's, as written: resolving ``docker.io`` to its v2
  endpoint ``registry-1.docker.io`` is the upstream client's job.
* :class:`RuleIndex` holds the rules of one registry and finds the rule for a repository with
  a number of dict lookups bounded by the depth of the repository name, whatever the number of
  rules: the static rule whose target equals the repository wins, else the wildcard rule whose
  target is the longest prefix of it at a segment boundary. :meth:`RuleIndex.add` refuses a
  rule that overlaps another one (:class:`~entrepot.errors.TargetConflict`), so at most one
  wildcard rule ever matches.

Repository names passed to :func:`upstream_for` and :meth:`RuleIndex.match` are assumed to be
valid names already (the registry route checks them); they are not validated again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from entrepot.errors import (
    InvalidSourceRepository,
    InvalidTargetRepository,
    TargetConflict,
    WildcardMismatch,
)
from entrepot.oci import (
    MAX_REPOSITORY_LENGTH,
    docker_hub_repository,
    is_docker_hub,
    is_login_server,
    is_path_component,
    looks_like_login_server,
)

__all__ = [
    "NAMING_CONVENTIONS",
    "RuleIndex",
    "RulePattern",
    "UpstreamRef",
    "is_docker_hub",  # re-exported from entrepot.oci for existing importers
    "overlaps",
    "parse_rule",
    "target_ancestors",
    "upstream_for",
]

NAMING_CONVENTIONS = (
    "Repository names should follow the standardized docker repository naming conventions. "
    "All characters should be lowercase."
)
"""The sentence every invalid-source and invalid-target message contains (ACR's wording)."""

_SOURCE_FIELD = "properties.sourceRepository"
_TARGET_FIELD = "properties.targetRepository"
_MAX_SHOWN = 300


@dataclass(frozen=True, slots=True)
class RulePattern:
    """The parsed source and target of one cache rule; build it with :func:`parse_rule`.

    :param source_login_server: the upstream login server, e.g. ``docker.io`` or
        ``127.0.0.1:5001``.
    :param source_path: static: the upstream repository (``library/ubuntu``); wildcard: the
        prefix before ``/*`` (``library``), ``""`` for ``<login server>/*``.
    :param target_path: static: the target repository (``ubuntu``); wildcard: the prefix before
        ``/*`` (``cache/hub``), ``""`` for ``*``.
    :param wildcard: whether both sides end in ``*``.
    """

    source_login_server: str
    source_path: str
    target_path: str
    wildcard: bool

    @property
    def source_repository(self) -> str:
        """The canonical written source, e.g. ``docker.io/library/*``."""
        if not self.wildcard:
            return f"{self.source_login_server}/{self.source_path}"
        if self.source_path:
            return f"{self.source_login_server}/{self.source_path}/*"
        return f"{self.source_login_server}/*"

    @property
    def target_repository(self) -> str:
        """The canonical written target, e.g. ``cache/hub/*``, ``*`` or ``ubuntu``."""
        if not self.wildcard:
            return self.target_path
        if self.target_path:
            return f"{self.target_path}/*"
        return "*"


@dataclass(frozen=True, slots=True)
class UpstreamRef:
    """Where a pulled repository comes from: a login server and a repository on it."""

    login_server: str
    repository: str


# -- parsing -------------------------------------------------------------------------------------
def _show(value: str) -> str:
    """``value`` quoted for a message, cut short if it is very long."""
    if len(value) > _MAX_SHOWN:
        value = value[:_MAX_SHOWN] + "..."
    return repr(value)


def _source_error(value: str, reason: str) -> InvalidSourceRepository:
    return InvalidSourceRepository(
        f"Invalid source repository {_show(value)}: {reason}. {NAMING_CONVENTIONS}",
        target=_SOURCE_FIELD,
    )


def _target_error(value: str, reason: str) -> InvalidTargetRepository:
    return InvalidTargetRepository(
        f"Invalid target repository {_show(value)}: {reason}. {NAMING_CONVENTIONS}",
        target=_TARGET_FIELD,
    )


def _split_wildcard(value: str) -> tuple[str, bool, str | None]:
    """``(body, wildcard, reason)``: ``body`` is ``value`` without its final ``*`` segment.

    ``reason`` is set when ``*`` is misplaced. ``*`` alone gives an empty body.
    """
    stars = value.count("*")
    if stars == 0:
        return value, False, None
    if stars > 1:
        return value, False, "at most one '*' is allowed"
    if value == "*":
        return "", True, None
    if value.endswith("/*"):
        return value[:-2], True, None
    return value, False, "'*' is allowed only as the whole last segment"


def _path_reason(segments: list[str]) -> str | None:
    """Why these path components are not a valid repository path, or ``None``."""
    for segment in segments:
        if not segment:
            return "empty path segment (a leading or trailing '/', or '//')"
        if ":" in segment:
            tag = segment[segment.index(":") :]
            return f"a tag ({_show(tag)}) is not part of a repository name"
        if not is_path_component(segment):
            return f"{_show(segment)} is not a valid path component"
    return None


def _common_reason(value: str) -> str | None:
    """Checks shared by source and target, with the most specific message first."""
    if not value:
        return "the value is empty"
    if value != value.strip():
        return "leading or trailing whitespace is not allowed"
    if "@" in value:
        return "a digest ('@...') is not allowed"
    if value != value.lower():
        return "all characters must be lowercase"
    return None


def _parse_source(value: str) -> tuple[str, str, bool]:
    """``(login server, path, wildcard)`` of a written source, or raise."""
    reason = _common_reason(value)
    if reason is not None:
        raise _source_error(value, reason)
    body, wildcard, reason = _split_wildcard(value)
    if reason is not None:
        raise _source_error(value, reason)
    login, _, path = body.partition("/")
    if not login or not looks_like_login_server(login):
        raise _source_error(
            value,
            "it must start with the login server of the upstream registry "
            "(a host name containing '.' or ':', or 'localhost')",
        )
    if not is_login_server(login):
        raise _source_error(value, f"{_show(login)} is not a valid login server")
    if not path and not wildcard:
        if body != login:  # "docker.io/"
            raise _source_error(value, "empty path segment (a leading or trailing '/', or '//')")
        raise _source_error(value, "a repository path must follow the login server")
    if body != login:
        reason = _path_reason(path.split("/"))
        if reason is not None:
            raise _source_error(value, reason)
    written = value[len(login) + 1 :]
    if len(written) > MAX_REPOSITORY_LENGTH:
        raise _source_error(
            value,
            f"the repository name is {len(written)} characters long; "
            f"at most {MAX_REPOSITORY_LENGTH} are allowed",
        )
    return login, path, wildcard


def _parse_target(value: str) -> tuple[str, bool]:
    """``(path, wildcard)`` of a written target, or raise."""
    reason = _common_reason(value)
    if reason is not None:
        raise _target_error(value, reason)
    body, wildcard, reason = _split_wildcard(value)
    if reason is not None:
        raise _target_error(value, reason)
    if value != "*":
        reason = _path_reason(body.split("/"))
        if reason is not None:
            raise _target_error(value, reason)
    if len(value) > MAX_REPOSITORY_LENGTH:
        raise _target_error(
            value,
            f"the repository name is {len(value)} characters long; "
            f"at most {MAX_REPOSITORY_LENGTH} are allowed",
        )
    return body, wildcard


def parse_rule(source_repository: str, target_repository: str) -> RulePattern:
    """Validate a written source and target and return their pattern (see the module doc)."""
    login, source_path, source_wild = _parse_source(source_repository)
    target_path, target_wild = _parse_target(target_repository)
    if source_wild != target_wild:
        raise WildcardMismatch(
            f"Source repository {_show(source_repository)} and target repository "
            f"{_show(target_repository)} must both be wildcards (source ending in '/*', target "
            "ending in '/*' or '*') or neither.",
            target=_TARGET_FIELD,
        )
    return RulePattern(
        source_login_server=login,
        source_path=source_path,
        target_path=target_path,
        wildcard=source_wild,
    )


# -- relations -----------------------------------------------------------------------------------
def _nested(a: str, b: str) -> bool:
    """Whether wildcard target prefixes ``a`` and ``b`` are equal or one contains the other."""
    if a == b or not a or not b:
        return True
    return b.startswith(a + "/") or a.startswith(b + "/")


def overlaps(a: RulePattern, b: RulePattern) -> bool:
    """Whether rules ``a`` and ``b`` may not coexist in one registry.

    Wildcards overlap when their target prefixes are equal or nested (``*`` nests all);
    statics when their targets are equal. A static and a wildcard never overlap.
    """
    if a.wildcard and b.wildcard:
        return _nested(a.target_path, b.target_path)
    if not a.wildcard and not b.wildcard:
        return a.target_path == b.target_path
    return False


def target_ancestors(target_path: str) -> list[str]:
    """``""`` and every prefix of ``target_path`` at a segment boundary, shortest first.

    ``target_ancestors("a/b/c") == ["", "a", "a/b", "a/b/c"]``; ``target_ancestors("") == [""]``.
    """
    result = [""]
    if not target_path:
        return result
    start = 0
    while (cut := target_path.find("/", start)) >= 0:
        result.append(target_path[:cut])
        start = cut + 1
    result.append(target_path)
    return result


def _upstream(login_server: str, repository: str) -> UpstreamRef:
    if is_docker_hub(login_server):
        repository = docker_hub_repository(repository)
    return UpstreamRef(login_server=login_server, repository=repository)


def upstream_for(pattern: RulePattern, repository: str) -> UpstreamRef | None:
    """The upstream repository ``pattern`` maps ``repository`` to, or ``None`` if no match."""
    if not pattern.wildcard:
        if repository != pattern.target_path:
            return None
        return _upstream(pattern.source_login_server, pattern.source_path)
    prefix = pattern.target_path
    if not prefix:
        rest = repository
    elif repository.startswith(prefix) and repository[len(prefix) : len(prefix) + 1] == "/":
        rest = repository[len(prefix) + 1 :]
    else:
        return None
    if not rest:
        return None
    upstream = f"{pattern.source_path}/{rest}" if pattern.source_path else rest
    return _upstream(pattern.source_login_server, upstream)


# -- index ---------------------------------------------------------------------------------------
class RuleIndex:
    """The cache rules of one registry, keyed for lookups in O(depth of the repository name).

    Rule names are compared exactly as given. Adding a name that is already present replaces
    its rule. Adding a rule that overlaps a rule of another name raises
    :class:`~entrepot.errors.TargetConflict` and leaves the index unchanged. Removing an
    absent name does nothing.
    """

    __slots__ = ("_below", "_by_name", "_static", "_wild")

    def __init__(self, rules: Iterable[tuple[str, RulePattern]] = ()) -> None:
        self._by_name: dict[str, RulePattern] = {}
        self._static: dict[str, str] = {}  # target path -> rule name
        self._wild: dict[str, str] = {}  # target prefix -> rule name
        # proper ancestor prefix -> names of wildcard rules strictly below it (insertion order)
        self._below: dict[str, dict[str, None]] = {}
        for name, pattern in rules:
            self.add(name, pattern)

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def _conflict(self, name: str, pattern: RulePattern) -> str | None:
        """The name of a rule other than ``name`` that ``pattern`` overlaps, if any."""
        target = pattern.target_path
        if not pattern.wildcard:
            other = self._static.get(target)
            return other if other is not None and other != name else None
        for prefix in target_ancestors(target):
            other = self._wild.get(prefix)
            if other is not None and other != name:
                return other
        for other in self._below.get(target, {}):
            if other != name:
                return other
        return None

    def add(self, name: str, pattern: RulePattern) -> None:
        """Add or replace rule ``name``; raise ``TargetConflict`` if it overlaps another rule."""
        other = self._conflict(name, pattern)
        if other is not None:
            raise TargetConflict(
                f"The target repository {_show(pattern.target_repository)} of cache rule "
                f"{_show(name)} overlaps the target repository "
                f"{_show(self._by_name[other].target_repository)} of cache rule {_show(other)}.",
                target=_TARGET_FIELD,
            )
        self.remove(name)
        self._by_name[name] = pattern
        target = pattern.target_path
        if not pattern.wildcard:
            self._static[target] = name
            return
        self._wild[target] = name
        for prefix in target_ancestors(target)[:-1]:
            self._below.setdefault(prefix, {})[name] = None

    def remove(self, name: str) -> None:
        """Remove rule ``name`` if present."""
        pattern = self._by_name.pop(name, None)
        if pattern is None:
            return
        target = pattern.target_path
        if not pattern.wildcard:
            del self._static[target]
            return
        del self._wild[target]
        for prefix in target_ancestors(target)[:-1]:
            names = self._below[prefix]
            del names[name]
            if not names:
                del self._below[prefix]

    def match(self, repository: str) -> tuple[str, RulePattern, UpstreamRef] | None:
        """``(rule name, pattern, upstream)`` of the rule serving ``repository``, or ``None``.

        The static rule whose target equals ``repository`` wins; else the wildcard rule whose
        target is the longest proper prefix of it at a segment boundary (``*`` last).
        """
        name = self._static.get(repository)
        if name is not None:
            pattern = self._by_name[name]
            return name, pattern, _upstream(pattern.source_login_server, pattern.source_path)
        cut = len(repository)
        while cut > 0:
            cut = repository.rfind("/", 0, cut)
            prefix = repository[:cut] if cut > 0 else ""
            name = self._wild.get(prefix)
            if name is not None:
                pattern = self._by_name[name]
                upstream = upstream_for(pattern, repository)
                return None if upstream is None else (name, pattern, upstream)
        return None
