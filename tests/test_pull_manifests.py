"""Manifests through the pull-through cache, against a real upstream (Debian's
``docker-registry``, distribution 2.8) with images built by :mod:`tests.images`, pulled with
``skopeo`` and plain HTTP through a real entrepot server: exact bytes and digests, multi-arch
indexes and their children, ``Accept`` negotiation, referrers, the in-memory hot path and tag
freshness.

Upstream requests are counted from the upstream registry's access log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from entrepot.oci import Digest
from entrepot.proxy.hot import Flights, HotCache
from tests import images
from tests.conftest import POSTGRES_ADMIN_URL, InProcessServer
from tests.registries import Registry, require_tools
from tests.test_pull_cache import start, upstream_requests, wait_for_log
from tests.test_registry_face import assert_oci_error
from tests.test_registry_routes import put_rule, skopeo

Factory = Callable[..., InProcessServer]

SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"
ALL_TYPES = ", ".join(
    (images.OCI_MANIFEST, images.OCI_INDEX, images.DOCKER_MANIFEST, images.DOCKER_LIST)
)


def get(
    server: InProcessServer, path: str, accept: str | None = ALL_TYPES, method: str = "GET"
) -> requests.Response:
    """``method /v2/<path>``; ``accept=None`` sends no ``Accept`` header at all."""
    headers: dict[str, Any] = {"Accept": accept}  # None: requests sends no Accept
    return requests.request(method, f"{server.url}/v2/{path}", headers=headers, timeout=60)


def assert_manifest(answer: requests.Response, pushed: images.Pushed) -> None:
    """The answer is ``pushed``, exactly, with the headers a client relies on."""
    assert answer.status_code == 200, answer.text
    assert answer.content == pushed.data
    assert answer.headers["Content-Type"] == pushed.media_type
    assert answer.headers["Docker-Content-Digest"] == pushed.digest
    assert answer.headers["Content-Length"] == str(len(pushed.data))
    assert answer.headers["ETag"] == f'"{pushed.digest}"'


def pull_all(server: InProcessServer, image: str, into: Path, home: Path) -> None:
    done = skopeo(
        "--insecure-policy", "copy", "--all", "--src-tls-verify=false", "--src-no-creds",
        f"docker://127.0.0.1:{server.port}/{image}", f"dir:{into}", home=home,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + server.log()


def pull_arch(server: InProcessServer, image: str, arch: str, into: Path, home: Path) -> None:
    done = skopeo(
        "--insecure-policy", "--override-os", "linux", "--override-arch", arch, "copy",
        "--src-tls-verify=false", "--src-no-creds",
        f"docker://127.0.0.1:{server.port}/{image}", f"dir:{into}", home=home,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + server.log()


def check_multi_arch(
    server: InProcessServer, upstream: Registry, index: images.Pushed, name: str, tmp: Path
) -> None:
    """skopeo pulls every platform (exact bytes), then only arm64, through ``up/<name>``."""
    everything = tmp / "all"
    pull_all(server, f"up/{name}:v1", everything, tmp)
    assert (everything / "manifest.json").read_bytes() == index.data
    for child in index.children:
        hex_ = child.digest.removeprefix("sha256:")
        assert (everything / f"{hex_}.manifest.json").read_bytes() == child.data
        for digest, blob in child.blobs.items():
            assert (everything / digest.removeprefix("sha256:")).read_bytes() == blob
        # each child was fetched upstream once, by digest, through the same repository
        path = f"/v2/lib/{name}/manifests/{child.digest}"
        assert wait_for_log(upstream, "GET", path, 1) == 1

    arm = tmp / "arm64"
    pull_arch(server, f"up/{name}:v1", "arm64", arm, tmp)
    child = index.child("linux", "arm64")
    assert (arm / "manifest.json").read_bytes() == child.data
    time.sleep(0.2)
    assert upstream_requests(upstream, "GET", f"/v2/lib/{name}/manifests/{child.digest}") == 1
    assert upstream_requests(upstream, "GET", f"/v2/lib/{name}/manifests/v1") == 1


# -- multi-arch ----------------------------------------------------------------------------------
def test_an_oci_index_and_its_children_pull_exactly(
    server_factory: Factory, open_registry: Registry, tmp_path: Path
) -> None:
    require_tools("skopeo")
    index = images.oci_index(open_registry, "lib/multi", "v1")
    server = start(server_factory, open_registry)
    check_multi_arch(server, open_registry, index, "multi", tmp_path)
    for child in index.children:  # by digest, from the cache
        answer = get(server, f"up/multi/manifests/{child.digest}")
        assert_manifest(answer, child)
        assert answer.headers["X-Entrepot-Cache"] == "hit"


def test_a_docker_manifest_list_and_its_children_pull_exactly(
    server_factory: Factory, open_registry: Registry, tmp_path: Path
) -> None:
    require_tools("skopeo")
    listed = images.docker_list(open_registry, "lib/dlist", "v1")
    server = start(server_factory, open_registry)
    check_multi_arch(server, open_registry, listed, "dlist", tmp_path)


# -- Accept --------------------------------------------------------------------------------------
def test_accept_negotiation_as_distribution_does_it(
    server_factory: Factory, open_registry: Registry
) -> None:
    oci = images.image(open_registry, "lib/neg", "oci")
    index = images.oci_index(open_registry, "lib/neg", "index")
    docker = images.image(open_registry, "lib/neg", "docker", docker=True)
    listed = images.docker_list(open_registry, "lib/neg", "list")
    server = start(server_factory, open_registry)
    base = "up/neg/manifests"

    # no Accept, */*, every type, or no manifest type at all: what is stored
    for pushed in (oci, index, docker, listed):
        for accept in (None, "*/*", ALL_TYPES, "application/json", f"{images.OCI_MANIFEST}, */*"):
            assert_manifest(get(server, f"{base}/{pushed.tag}", accept), pushed)

    # OCI content the client does not accept: 404, worded as distribution words it
    docker_only = f"{images.DOCKER_MANIFEST}, {images.DOCKER_LIST}"
    for pushed, words in ((oci, "OCI manifest found"), (index, "OCI index found")):
        for ref in (pushed.tag, pushed.digest):
            error = assert_oci_error(
                get(server, f"{base}/{ref}", docker_only), 404, "MANIFEST_UNKNOWN"
            )
            assert (
                words in error["message"] and "accept header does not support" in (error["message"])
            )
    manifest_only = f"{images.OCI_MANIFEST};q=0.9, {images.DOCKER_MANIFEST}"
    assert_oci_error(get(server, f"{base}/index", manifest_only), 404, "MANIFEST_UNKNOWN")
    # a parameter does not hide the type
    assert_manifest(get(server, f"{base}/oci", f"{images.OCI_MANIFEST}; q=0.5"), oci)

    # a Docker list by tag, to a client without lists: its linux/amd64 manifest
    amd64 = listed.child("linux", "amd64")
    for accept in (images.DOCKER_MANIFEST, f"{images.DOCKER_MANIFEST}, {SCHEMA1}"):
        assert_manifest(get(server, f"{base}/list", accept), amd64)
    # ... but by digest the list itself (nothing else has that digest)
    assert_manifest(get(server, f"{base}/{listed.digest}", images.DOCKER_MANIFEST), listed)
    # ... and a client of schema 1 only gets nothing: we never convert
    for ref in ("list", "docker"):
        error = assert_oci_error(get(server, f"{base}/{ref}", SCHEMA1), 404, "MANIFEST_UNKNOWN")
        assert "never converts" in error["message"]
    assert_manifest(get(server, f"{base}/{docker.digest}", SCHEMA1), docker)

    # HEAD: the same headers, no body
    for pushed in (oci, index, docker, listed):
        head = get(server, f"{base}/{pushed.tag}", method="HEAD")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["Content-Length"] == str(len(pushed.data))
        assert head.headers["Docker-Content-Digest"] == pushed.digest
        assert head.headers["Content-Type"] == pushed.media_type
        assert head.headers["ETag"] == f'"{pushed.digest}"'
    head = get(server, f"{base}/list", images.DOCKER_MANIFEST, method="HEAD")
    assert head.headers["Docker-Content-Digest"] == amd64.digest

    # If-None-Match with the ETag: 304, as distribution answers
    url = f"{server.url}/v2/{base}/oci"
    same = requests.get(url, headers={"If-None-Match": f'"{oci.digest}"'}, timeout=30)
    assert same.status_code == 304 and same.content == b""
    assert same.headers["Docker-Content-Digest"] == oci.digest
    other = requests.get(url, headers={"If-None-Match": f'"{docker.digest}"'}, timeout=30)
    assert_manifest(other, oci)

    # upstream: one GET per tag and per child, each with every type in Accept
    for pushed in (oci, index, docker, listed):
        assert upstream_requests(open_registry, "GET", f"/v2/lib/neg/manifests/{pushed.tag}") == 1


def test_a_digest_cached_for_one_repository_is_not_served_from_another(
    server_factory: Factory, open_registry: Registry
) -> None:
    pushed = images.image(open_registry, "lib/mine", "v1")
    server = start(server_factory, open_registry)
    put_rule(server, "other", f"{open_registry.login_server}/elsewhere/*", "other/*")
    assert_manifest(get(server, f"up/mine/manifests/{pushed.digest}"), pushed)
    assert_manifest(get(server, f"up/mine/manifests/{pushed.digest}"), pushed)  # hot now
    assert_oci_error(get(server, f"other/mine/manifests/{pushed.digest}"), 404, "MANIFEST_UNKNOWN")
    path = f"/v2/elsewhere/mine/manifests/{pushed.digest}"
    assert wait_for_log(open_registry, "GET", path, 1) == 1  # asked its own upstream


# -- referrers -----------------------------------------------------------------------------------
def test_referrers_through_the_tag_schema_of_an_upstream_without_the_api(
    server_factory: Factory, open_registry: Registry
) -> None:
    subject = images.image(open_registry, "lib/signed", "v1")
    sbom = images.artifact(open_registry, "lib/signed", subject, "application/vnd.example.sbom")
    sig = images.artifact(open_registry, "lib/signed", subject, "application/vnd.example.sig")
    lonely = images.image(open_registry, "lib/signed", "v2")
    tag_path = f"/v2/lib/signed/manifests/{images.referrers_tag(subject.digest)}"
    built = upstream_requests(open_registry, "GET", tag_path)  # the builder reads it too
    server = start(server_factory, open_registry)
    url = f"{server.url}/v2/up/signed/referrers"

    answer = requests.get(f"{url}/{subject.digest}", timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == images.OCI_INDEX
    assert "OCI-Filters-Applied" not in answer.headers
    index = answer.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == images.OCI_INDEX
    listed = {m["digest"]: m for m in index["manifests"]}
    assert set(listed) == {sbom.digest, sig.digest}
    assert listed[sbom.digest]["artifactType"] == "application/vnd.example.sbom"
    assert listed[sbom.digest]["size"] == len(sbom.data)
    # distribution 2.8 has no referrers API: asked once, then the tag schema
    assert wait_for_log(open_registry, "GET", f"/v2/lib/signed/referrers/{subject.digest}", 1) == 1
    assert wait_for_log(open_registry, "GET", tag_path, built + 1) == built + 1

    filtered = requests.get(
        f"{url}/{subject.digest}",
        params={"artifactType": "application/vnd.example.sig"},
        timeout=30,
    )
    assert filtered.status_code == 200
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["digest"] for m in filtered.json()["manifests"]] == [sig.digest]
    none = requests.get(f"{url}/{subject.digest}", params={"artifactType": "x/y"}, timeout=30)
    assert none.json()["manifests"] == [] and none.headers["OCI-Filters-Applied"] == "artifactType"
    assert answer.headers["X-Entrepot-Cache"] == "miss"
    assert filtered.headers["X-Entrepot-Cache"] == "hit"  # cached like a tag: no upstream
    time.sleep(0.2)
    assert upstream_requests(open_registry, "GET", tag_path) == built + 1

    # a referrer is pulled by digest through the cache, exactly
    assert_manifest(get(server, f"up/signed/manifests/{sig.digest}"), sig)

    # no referrers: an empty index
    empty = requests.get(f"{url}/{lonely.digest}", timeout=30)
    assert empty.status_code == 200
    assert empty.headers["Content-Type"] == images.OCI_INDEX
    assert empty.json() == {"schemaVersion": 2, "mediaType": images.OCI_INDEX, "manifests": []}

    # the upstream down: the cached answer, fresh (the TTL is 300 s)
    open_registry.stop()
    again = requests.get(f"{url}/{subject.digest}", timeout=60)
    assert again.status_code == 200 and again.content == answer.content
    assert again.headers["X-Entrepot-Cache"] == "hit"


def test_referrers_are_served_stale_when_the_upstream_is_down(
    server_factory: Factory, open_registry: Registry
) -> None:
    subject = images.image(open_registry, "lib/sbom", "v1")
    sbom = images.artifact(open_registry, "lib/sbom", subject)
    server = start(server_factory, open_registry, ttl=0)
    url = f"{server.url}/v2/up/sbom/referrers/{subject.digest}"
    first = requests.get(url, timeout=30)
    assert [m["digest"] for m in first.json()["manifests"]] == [sbom.digest]
    open_registry.stop()
    stale = requests.get(url, timeout=60)
    assert stale.status_code == 200 and stale.content == first.content
    assert stale.headers["X-Entrepot-Cache"] == "stale"
    other = "sha256:" + "1" * 64  # never cached: the upstream's failure
    assert_oci_error(requests.get(f"{url[: -len(subject.digest)]}{other}", timeout=60), 502,
                     "UNAVAILABLE")  # fmt: skip


# -- the hot path ----------------------------------------------------------------------------------
async def _admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def test_a_warm_pull_by_tag_needs_neither_the_upstream_nor_the_database(
    server_factory: Factory, open_registry: Registry, postgres_database: str
) -> None:
    """The database is made unreachable (connections refused, the open ones terminated): a warm
    pull by tag is still answered, from memory; anything that needs the database fails."""
    pushed = images.image(open_registry, "lib/warm", "v1")
    other = images.image(open_registry, "lib/warm", "v2")
    extra = (
        f'\n[database]\nurl = "{postgres_database}"\n\n[registry]\nrules_refresh_seconds = 3600\n'
    )
    server = server_factory(
        f'\n[upstreams."{open_registry.login_server}"]\nurl = "{open_registry.url}"\n{extra}'
    )
    put_rule(server, "upstream-lib", f"{open_registry.login_server}/lib/*", "up/*")
    first = get(server, "up/warm/manifests/v1")
    assert_manifest(first, pushed)
    assert first.headers["X-Entrepot-Cache"] == "miss"

    name = postgres_database.rsplit("/", 1)[1]
    asyncio.run(_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
    try:
        asyncio.run(
            _admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
        )
        for _ in range(20):
            warm = get(server, "up/warm/manifests/v1")
            assert_manifest(warm, pushed)
            assert warm.headers["X-Entrepot-Cache"] == "hit"
        by_digest = get(server, f"up/warm/manifests/{pushed.digest}")
        assert_manifest(by_digest, pushed)
        # the control: what is not in memory needs the database, which is unreachable
        failed = get(server, f"up/warm/manifests/{other.digest}")
        assert failed.status_code >= 500, failed.text
    finally:
        asyncio.run(_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
    time.sleep(0.2)
    assert upstream_requests(open_registry, "GET", "/v2/lib/warm/manifests/v1") == 1
    assert upstream_requests(open_registry, "HEAD", "/v2/lib/warm/manifests/v1") == 0


@pytest.mark.slow
def test_an_upstream_tag_move_shows_after_the_ttl(
    server_factory: Factory, open_registry: Registry
) -> None:
    ttl = 2.0
    old = images.image(open_registry, "lib/moving", "v1")
    server = start(server_factory, open_registry, ttl=ttl)
    assert_manifest(get(server, "up/moving/manifests/v1"), old)
    started = time.monotonic()
    new = images.image(open_registry, "lib/moving", "v1")  # the tag moves upstream
    assert new.digest != old.digest
    before = get(server, "up/moving/manifests/v1")
    assert time.monotonic() - started < ttl, "too slow to see the TTL at work"
    assert_manifest(before, old)
    assert before.headers["X-Entrepot-Cache"] == "hit"
    time.sleep(ttl - (time.monotonic() - started) + 0.2)
    after = get(server, "up/moving/manifests/v1")
    assert_manifest(after, new)
    assert after.headers["X-Entrepot-Cache"] == "miss"
    again = get(server, "up/moving/manifests/v1")
    assert_manifest(again, new)
    assert again.headers["X-Entrepot-Cache"] == "hit"
    assert wait_for_log(open_registry, "HEAD", "/v2/lib/moving/manifests/v1", 1) == 1
    assert upstream_requests(open_registry, "GET", "/v2/lib/moving/manifests/v1") == 2


# -- the in-memory cache alone -------------------------------------------------------------------
def test_the_hot_cache_is_bounded_keyed_by_repository_and_expires_tags() -> None:
    hot = HotCache(max_bytes=4000, max_tags=2)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    ttl = dt.timedelta(seconds=10)
    digests = [Digest.of(bytes([i])) for i in range(10)]
    for i in range(8):
        hot.put_manifest(1, digests[i], "m", bytes(900))
    assert hot.manifest_bytes <= 4000
    assert hot.manifest(1, digests[0]) is None  # the least recently used went first
    assert hot.manifest(1, digests[7]) is not None
    assert hot.manifest(2, digests[7]) is None  # another repository: not there
    hot.put_manifest(1, digests[9], "m", bytes(1001))  # over a quarter: not kept
    assert hot.manifest(1, digests[9]) is None
    held = hot.manifest_bytes
    hot.forget_manifest(1, digests[7])
    assert hot.manifest(1, digests[7]) is None and hot.manifest_bytes == held - 900

    hot.put_tag(1, "v1", digests[1], now)
    assert hot.fresh_tag(1, "v1", ttl, now + dt.timedelta(seconds=9)) is not None
    assert hot.fresh_tag(1, "v1", ttl, now + ttl) is None  # checked a TTL ago: ask again
    assert hot.fresh_tag(2, "v1", ttl, now) is None
    hot.put_tag(1, "v1", digests[2], now - dt.timedelta(seconds=1))  # an older check loses
    found = hot.fresh_tag(1, "v1", ttl, now)
    assert found is not None and found.digest == digests[1]
    hot.put_tag(1, "v2", digests[2], now)
    hot.put_tag(1, "v3", digests[3], now)
    assert hot.fresh_tag(1, "v1", ttl, now) is None  # at most two tags
    assert hot.stats.tag_hits >= 2 and hot.stats.manifest_misses >= 2


def test_test_images_are_what_the_upstream_serves(open_registry: Registry) -> None:
    """The builders of :mod:`tests.images` push what they say (read back from the upstream)."""
    index = images.oci_index(open_registry, "lib/built", "i")
    listed = images.docker_list(open_registry, "lib/built", "l")
    docker = images.image(open_registry, "lib/built", "d", docker=True)
    sbom = images.artifact(open_registry, "lib/built", docker)
    for pushed in (index, listed, docker, *index.children, *listed.children, sbom):
        ref = pushed.tag or pushed.digest
        answer = requests.get(
            f"{open_registry.url}/v2/lib/built/manifests/{ref}",
            headers={"Accept": ALL_TYPES},
            timeout=30,
        )
        assert answer.content == pushed.data and answer.headers["Content-Type"] == pushed.media_type
    tag = images.referrers_tag(docker.digest)
    answer = requests.get(
        f"{open_registry.url}/v2/lib/built/manifests/{tag}",
        headers={"Accept": images.OCI_INDEX},
        timeout=30,
    )
    assert [m["digest"] for m in answer.json()["manifests"]] == [sbom.digest]
    assert json.loads(sbom.data)["subject"]["digest"] == docker.digest
    assert {c.platform for c in index.children} == set(images.DEFAULT_PLATFORMS)


def test_referrers_from_an_upstream_with_the_referrers_api(server_factory: Factory) -> None:
    """A fake upstream, because no registry with the referrers API can be had here (Debian's
    distribution 2.8 has none): it answers ``/v2/``, the referrers of one subject and the
    manifest of one referrer, and counts what it is asked."""
    from aiohttp import web

    from tests.registries import ThreadedServer

    empty = b"{}"
    subject = "sha256:" + "5" * 64
    referrer = images.json_bytes(
        {
            "schemaVersion": 2,
            "mediaType": images.OCI_MANIFEST,
            "artifactType": "application/vnd.example.sig",
            "config": {"mediaType": images.OCI_EMPTY, "digest": images.digest_of(empty), "size": 2},
            "layers": [],
            "subject": {"mediaType": images.OCI_MANIFEST, "digest": subject, "size": 10},
        }
    )
    entries = [
        {"mediaType": images.OCI_MANIFEST, "digest": images.digest_of(referrer),
         "size": len(referrer), "artifactType": "application/vnd.example.sig"},
        {"mediaType": images.OCI_MANIFEST, "digest": "sha256:" + "6" * 64, "size": 10,
         "artifactType": "application/vnd.example.sbom"},
    ]  # fmt: skip
    answer = json.dumps({"schemaVersion": 2, "mediaType": images.OCI_INDEX, "manifests": entries})
    asked: list[str] = []
    accepts: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        asked.append(f"{request.method} {request.path}")
        accepts.append(request.headers.get("Accept", ""))
        if request.path == "/v2/":
            return web.json_response({})
        if request.path == f"/v2/lib/api/referrers/{subject}":
            return web.Response(body=answer.encode(), content_type=images.OCI_INDEX)
        if request.path == f"/v2/lib/api/manifests/{images.digest_of(referrer)}":
            return web.Response(body=referrer, content_type=images.OCI_MANIFEST)
        return web.json_response({"errors": [{"code": "NOT_FOUND"}]}, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    with ThreadedServer(app) as upstream:
        login = upstream.url.removeprefix("http://")
        server = server_factory(f'\n[upstreams."{login}"]\nurl = "{upstream.url}"\n')
        put_rule(server, "api-upstream", f"{login}/lib/*", "up/*")
        url = f"{server.url}/v2/up/api/referrers/{subject}"
        first = requests.get(url, timeout=30)
        assert first.status_code == 200, first.text
        assert first.content == answer.encode()  # unfiltered: the upstream's bytes
        assert first.headers["Content-Type"] == images.OCI_INDEX
        sig = requests.get(url, params={"artifactType": "application/vnd.example.sig"}, timeout=30)
        assert sig.headers["OCI-Filters-Applied"] == "artifactType"
        assert sig.json()["manifests"] == entries[:1]
        assert sig.headers["X-Entrepot-Cache"] == "hit"
        pulled = requests.get(
            f"{server.url}/v2/up/api/manifests/{images.digest_of(referrer)}", timeout=30
        )
        assert pulled.status_code == 200 and pulled.content == referrer
    assert asked.count(f"GET /v2/lib/api/referrers/{subject}") == 1
    assert not [a for a in asked if "sha256-" in a]  # the API answered: no tag-schema lookup
    manifest_get = asked.index(f"GET /v2/lib/api/manifests/{images.digest_of(referrer)}")
    sent = {t.strip() for t in accepts[manifest_get].split(",")}
    assert sent >= {
        images.OCI_MANIFEST,
        images.OCI_INDEX,
        images.DOCKER_MANIFEST,
        images.DOCKER_LIST,
    }


def test_concurrent_cold_pulls_of_a_tag_ask_the_upstream_once(
    server_factory: Factory, open_registry: Registry
) -> None:
    index = images.oci_index(open_registry, "lib/crowd", "v1")
    server = start(server_factory, open_registry)
    child = index.child("linux", "arm64")

    def pull(path: str) -> requests.Response:
        return get(server, path)

    with ThreadPoolExecutor(8) as pool:
        tags = list(pool.map(pull, ["up/crowd/manifests/v1"] * 8))
        children = list(pool.map(pull, [f"up/crowd/manifests/{child.digest}"] * 8))
    for answer in tags:
        assert_manifest(answer, index)
    for answer in children:
        assert_manifest(answer, child)
    time.sleep(0.2)
    assert upstream_requests(open_registry, "GET", "/v2/lib/crowd/manifests/v1") == 1
    assert upstream_requests(open_registry, "GET", f"/v2/lib/crowd/manifests/{child.digest}") == 1


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_test_images_push_to_registries_with_auth(
    registry_factory: Callable[..., Registry], kind: str
) -> None:
    registry = registry_factory(kind)
    listed = images.docker_list(registry, "lib/auth", "v1", platforms=(("linux", "arm64"),))
    assert [c.platform for c in listed.children] == [("linux", "arm64")]
    anonymous = requests.get(f"{registry.url}/v2/lib/auth/manifests/v1", timeout=30)
    assert anonymous.status_code == 401  # the builder did authenticate


def test_flights_share_one_call_that_outlives_its_first_waiter() -> None:
    async def scenario() -> None:
        flights = Flights()
        calls: list[str] = []
        gate = asyncio.Event()

        async def fetch() -> str:
            calls.append("fetch")
            await gate.wait()
            return "manifest"

        first = asyncio.ensure_future(flights.run("k", fetch))
        second = asyncio.ensure_future(flights.run("k", fetch))
        await asyncio.sleep(0)
        first.cancel()  # the client that started it hangs up
        await asyncio.sleep(0)
        assert len(flights) == 1
        gate.set()
        assert await second == "manifest"
        assert first.cancelled() and calls == ["fetch"] and len(flights) == 0

        async def fail() -> str:
            await asyncio.sleep(0)
            raise ValueError("upstream")

        results = await asyncio.gather(
            flights.run("f", fail), flights.run("f", fail), return_exceptions=True
        )
        assert [type(r) for r in results] == [ValueError, ValueError]
        gate.clear()
        pending = asyncio.ensure_future(flights.run("k", fetch))
        await asyncio.sleep(0)
        await flights.cancel_all()
        assert len(flights) == 0
        with pytest.raises(asyncio.CancelledError):
            await pending

    asyncio.run(scenario())
