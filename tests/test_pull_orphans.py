"""A repository whose cache rule was deleted keeps what it cached (as ACR does): pulled from the
cache only, with ``skopeo`` and plain HTTP, against a real upstream (Debian's
``docker-registry``) that is then stopped; a rule created again resumes pull-through.

Upstream requests are counted from the upstream registry's access log. The lookup of names no
rule covers (:class:`entrepot.proxy.orphans.CachedNames`) is checked on a real content index.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import requests

from entrepot.metadata.content import SqlContentIndex
from entrepot.metadata.records import NewManifest
from entrepot.metadata.resources import SqlResourceStore
from entrepot.proxy.orphans import CachedNames
from tests import images
from tests.conftest import InProcessServer
from tests.metadata_support import add_registry, opened, store_url
from tests.registries import Registry, require_tools
from tests.test_pull_cache import pull, sha256, start, upstream_requests, wait_for_log
from tests.test_registry_face import assert_oci_error
from tests.test_registry_routes import delete_rule, put_rule

Factory = Callable[..., InProcessServer]
RULE = "upstream-lib"


def get(server: InProcessServer, path: str, method: str = "GET", **kw: object) -> requests.Response:
    return requests.request(method, f"{server.url}/v2/{path}", timeout=30, **kw)  # type: ignore[arg-type]


def assert_gone(answer: requests.Response, code: str) -> None:
    """A 404 ``code`` whose message says the rule is gone and nothing is fetched."""
    assert_oci_error(answer, 404, code)
    message = answer.json()["errors"][0]["message"]
    assert "up/kept" in message and "rule is gone" in message, message
    assert "nothing is fetched from upstream" in message, message


@pytest.mark.slow
def test_a_deleted_rules_repository_is_served_from_the_cache_only(
    server_factory: Factory, open_registry: Registry, tmp_path: Path
) -> None:
    require_tools("skopeo")
    subject = images.image(open_registry, "lib/kept", "v1", layers=2)
    sbom = images.artifact(open_registry, "lib/kept", subject, "application/vnd.example.sbom")
    multi = images.oci_index(open_registry, "lib/kept", "multi")
    uncached = images.image(open_registry, "lib/kept", "v2")
    server = start(server_factory, open_registry, ttl=1)  # cached tags soon stale

    # filled through the rule: an image, a multi-arch index (both children), the referrers
    first = tmp_path / "first"
    pull(server, "up/kept:v1", first, tmp_path)
    assert (first / "manifest.json").read_bytes() == subject.data
    for child in multi.children:
        assert get(server, f"up/kept/manifests/{child.digest}").status_code == 200
    assert get(server, "up/kept/manifests/multi").content == multi.data
    referrers = get(server, f"up/kept/referrers/{subject.digest}")
    assert referrers.status_code == 200, referrers.text
    assert [m["digest"] for m in referrers.json()["manifests"]] == [sbom.digest]
    assert get(server, f"up/kept/manifests/{sbom.digest}").status_code == 200

    delete_rule(server, RULE)
    before = open_registry.log()
    time.sleep(1.1)  # older than the tag TTL: a rule would revalidate them upstream

    # by tag, as last cached, from the cache
    by_tag = get(server, "up/kept/manifests/v1")
    assert by_tag.status_code == 200, by_tag.text
    assert by_tag.content == subject.data
    assert by_tag.headers["Docker-Content-Digest"] == subject.digest
    assert by_tag.headers["Content-Type"] == images.OCI_MANIFEST
    assert by_tag.headers["X-Entrepot-Cache"] == "hit"
    head = get(server, "up/kept/manifests/multi", "HEAD")
    assert head.status_code == 200 and head.headers["Docker-Content-Digest"] == multi.digest
    assert head.headers["X-Entrepot-Cache"] == "hit"
    # by digest; the children of the index
    for pushed in (subject, multi, *multi.children, sbom):
        answer = get(server, f"up/kept/manifests/{pushed.digest}")
        assert answer.status_code == 200 and answer.content == pushed.data
        assert answer.headers["X-Entrepot-Cache"] == "hit"
    # blobs, whole, HEAD and a range
    for digest, data in subject.blobs.items():
        blob = get(server, f"up/kept/blobs/{digest}")
        assert blob.status_code == 200 and blob.content == data
        assert blob.headers["X-Entrepot-Cache"] == "hit"
        stat = get(server, f"up/kept/blobs/{digest}", "HEAD")
        assert stat.status_code == 200 and stat.headers["Content-Length"] == str(len(data))
    digest, data = next(iter(subject.blobs.items()))
    part = get(server, f"up/kept/blobs/{digest}", headers={"Range": "bytes=1-4"})
    assert part.status_code == 206 and part.content == data[1:5]
    # tags/list and referrers as cached
    tags = get(server, "up/kept/tags/list")
    assert tags.status_code == 200
    assert tags.json() == {
        "name": "up/kept",
        "tags": sorted(["multi", "v1", images.referrers_tag(subject.digest)]),
    }
    again = get(server, f"up/kept/referrers/{subject.digest}")
    assert again.status_code == 200 and again.content == referrers.content
    assert again.headers["X-Entrepot-Cache"] == "hit"
    filtered = get(
        server,
        f"up/kept/referrers/{subject.digest}",
        params={"artifactType": "application/vnd.example.sig"},
    )
    assert filtered.status_code == 200 and filtered.json()["manifests"] == []
    # the catalog still lists it
    assert "up/kept" in get(server, "_catalog").json()["repositories"]

    # what is not cached: a clear 404, and no upstream request (a rule would fetch all these)
    assert_gone(get(server, "up/kept/manifests/v2"), "MANIFEST_UNKNOWN")
    assert_gone(get(server, f"up/kept/manifests/{uncached.digest}"), "MANIFEST_UNKNOWN")
    assert get(server, f"up/kept/manifests/{uncached.digest}", "HEAD").status_code == 404
    layer = next(d for d in uncached.blobs if d not in subject.blobs)
    assert_gone(get(server, f"up/kept/blobs/{layer}"), "BLOB_UNKNOWN")
    assert get(server, f"up/kept/blobs/{layer}", "HEAD").status_code == 404
    assert_gone(get(server, f"up/kept/referrers/{multi.digest}"), "MANIFEST_UNKNOWN")
    time.sleep(0.3)  # the upstream logs a request after answering it
    assert open_registry.log() == before  # nothing was asked upstream

    # pushes: no rule, so not DENIED: UNSUPPORTED
    assert_oci_error(get(server, "up/kept/blobs/uploads/", "POST"), 405, "UNSUPPORTED")
    put = get(
        server,
        "up/kept/manifests/v9",
        "PUT",
        data=subject.data,
        headers={"Content-Type": images.OCI_MANIFEST},
    )
    assert_oci_error(put, 405, "UNSUPPORTED")
    # a name that never held content, and mirror mode (which maps sources through rules)
    assert_oci_error(get(server, "up/never/manifests/v1"), 404, "NAME_UNKNOWN")
    mirror = get(server, "kept/manifests/v1", params={"ns": open_registry.login_server})
    assert_oci_error(mirror, 404, "NAME_UNKNOWN")

    # the upstream stopped too, the server restarted (nothing in memory): skopeo still pulls
    # what was cached, exact digests, from the index and the store
    open_registry.stop()
    server.restart()
    cold = get(server, "up/kept/manifests/v1")
    assert cold.content == subject.data and cold.headers["X-Entrepot-Cache"] == "hit"
    assert_gone(get(server, "up/kept/manifests/v2"), "MANIFEST_UNKNOWN")
    second = tmp_path / "second"
    pull(server, "up/kept:v1", second, tmp_path)
    assert (second / "manifest.json").read_bytes() == subject.data
    for digest in subject.blobs:
        assert sha256((second / digest.removeprefix("sha256:")).read_bytes()) == digest
    inspected = json.loads((second / "manifest.json").read_bytes())
    assert sha256((second / "manifest.json").read_bytes()) == subject.digest
    assert len(inspected["layers"]) == 2

    # a rule created again over it: pull-through resumes and reuses the cache
    open_registry.start()
    newer = images.image(open_registry, "lib/kept", "v3")
    put_rule(server, RULE, f"{open_registry.login_server}/lib/*", "up/*")
    third = tmp_path / "third"
    pull(server, "up/kept:v3", third, tmp_path)
    assert (third / "manifest.json").read_bytes() == newer.data
    assert wait_for_log(open_registry, "GET", "/v2/lib/kept/manifests/v3", 1) == 1
    fourth = tmp_path / "fourth"
    pull(server, "up/kept:v1", fourth, tmp_path)  # revalidated (HEAD), blobs from the cache
    assert (fourth / "manifest.json").read_bytes() == subject.data
    assert wait_for_log(open_registry, "HEAD", "/v2/lib/kept/manifests/v1", 1) == 1
    for digest in subject.blobs:
        assert upstream_requests(open_registry, "GET", f"/v2/lib/kept/blobs/{digest}") == 1
    moved = get(server, "up/kept/manifests/v2")  # uncached: fetched again
    assert moved.status_code == 200 and moved.headers["X-Entrepot-Cache"] == "miss"
    assert moved.content == uncached.data
    assert_oci_error(get(server, "up/kept/blobs/uploads/", "POST"), 403, "DENIED")


def test_a_repository_that_never_held_content_stays_unknown(
    server_factory: Factory, open_registry: Registry
) -> None:
    """A rule that only looked (nothing upstream) leaves nothing to serve: ``NAME_UNKNOWN``
    once it is deleted, and a tag list of another repository is not reachable by a wrong
    name."""
    server = start(server_factory, open_registry)
    looked = get(server, "up/missing/manifests/v1")
    assert_oci_error(looked, 404, "MANIFEST_UNKNOWN")  # asked upstream through the rule
    delete_rule(server, RULE)
    for path in (
        "up/missing/manifests/v1",
        "up/missing/tags/list",
        "up/missing/blobs/" + "sha256:" + "0" * 64,
    ):
        answer = get(server, path)
        assert_oci_error(answer, 404, "NAME_UNKNOWN")
        assert "No cache rule" in answer.json()["errors"][0]["message"]


# -- the lookup of names no rule covers ------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def index(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[SqlContentIndex, int]]:
    async with opened(store_url(database_url, tmp_path)) as db:
        registry = await add_registry(SqlResourceStore(db))
        yield SqlContentIndex(db), registry


async def add_manifest(index: SqlContentIndex, registry: int, name: str) -> int:
    repo = await index.ensure_repository(registry, name)
    await index.put_manifest(
        NewManifest(
            repository_id=repo.id,
            digest="sha256:" + "1" * 64,
            media_type=images.OCI_MANIFEST,
            size=10,
            artifact_type=None,
            subject=None,
            references=(),
            now=dt.datetime.now(dt.UTC),
        )
    )
    return repo.id


async def test_names_are_looked_up_once_per_ttl(
    index: tuple[SqlContentIndex, int],
) -> None:
    content, registry = index
    clock = Clock()
    names = CachedNames(content, ttl=5.0, capacity=2, clock=clock)
    await content.ensure_repository(registry, "empty")  # a row without a manifest: not held
    held = await add_manifest(content, registry, "held")

    assert await names.find(registry, "wrong") is None
    assert await names.find(registry, "empty") is None
    assert await names.find(registry, "held") == held
    assert names.reads == 3
    for _ in range(100):  # a wrong name asked again and again: no read within the TTL
        assert await names.find(registry, "held") == held
        assert await names.find(registry, "empty") is None
    assert names.reads == 3
    assert len(names) == 2  # bounded: "wrong" was dropped first
    assert await names.find(registry, "wrong") is None
    assert names.reads == 4

    clock.now += 5.0  # the TTL is over: read again, once for concurrent lookups
    found = await asyncio.gather(*(names.find(registry, "held") for _ in range(20)))
    assert found == [held] * 20 and names.reads == 5

    # content cached here: the name is found at once, not after the TTL
    assert await names.find(registry, "later") is None
    later = await add_manifest(content, registry, "later")
    assert await names.find(registry, "later") is None  # still the remembered answer
    names.forget(registry, "later")
    assert await names.find(registry, "later") == later
    assert await names.find(registry + 1, "held") is None  # another registry's repository
    await names.close()
