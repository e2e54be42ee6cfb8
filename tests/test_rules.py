"""Tests of entrepot.rules: parsing, overlap, upstream mapping and the rule index."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entrepot.errors import (
    InvalidSourceRepository,
    InvalidTargetRepository,
    TargetConflict,
    WildcardMismatch,
)
from entrepot.rules import (
    NAMING_CONVENTIONS,
    RuleIndex,
    RulePattern,
    UpstreamRef,
    is_docker_hub,
    overlaps,
    parse_rule,
    target_ancestors,
    upstream_for,
)

ACR_SENTENCE = (
    "Repository names should follow the standardized docker repository naming conventions. "
    "All characters should be lowercase."
)


def test_naming_sentence_is_acrs_wording() -> None:
    assert NAMING_CONVENTIONS == ACR_SENTENCE


# -- valid rules ---------------------------------------------------------------------------------
COMPONENTS = "a.b/a_b/a__b/a-b/a--b/a---b/0/a.b-c_d__e"
VALID = [
    # (source, target, login server, source path, target path, wildcard)
    ("docker.io/library/ubuntu", "ubuntu", "docker.io", "library/ubuntu", "ubuntu", False),
    ("quay.io/thanos/thanos", "thanos/thanos", "quay.io", "thanos/thanos", "thanos/thanos", False),
    (
        "public.ecr.aws/docker/library/hello-world",
        "hello-world",
        "public.ecr.aws",
        "docker/library/hello-world",
        "hello-world",
        False,
    ),
    (
        "mcr.microsoft.com/psresource/az.ssh",
        "az.ssh",
        "mcr.microsoft.com",
        "psresource/az.ssh",
        "az.ssh",
        False,
    ),
    (
        "registry.k8s.io/ingress-nginx/controller",
        "ingress-nginx",
        "registry.k8s.io",
        "ingress-nginx/controller",
        "ingress-nginx",
        False,
    ),
    ("docker.io/ubuntu", "ubuntu", "docker.io", "ubuntu", "ubuntu", False),
    ("mcr.microsoft.com/dotnet/*", "dotnet/*", "mcr.microsoft.com", "dotnet", "dotnet", True),
    (
        "docker.io/library/python/*",
        "library/python/*",
        "docker.io",
        "library/python",
        "library/python",
        True,
    ),
    (
        "quay.io/redhat-user-workloads/crt-redhat-acm-tenant/*",
        "quay-cache/redhat-user-workloads/crt-redhat-acm-tenant/*",
        "quay.io",
        "redhat-user-workloads/crt-redhat-acm-tenant",
        "quay-cache/redhat-user-workloads/crt-redhat-acm-tenant",
        True,
    ),
    ("docker.io/library/*", "docker.io/*", "docker.io", "library", "docker.io", True),
    ("docker.io/library/*", "cache/hub/*", "docker.io", "library", "cache/hub", True),
    ("mcr.microsoft.com/*", "*", "mcr.microsoft.com", "", "", True),
    ("ghcr.io/*", "ghcr/*", "ghcr.io", "", "ghcr", True),
    ("us-docker.pkg.dev/proj/repo/*", "gar/*", "us-docker.pkg.dev", "proj/repo", "gar", True),
    ("127.0.0.1:5001/team/app", "app", "127.0.0.1:5001", "team/app", "app", False),
    ("127.0.0.1:5001/*", "local/*", "127.0.0.1:5001", "", "local", True),
    ("10.0.0.1/a", "a", "10.0.0.1", "a", "a", False),
    ("localhost/app", "app", "localhost", "app", "app", False),
    ("localhost:5000/*", "local/*", "localhost:5000", "", "local", True),
    ("company-registry.local/*", "corp/*", "company-registry.local", "", "corp", True),
    ("registry:5000/a", "a", "registry:5000", "a", "a", False),
    ("registry.example.com:1/a", "a", "registry.example.com:1", "a", "a", False),
    ("registry.example.com:65535/a", "a", "registry.example.com:65535", "a", "a", False),
    ("[::1]/a", "a", "[::1]", "a", "a", False),
    ("[::1]:5000/a/*", "v6/*", "[::1]:5000", "a", "v6", True),
    ("[2001:db8::1]/x/y", "x/y", "[2001:db8::1]", "x/y", "x/y", False),
    ("xn--bcher-kva.example/a", "a", "xn--bcher-kva.example", "a", "a", False),
    ("1password.example.com/a", "a", "1password.example.com", "a", "a", False),
    (
        "r.example/a.b/a_b/a__b/a-b/a--b/a0",
        "t",
        "r.example",
        "a.b/a_b/a__b/a-b/a--b/a0",
        "t",
        False,
    ),
    (
        "r.example/a",
        "a.b/a_b/a__b/a-b/a---b/0",
        "r.example",
        "a",
        "a.b/a_b/a__b/a-b/a---b/0",
        False,
    ),
    ("r.example/" + "a" * 255, "t", "r.example", "a" * 255, "t", False),
    ("r.example/" + "a" * 253 + "/*", "t/*", "r.example", "a" * 253, "t", True),
    ("r.example/a", "b" * 255, "r.example", "a", "b" * 255, False),
    ("r.example/a/*", "b" * 253 + "/*", "r.example", "a", "b" * 253, True),
    ("a" * 63 + ".example/x", "x", "a" * 63 + ".example", "x", "x", False),
]


@pytest.mark.parametrize(("source", "target", "login", "spath", "tpath", "wild"), VALID)
def test_parse_valid(
    source: str, target: str, login: str, spath: str, tpath: str, wild: bool
) -> None:
    pattern = parse_rule(source, target)
    assert pattern == RulePattern(
        source_login_server=login, source_path=spath, target_path=tpath, wildcard=wild
    )
    # The written form round-trips.
    assert pattern.source_repository == source
    assert pattern.target_repository == target


def test_pattern_is_frozen_and_hashable() -> None:
    pattern = parse_rule("docker.io/library/*", "cache/hub/*")
    with pytest.raises(AttributeError):
        pattern.target_path = "x"  # type: ignore[misc]
    assert {pattern, parse_rule("docker.io/library/*", "cache/hub/*")} == {pattern}


# -- invalid sources -----------------------------------------------------------------------------
INVALID_SOURCES = [
    # empty and whitespace
    "",
    " ",
    " docker.io/library/ubuntu",
    "docker.io/library/ubuntu ",
    "docker.io/library/ubuntu\n",
    "\tdocker.io/library/ubuntu",
    "docker.io/library/ubun tu",
    # tags and digests
    "docker.io/library/python:3.11-bookworm",
    "docker.io/library/ubuntu:latest",
    "docker.io/library/ubuntu@sha256:" + "0" * 64,
    "docker.io/library/ubuntu:22.04@sha256:" + "0" * 64,
    "docker.io/library:x/ubuntu",
    # uppercase
    "Docker.io/library/ubuntu",
    "docker.io/Library/ubuntu",
    "DOCKER.IO/*",
    "docker.io/library/Ubuntu/*",
    # login server only, empty segments, slashes
    "docker.io",
    "docker.io/",
    "docker.io//ubuntu",
    "docker.io/library//ubuntu",
    "docker.io/library/ubuntu/",
    "docker.io//*",
    "/docker.io/ubuntu",
    "/*",
    # no login server
    "library/ubuntu",
    "ubuntu",
    "myregistry/app",
    "*",
    "library/*",
    # misplaced stars
    "docker.io/*/ubuntu",
    "docker.io/library/a*",
    "docker.io/library*",
    "docker.io/*/*",
    "docker.io/**",
    "docker.io*",
    "docker.io/a/*/",
    "*.docker.io/a",
    # bad ports
    "docker.io:0/a",
    "docker.io:65536/a",
    "docker.io:99999/a",
    "docker.io:/a",
    "docker.io:05000/a",
    "docker.io:abc/a",
    "docker.io:+80/a",
    "localhost:5000:1/a",
    # bad IPv4 / IPv6
    "256.1.1.1/a",
    "1.2.3/a",
    "01.2.3.4/a",
    "1.2.3.4.5/a",
    "[::1/a",
    "[::g]/a",
    "[fe80::1%eth0]/a",
    "[::1]x/a",
    "[::1]:/a",
    "[]/a",
    "::1/a",
    # bad host names
    "-bad.example.com/a",
    "bad-.example.com/a",
    "bad_host.example/a",
    "example..com/a",
    ".example.com/a",
    "example.com./a",
    "a" * 64 + ".example/x",
    # bad path components
    "docker.io/library/-ubuntu",
    "docker.io/library/ubuntu-",
    "docker.io/library/.ubuntu",
    "docker.io/a___b",
    "docker.io/a..b",
    "docker.io/a._b",
    "docker.io/a_-b",
    "docker.io/caf\u00e9",
    "docker.io/a+b",
    # too long
    "r.example/" + "a" * 256,
    "r.example/" + "a" * 200 + "/" + "b" * 55,
    "r.example/" + "a" * 254 + "/*",
]


@pytest.mark.parametrize("source", INVALID_SOURCES)
def test_invalid_source(source: str) -> None:
    with pytest.raises(InvalidSourceRepository) as caught:
        parse_rule(source, "ubuntu/*" if source.endswith("*") else "ubuntu")
    error = caught.value
    assert error.target == "properties.sourceRepository"
    assert error.code == "InvalidSourceRepository"
    assert ACR_SENTENCE in error.message
    assert repr(source)[:60] in error.message


INVALID_TARGETS = [
    "",
    " ",
    " ubuntu",
    "ubuntu ",
    "ubuntu\n",
    "ub untu",
    "Ubuntu",
    "library/Ubuntu",
    "ubuntu:latest",
    "library/ubuntu:22.04",
    "ubuntu@sha256:" + "0" * 64,
    "a//b",
    "/a",
    "a/",
    "/",
    "/*",
    "a//*",
    "*/a",
    "a*",
    "a/b*",
    "a/*/*",
    "**",
    "*/*",
    "a/*/",
    "-a",
    "a-",
    "a___b",
    "localhost:5000/a",
    "caf\u00e9",
    "b" * 256,
    "b" * 254 + "/*",
]


@pytest.mark.parametrize("target", INVALID_TARGETS)
def test_invalid_target(target: str) -> None:
    source = "docker.io/library/*" if target.endswith("*") else "docker.io/library/ubuntu"
    with pytest.raises(InvalidTargetRepository) as caught:
        parse_rule(source, target)
    error = caught.value
    assert error.target == "properties.targetRepository"
    assert error.code == "InvalidTargetRepository"
    assert ACR_SENTENCE in error.message
    assert repr(target)[:60] in error.message


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("docker.io/library/*", "ubuntu"),
        ("docker.io/*", "hub"),
        ("docker.io/library/ubuntu", "ubuntu/*"),
        ("docker.io/library/ubuntu", "*"),
        ("quay.io/thanos/thanos", "thanos/*"),
    ],
)
def test_wildcard_on_one_side_only(source: str, target: str) -> None:
    with pytest.raises(WildcardMismatch) as caught:
        parse_rule(source, target)
    assert caught.value.target == "properties.targetRepository"
    assert source in caught.value.message
    assert target in caught.value.message


def test_source_is_checked_before_target() -> None:
    with pytest.raises(InvalidSourceRepository):
        parse_rule("docker.io/Library/*", "Bad")


def test_invalid_side_beats_mismatch() -> None:
    with pytest.raises(InvalidTargetRepository):
        parse_rule("docker.io/library/*", "Ubuntu")


def test_tag_message_names_the_tag() -> None:
    with pytest.raises(InvalidSourceRepository) as caught:
        parse_rule("docker.io/library/python:3.11-bookworm", "python")
    assert "':3.11-bookworm'" in caught.value.message
    assert "'docker.io/library/python:3.11-bookworm'" in caught.value.message


def test_long_value_is_shortened_in_message() -> None:
    source = "r.example/" + "a" * 5000
    with pytest.raises(InvalidSourceRepository) as caught:
        parse_rule(source, "t")
    assert len(caught.value.message) < 1000
    assert "is 5000 characters long" in caught.value.message  # the path, login server excluded
    assert "a" * 301 not in caught.value.message


# -- overlaps ------------------------------------------------------------------------------------
def _rule(target: str) -> RulePattern:
    if target == "*":
        return parse_rule("mcr.microsoft.com/*", target)
    if target.endswith("/*"):
        return parse_rule("mcr.microsoft.com/x/*", target)
    return parse_rule("mcr.microsoft.com/x", target)


OVERLAPS = [
    # documented ACR cases
    ("*", "library/*", True),
    ("library/*", "library/dotnet/*", True),
    ("*", "*", True),
    ("*", "library/dotnet", False),
    ("library/dotnet", "library/dotnet", True),
    ("a/*", "ab/*", False),
    # more
    ("a/*", "a/b/c/*", True),
    ("a/b/*", "a/c/*", False),
    ("a/b/*", "a/bc/*", False),
    ("cache/hub/*", "cache/hub/*", True),
    ("cache/hub/*", "cache/*", True),
    ("a", "a/b", False),
    ("a", "ab", False),
    ("a", "a/*", False),
    ("a/b", "a/*", False),
    ("library/*", "library/dotnet", False),
]


@pytest.mark.parametrize(("first", "second", "expected"), OVERLAPS)
def test_overlaps(first: str, second: str, expected: bool) -> None:
    a, b = _rule(first), _rule(second)
    assert overlaps(a, b) is expected
    assert overlaps(b, a) is expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("", [""]),
        ("a", ["", "a"]),
        ("a/b/c", ["", "a", "a/b", "a/b/c"]),
        ("cache/hub", ["", "cache", "cache/hub"]),
        ("a.b/c-d", ["", "a.b", "a.b/c-d"]),
    ],
)
def test_target_ancestors(path: str, expected: list[str]) -> None:
    assert target_ancestors(path) == expected


# -- mapping -------------------------------------------------------------------------------------
MAPPING = [
    # (source, target, pulled repository, expected upstream (login server, repository) or None)
    ("docker.io/library/*", "cache/hub/*", "cache/hub/nginx", ("docker.io", "library/nginx")),
    (
        "docker.io/library/*",
        "cache/hub/*",
        "cache/hub/bitnami/redis",
        ("docker.io", "library/bitnami/redis"),
    ),
    ("docker.io/library/*", "cache/hub/*", "cache/hub", None),
    ("docker.io/library/*", "cache/hub/*", "cache/hubx/nginx", None),
    ("docker.io/library/*", "cache/hub/*", "cache/nginx", None),
    ("docker.io/library/*", "cache/hub/*", "nginx", None),
    ("docker.io/*", "hub/*", "hub/alpine", ("docker.io", "library/alpine")),
    ("docker.io/*", "hub/*", "hub/library/alpine", ("docker.io", "library/alpine")),
    ("docker.io/*", "hub/*", "hub/bitnami/redis", ("docker.io", "bitnami/redis")),
    ("docker.io/*", "hub/*", "hub", None),
    ("docker.io/*", "hub/*", "alpine", None),
    ("index.docker.io/*", "hub/*", "hub/alpine", ("index.docker.io", "library/alpine")),
    ("registry-1.docker.io/*", "hub/*", "hub/alpine", ("registry-1.docker.io", "library/alpine")),
    ("quay.io/*", "q/*", "q/alpine", ("quay.io", "alpine")),
    ("docker.io.example.com/*", "h/*", "h/alpine", ("docker.io.example.com", "alpine")),
    (
        "docker.io/library/*",
        "docker.io/*",
        "docker.io/pulumi/pulumi-dotnet",
        ("docker.io", "library/pulumi/pulumi-dotnet"),
    ),
    ("mcr.microsoft.com/*", "*", "dotnet/runtime", ("mcr.microsoft.com", "dotnet/runtime")),
    ("mcr.microsoft.com/*", "*", "hello", ("mcr.microsoft.com", "hello")),
    ("mcr.microsoft.com/*", "*", "a/b/c/d", ("mcr.microsoft.com", "a/b/c/d")),
    ("mcr.microsoft.com/*", "*", "", None),
    ("mcr.microsoft.com/dotnet/*", "dotnet/*", "dotnet/sdk", ("mcr.microsoft.com", "dotnet/sdk")),
    ("quay.io/thanos/thanos", "thanos/thanos", "thanos/thanos", ("quay.io", "thanos/thanos")),
    ("quay.io/thanos/thanos", "thanos/thanos", "thanos/thanos/sub", None),
    ("quay.io/thanos/thanos", "thanos/thanos", "thanos", None),
    ("quay.io/thanos/thanos", "thanos/thanos", "thanos/thanosx", None),
    (
        "registry.k8s.io/ingress-nginx/controller",
        "ingress-nginx",
        "ingress-nginx",
        ("registry.k8s.io", "ingress-nginx/controller"),
    ),
    ("registry.k8s.io/ingress-nginx/controller", "ingress-nginx", "ingress-nginx/controller", None),
    ("docker.io/ubuntu", "ubuntu", "ubuntu", ("docker.io", "library/ubuntu")),
    ("docker.io/library/ubuntu", "ubuntu", "ubuntu", ("docker.io", "library/ubuntu")),
    ("quay.io/ubuntu", "ubuntu", "ubuntu", ("quay.io", "ubuntu")),
    ("127.0.0.1:5001/*", "local/*", "local/a/b/c", ("127.0.0.1:5001", "a/b/c")),
    ("127.0.0.1:5001/team/*", "local/*", "local/app", ("127.0.0.1:5001", "team/app")),
]


@pytest.mark.parametrize(("source", "target", "repository", "expected"), MAPPING)
def test_upstream_for(
    source: str, target: str, repository: str, expected: tuple[str, str] | None
) -> None:
    result = upstream_for(parse_rule(source, target), repository)
    if expected is None:
        assert result is None
    else:
        assert result == UpstreamRef(login_server=expected[0], repository=expected[1])


@pytest.mark.parametrize(
    ("login_server", "expected"),
    [
        ("docker.io", True),
        ("index.docker.io", True),
        ("registry-1.docker.io", True),
        ("quay.io", False),
        ("docker.io.example.com", False),
        ("mirror.docker.io", False),
        ("docker.io:443", False),
        ("localhost", False),
    ],
)
def test_is_docker_hub(login_server: str, expected: bool) -> None:
    assert is_docker_hub(login_server) is expected


# -- RuleIndex -----------------------------------------------------------------------------------
def _index(*rules: tuple[str, str, str]) -> RuleIndex:
    return RuleIndex((name, parse_rule(source, target)) for name, source, target in rules)


def _matched(index: RuleIndex, repository: str) -> tuple[str, str, str] | None:
    found = index.match(repository)
    if found is None:
        return None
    name, _pattern, upstream = found
    return name, upstream.login_server, upstream.repository


def test_static_beats_wildcard() -> None:
    index = _index(
        ("everything", "mcr.microsoft.com/*", "*"),
        ("dotnet-static", "docker.io/library/dotnet", "library/dotnet"),
    )
    assert _matched(index, "library/dotnet") == (
        "dotnet-static",
        "docker.io",
        "library/dotnet",
    )
    assert _matched(index, "library/dotnet/sdk") == (
        "everything",
        "mcr.microsoft.com",
        "library/dotnet/sdk",
    )
    assert _matched(index, "library") == ("everything", "mcr.microsoft.com", "library")


def test_match_returns_the_pattern() -> None:
    pattern = parse_rule("docker.io/library/*", "cache/hub/*")
    index = RuleIndex([("hub", pattern)])
    found = index.match("cache/hub/nginx")
    assert found is not None
    assert found[1] is pattern


def test_longest_prefix_at_segment_boundary() -> None:
    index = _index(
        ("ab", "quay.io/ab/*", "a/b/*"),
        ("ac", "ghcr.io/*", "a/c/*"),
        ("abc-static", "gcr.io/x/y", "a/b/c"),
        ("d", "docker.io/library/*", "d/*"),
    )
    assert _matched(index, "a/b/x") == ("ab", "quay.io", "ab/x")
    assert _matched(index, "a/b/c") == ("abc-static", "gcr.io", "x/y")
    assert _matched(index, "a/b/c/d") == ("ab", "quay.io", "ab/c/d")
    assert _matched(index, "a/c/x/y") == ("ac", "ghcr.io", "x/y")
    assert _matched(index, "d/nginx") == ("d", "docker.io", "library/nginx")
    assert _matched(index, "a/bc/x") is None
    assert _matched(index, "a/b") is None
    assert _matched(index, "a/x") is None
    assert _matched(index, "a") is None
    assert _matched(index, "dd/x") is None
    assert _matched(index, "") is None


def test_wildcard_does_not_match_its_own_prefix() -> None:
    index = _index(("hub", "docker.io/library/*", "cache/hub/*"))
    assert index.match("cache/hub") is None
    assert index.match("cache") is None


def test_empty_index() -> None:
    index = RuleIndex()
    assert len(index) == 0
    assert index.match("anything") is None


@pytest.mark.parametrize(
    ("existing", "new"),
    [("*", "library/*"), ("library/*", "library/dotnet/*"), ("*", "*"), ("a/b/*", "a/*")],
)
def test_add_refuses_overlapping_wildcards(existing: str, new: str) -> None:
    index = RuleIndex([("first", _rule(existing))])
    with pytest.raises(TargetConflict) as caught:
        index.add("second", _rule(new))
    assert "first" in caught.value.message
    assert existing in caught.value.message
    assert caught.value.status == 409
    assert len(index) == 1
    assert "second" not in index
    assert "first" in index


def test_add_refuses_equal_statics() -> None:
    index = _index(("first", "quay.io/a/b", "ab"))
    with pytest.raises(TargetConflict):
        index.add("second", parse_rule("ghcr.io/c/d", "ab"))
    assert _matched(index, "ab") == ("first", "quay.io", "a/b")
    assert len(index) == 1


def test_add_allows_static_in_wildcard_and_disjoint_wildcards() -> None:
    index = _index(("all", "mcr.microsoft.com/*", "*"))
    index.add("static", parse_rule("docker.io/library/dotnet", "library/dotnet"))
    assert len(index) == 2
    index2 = _index(("a", "quay.io/*", "a/*"))
    index2.add("ab", parse_rule("ghcr.io/*", "ab/*"))
    assert _matched(index2, "ab/x") == ("ab", "ghcr.io", "x")
    assert _matched(index2, "a/x") == ("a", "quay.io", "x")


def test_add_same_name_replaces() -> None:
    index = _index(("r", "quay.io/*", "a/*"))
    index.add("r", parse_rule("ghcr.io/*", "a/b/*"))  # would nest in its own old target
    assert len(index) == 1
    assert _matched(index, "a/b/x") == ("r", "ghcr.io", "x")
    assert _matched(index, "a/x") is None
    index.add("r", parse_rule("gcr.io/p", "a"))
    assert _matched(index, "a/b/x") is None
    assert _matched(index, "a") == ("r", "gcr.io", "p")
    # The old wildcard's bookkeeping is gone: a "*" rule can now be added.
    index.add("all", parse_rule("mcr.microsoft.com/*", "*"))
    assert len(index) == 2


def test_replace_that_conflicts_keeps_old_rule() -> None:
    index = _index(("r", "quay.io/*", "a/*"), ("s", "ghcr.io/*", "b/*"))
    with pytest.raises(TargetConflict):
        index.add("r", parse_rule("gcr.io/*", "b/c/*"))
    assert _matched(index, "a/x") == ("r", "quay.io", "x")
    assert len(index) == 2


def test_remove() -> None:
    index = _index(
        ("all", "mcr.microsoft.com/*", "*"),
        ("static", "docker.io/library/dotnet", "library/dotnet"),
    )
    assert len(index) == 2
    index.remove("static")
    assert len(index) == 1
    assert "static" not in index
    assert _matched(index, "library/dotnet") == ("all", "mcr.microsoft.com", "library/dotnet")
    index.remove("all")
    assert len(index) == 0
    assert index.match("library/dotnet") is None
    index.remove("all")  # absent: no error
    assert len(index) == 0


def test_remove_frees_nested_targets() -> None:
    index = _index(("deep", "quay.io/*", "a/b/c/*"))
    with pytest.raises(TargetConflict):
        index.add("top", parse_rule("ghcr.io/*", "a/*"))
    index.remove("deep")
    index.add("top", parse_rule("ghcr.io/*", "a/*"))
    index.add("static", parse_rule("quay.io/x", "a/b/c"))
    assert _matched(index, "a/b/c/d") == ("top", "ghcr.io", "b/c/d")
    assert _matched(index, "a/b/c") == ("static", "quay.io", "x")
    with pytest.raises(TargetConflict):
        index.add("all", parse_rule("mcr.microsoft.com/*", "*"))


def _brute_force(
    rules: dict[str, RulePattern], repository: str
) -> tuple[str, RulePattern, UpstreamRef] | None:
    """The reference semantics: exact static first, else the longest matching wildcard."""
    best: tuple[str, RulePattern, UpstreamRef] | None = None
    for name, pattern in rules.items():
        upstream = upstream_for(pattern, repository)
        if upstream is None:
            continue
        if not pattern.wildcard:
            return name, pattern, upstream
        if best is None or len(pattern.target_path) > len(best[1].target_path):
            best = name, pattern, upstream
    return best


def test_thousand_rules() -> None:
    rules: dict[str, RulePattern] = {}
    for i in range(500):
        rules[f"wild-{i:03d}"] = parse_rule(f"r{i}.example.com/team{i}/*", f"team{i:03d}/*")
        rules[f"static-{i:03d}"] = parse_rule(f"docker.io/special{i}", f"team{i:03d}/special")
    index = RuleIndex(rules.items())
    assert len(index) == 1000

    for i in range(500):
        assert _matched(index, f"team{i:03d}/special") == (
            f"static-{i:03d}",
            "docker.io",
            f"library/special{i}",
        )
        assert _matched(index, f"team{i:03d}/special/sub") == (
            f"wild-{i:03d}",
            f"r{i}.example.com",
            f"team{i}/special/sub",
        )
        assert _matched(index, f"team{i:03d}/app") == (
            f"wild-{i:03d}",
            f"r{i}.example.com",
            f"team{i}/app",
        )
        assert index.match(f"team{i:03d}") is None
    for repository in ["team500/app", "team0001/app", "team/app", "other", "team00/app"]:
        assert index.match(repository) is None

    probes = [f"team{i:03d}/{leaf}" for i in range(0, 500, 7) for leaf in ("special", "x/y")]
    for repository in probes:
        assert index.match(repository) == _brute_force(rules, repository)

    for i in range(0, 500, 2):
        index.remove(f"static-{i:03d}")
    assert len(index) == 750
    assert _matched(index, "team000/special") == ("wild-000", "r0.example.com", "team0/special")
    assert _matched(index, "team001/special") == ("static-001", "docker.io", "library/special1")


# -- property: the index agrees with overlaps() and with a scan over all rules --------------------
_SEGMENTS = st.sampled_from(["a", "b", "ab"])
_PATHS = st.lists(_SEGMENTS, min_size=1, max_size=3).map("/".join)
_TARGETS = st.one_of(
    st.just("*"),
    _PATHS.map(lambda path: path + "/*"),
    _PATHS,
)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(
    targets=st.lists(_TARGETS, max_size=12),
    repositories=st.lists(_PATHS, min_size=1, max_size=10),
)
def test_index_agrees_with_scan(targets: list[str], repositories: list[str]) -> None:
    index = RuleIndex()
    kept: dict[str, RulePattern] = {}
    for i, target in enumerate(targets):
        pattern = _rule(target)
        name = f"rule-{i}"
        expect_conflict = any(overlaps(pattern, other) for other in kept.values())
        if expect_conflict:
            with pytest.raises(TargetConflict):
                index.add(name, pattern)
        else:
            index.add(name, pattern)
            kept[name] = pattern
        assert len(index) == len(kept)
    for repository in repositories:
        assert index.match(repository) == _brute_force(kept, repository)
    for name in list(kept)[::2]:
        index.remove(name)
        del kept[name]
    for repository in repositories:
        assert index.match(repository) == _brute_force(kept, repository)
