"""Listings of the registry face: ``GET /v2/_catalog`` and ``tags/list``, paged with ``n`` and
``last`` and a ``Link`` to the next page, against content really pulled through entrepot from a
real upstream (Debian's ``docker-registry``).

One upstream and one in-process server are shared by the module (pushing and pulling the
images is what costs); tests that need another configuration start their own server.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from entrepot.metadata.content import SqlContentIndex
from entrepot.metadata.records import NewManifest
from entrepot.metadata.resources import SqlResourceStore
from tests.conftest import InProcessServer, _new_server
from tests.metadata_support import NOW, add_registry, opened, store_url
from tests.registries import Registry, push_test_image, start_registry
from tests.test_registry_face import assert_oci_error
from tests.test_registry_routes import NO_ANONYMOUS, basic, make_token, put_rule

Factory = Callable[..., InProcessServer]
TAGS = ["1.0", "1.1", "2.0", "beta", "latest", "v9"]  # sorted, as listings are
REPOSITORIES = ["lib/alpha", "lib/beta", "lib/gamma"]  # one tag each, plus lib/paged
LINK = re.compile(r'^<(?P<url>/v2/[^>]+)>; rel="next"$')


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    registry = start_registry(tmp_path_factory.mktemp("upstream"), "open")
    try:
        for tag in TAGS:
            push_test_image(registry, "lib/paged", tag)
        for repository in REPOSITORIES:
            push_test_image(registry, repository, "v1")
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="module")
def cached(
    tmp_path_factory: pytest.TempPathFactory, upstream: Registry
) -> Iterator[InProcessServer]:
    """A server whose rule ``up-lib`` maps ``up/*`` to ``<upstream>/lib/*``, with every tag of
    every image pulled through it once (so cached), and ``up/nothing`` looked at in vain."""
    extra = f'\n[upstreams."{upstream.login_server}"]\nurl = "{upstream.url}"\n'
    server = _new_server(InProcessServer, tmp_path_factory.mktemp("cached"), "srv", extra)
    server.start()
    try:
        put_rule(server, "up-lib", f"{upstream.login_server}/lib/*", "up/*")
        for repository, tag in upstream.images:
            target = "up/" + repository.removeprefix("lib/")
            got = requests.get(f"{server.url}/v2/{target}/manifests/{tag}", timeout=30)
            assert got.status_code == 200, got.text
        missing = requests.get(f"{server.url}/v2/up/nothing/manifests/v1", timeout=30)
        assert_oci_error(missing, 404, "MANIFEST_UNKNOWN")
        yield server
    finally:
        server.stop()


def get(server: InProcessServer, path: str, **params: str) -> requests.Response:
    response = requests.get(f"{server.url}{path}", params=params or None, timeout=30)
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    return response


def next_link(response: requests.Response) -> str | None:
    """The relative URL of the ``Link`` header (asserting its form), or ``None``."""
    header = response.headers.get("Link")
    if header is None:
        return None
    match = LINK.fullmatch(header)
    assert match is not None, header
    return match["url"]


def walk(server: InProcessServer, path: str, key: str, **params: str) -> list[list[str]]:
    """Every page of a listing, following ``Link`` from ``path`` until a page has none."""
    pages: list[list[str]] = []
    response = get(server, path, **params)
    while True:
        assert response.status_code == 200, response.text
        pages.append(response.json()[key])
        link = next_link(response)
        if link is None:
            return pages
        assert len(pages) < 20, pages
        response = get(server, link)


# -- the catalog ----------------------------------------------------------------------------------
CATALOG = ["up/alpha", "up/beta", "up/gamma", "up/paged"]


def test_the_catalog_lists_the_cached_repositories(cached: InProcessServer) -> None:
    """Target names, sorted; a repository only looked at (nothing upstream) is not listed."""
    response = get(cached, "/v2/_catalog")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"repositories": CATALOG}
    assert "Link" not in response.headers
    head = requests.head(f"{cached.url}/v2/_catalog", timeout=30)
    assert head.status_code == 200 and head.content == b""


def test_the_catalog_is_paged_with_n_last_and_link(cached: InProcessServer) -> None:
    assert walk(cached, "/v2/_catalog", "repositories", n="3") == [CATALOG[:3], CATALOG[3:]]
    # a full last page still has a Link, to an empty page
    assert walk(cached, "/v2/_catalog", "repositories", n="2") == [CATALOG[:2], CATALOG[2:], []]
    first = get(cached, "/v2/_catalog", n="2")
    link = next_link(first)
    assert link is not None
    assert urlsplit(link).path == "/v2/_catalog"
    assert parse_qs(urlsplit(link).query) == {"n": ["2"], "last": ["up/beta"]}
    after = get(cached, "/v2/_catalog", last="up/beta")
    assert after.json() == {"repositories": CATALOG[2:]}
    assert get(cached, "/v2/_catalog", last="up/a").json()["repositories"] == CATALOG
    for last in ("up/paged", "zzz", "~"):
        past = get(cached, "/v2/_catalog", last=last)
        assert past.json() == {"repositories": []} and "Link" not in past.headers
    zero = get(cached, "/v2/_catalog", n="0")
    assert zero.json() == {"repositories": []} and "Link" not in zero.headers
    # ns names no repository here: the catalog is the registry's, with or without it
    assert get(cached, "/v2/_catalog", ns="docker.io").json()["repositories"] == CATALOG


@pytest.mark.parametrize("n", ["1" + "0" * 30, "1001", "00000000000000000000000000004"])
def test_a_huge_n_is_capped(cached: InProcessServer, n: str) -> None:
    response = get(cached, "/v2/_catalog", n=n)
    assert response.status_code == 200, response.text
    expected = CATALOG if int(n) > len(CATALOG) else CATALOG[: int(n)]
    assert response.json() == {"repositories": expected}


@pytest.mark.parametrize("n", ["-1", "x", "1.5", " 1", "", "\u0661"])  # the last: an Arabic-Indic 1
def test_a_bad_n_is_pagination_number_invalid(cached: InProcessServer, n: str) -> None:
    error = assert_oci_error(get(cached, "/v2/_catalog", n=n), 400, "PAGINATION_NUMBER_INVALID")
    assert error["detail"] == {"target": "n"}
    assert_oci_error(get(cached, "/v2/up/paged/tags/list", n=n), 400, "PAGINATION_NUMBER_INVALID")


def test_catalog_is_no_repository_name(cached: InProcessServer) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        refused = requests.request(method, f"{cached.url}/v2/_catalog", timeout=30)
        assert_oci_error(refused, 405, "UNSUPPORTED")
    for path in ("/v2/_catalog/tags/list", "/v2/_catalog/manifests/latest"):
        assert_oci_error(get(cached, path), 400, "NAME_INVALID")
    assert_oci_error(get(cached, "/v2/_catalog/"), 404, "UNSUPPORTED")
    assert_oci_error(get(cached, "/v2/_CATALOG"), 404, "UNSUPPORTED")


def test_the_catalog_needs_the_same_credentials_as_every_route(
    server_factory: Factory,
) -> None:
    server = server_factory(env=NO_ANONYMOUS)
    refused = assert_oci_error(get(server, "/v2/_catalog"), 401, "UNAUTHORIZED")
    assert refused["message"]
    assert (
        requests.get(f"{server.url}/v2/_catalog", timeout=30).headers["WWW-Authenticate"]
        == 'Basic realm="entrepot"'
    )
    wrong = requests.get(
        f"{server.url}/v2/_catalog", headers={"Authorization": basic("x", "nope")}, timeout=30
    )
    assert_oci_error(wrong, 401, "UNAUTHORIZED")
    token = make_token(server, "catalog-reader", "pull")
    allowed = requests.get(
        f"{server.url}/v2/_catalog",
        headers={"Authorization": basic("catalog-reader", token)},
        timeout=30,
    )
    assert allowed.status_code == 200 and allowed.json() == {"repositories": []}


# -- tags/list ------------------------------------------------------------------------------------
def test_tags_are_listed_sorted_and_paged(cached: InProcessServer) -> None:
    path = "/v2/up/paged/tags/list"
    whole = get(cached, path)
    assert whole.json() == {"name": "up/paged", "tags": TAGS} and "Link" not in whole.headers
    assert walk(cached, path, "tags", n="4") == [TAGS[:4], TAGS[4:]]
    assert walk(cached, path, "tags", n="2") == [TAGS[:2], TAGS[2:4], TAGS[4:], []]
    first = get(cached, path, n="2")
    link = next_link(first)
    assert link is not None
    assert urlsplit(link).path == path
    assert parse_qs(urlsplit(link).query) == {"n": ["2"], "last": ["1.1"]}
    assert get(cached, path, last="1.1").json()["tags"] == TAGS[2:]
    assert get(cached, path, last="beta", n="1").json()["tags"] == ["latest"]
    for last in ("v9", "zzz"):
        past = get(cached, path, last=last)
        assert past.json() == {"name": "up/paged", "tags": []} and "Link" not in past.headers
    zero = get(cached, path, n="0")
    assert zero.json() == {"name": "up/paged", "tags": []} and "Link" not in zero.headers
    for n in ("1" + "0" * 30, "9" * 10**3):
        huge = get(cached, path, n=n)
        assert huge.status_code == 200 and huge.json()["tags"] == TAGS, huge.text
    # a repository with no cached tag (nothing upstream) lists none
    assert get(cached, "/v2/up/nothing/tags/list").json() == {"name": "up/nothing", "tags": []}


def test_tag_links_carry_ns_in_mirror_mode(cached: InProcessServer, upstream: Registry) -> None:
    """containerd asks a mirror with ``?ns=<registry>`` and the upstream's name; the next page
    must be asked the same way."""
    path = "/v2/lib/paged/tags/list"
    pages = walk(cached, path, "tags", n="4", ns=upstream.login_server)
    assert pages == [TAGS[:4], TAGS[4:]]
    first = get(cached, path, n="4", ns=upstream.login_server)
    assert first.json()["name"] == "lib/paged"
    link = next_link(first)
    assert link is not None and urlsplit(link).path == path
    query = parse_qs(urlsplit(link).query)
    assert query == {"n": ["4"], "last": ["beta"], "ns": [upstream.login_server]}


# -- the content index query behind the catalog ---------------------------------------------------
def _manifest(repository_id: int, n: int) -> NewManifest:
    return NewManifest(
        repository_id=repository_id,
        digest=f"sha256:{str(n).rjust(64, '0')}",
        media_type="application/vnd.oci.image.manifest.v1+json",
        size=100,
        artifact_type=None,
        subject=None,
        references=(),
        now=NOW,
    )


async def test_cached_repositories_query(database_url: str, tmp_path: Path) -> None:
    """Only repositories holding a manifest, of this registry only, in code-point order."""
    async with opened(store_url(database_url, tmp_path)) as db:
        store = SqlResourceStore(db)
        reg = await add_registry(store, "cache-registry")
        other = await add_registry(store, "other-registry")
        index = SqlContentIndex(db)
        held = ["a-b", "a_c", "ab", "V1", "latest", "z/y"]
        for n, name in enumerate(held):
            await index.put_manifest(_manifest((await index.ensure_repository(reg, name)).id, n))
        await index.ensure_repository(reg, "empty")  # looked at, nothing stored
        elsewhere = (await index.ensure_repository(other, "elsewhere")).id
        await index.put_manifest(_manifest(elsewhere, 99))
        ordered = sorted(held)
        assert await index.cached_repositories(reg, "", 100) == ordered
        assert await index.cached_repositories(reg, "", 2) == ordered[:2]
        assert await index.cached_repositories(reg, ordered[1], 2) == ordered[2:4]
        assert await index.cached_repositories(reg, ordered[-1], 2) == []
        assert await index.cached_repositories(other, "", 100) == ["elsewhere"]
