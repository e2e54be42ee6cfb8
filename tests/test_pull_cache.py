"""The pull-through cache against a real upstream (Debian's ``docker-registry``), pulled with
``skopeo`` and plain HTTP through a real entrepot server.

Upstream requests are counted from the upstream registry's access log.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import InProcessServer, ServerProcess
from tests.registries import Registry, push_test_image, require_tools
from tests.test_registry_face import assert_oci_error
from tests.test_registry_routes import put_rule, skopeo

Factory = Callable[..., InProcessServer]


def start(server_factory: Factory, upstream: Registry, ttl: float = 300) -> InProcessServer:
    """A server whose rule ``up`` maps ``up/*`` to ``<upstream>/lib/*``."""
    extra = (
        f'\n[upstreams."{upstream.login_server}"]\nurl = "{upstream.url}"\n'
        f"\n[cache]\ntag_ttl_seconds = {ttl}\n"
    )
    server = server_factory(extra)
    put_rule(server, "upstream-lib", f"{upstream.login_server}/lib/*", "up/*")
    return server


def upstream_requests(upstream: Registry, method: str, path: str) -> int:
    """How many ``method path`` requests the upstream's access log shows (any status)."""
    pattern = re.compile(rf'"{method} {re.escape(path)} HTTP/1\.1"')
    return len(pattern.findall(upstream.log()))


def wait_for_log(upstream: Registry, method: str, path: str, count: int) -> int:
    """The count once it reaches ``count`` (the access log is written after the answer)."""
    deadline = time.monotonic() + 5
    while (found := upstream_requests(upstream, method, path)) < count:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return found


def pull(server: InProcessServer, image: str, into: Path, home: Path) -> None:
    done = skopeo(
        "--insecure-policy", "copy", "--src-tls-verify=false", "--src-no-creds",
        f"docker://127.0.0.1:{server.port}/{image}", f"dir:{into}", home=home,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + server.log()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_pull_fills_the_cache_and_the_next_pull_stays_local(
    server_factory: Factory, open_registry: Registry, tmp_path: Path
) -> None:
    require_tools("skopeo")
    digest = push_test_image(open_registry, "lib/hello", "v1")
    image = open_registry.images[("lib/hello", "v1")]
    server = start(server_factory, open_registry)

    first = tmp_path / "first"
    pull(server, "up/hello:v1", first, tmp_path)
    assert (first / "manifest.json").read_bytes() == image.manifest  # exact bytes
    for blob in (image.config_digest, image.layer_digest):
        assert sha256((first / blob.removeprefix("sha256:")).read_bytes()) == blob
        assert wait_for_log(open_registry, "GET", f"/v2/lib/hello/blobs/{blob}", 1) == 1
    tag_path = "/v2/lib/hello/manifests/v1"
    gets = wait_for_log(open_registry, "GET", tag_path, 1)
    assert gets == 1

    second = tmp_path / "second"
    pull(server, "up/hello:v1", second, tmp_path)
    assert (second / "manifest.json").read_bytes() == image.manifest
    time.sleep(0.3)
    assert upstream_requests(open_registry, "GET", tag_path) == gets
    assert upstream_requests(open_registry, "HEAD", tag_path) == 0  # the tag is fresh
    for blob in (image.config_digest, image.layer_digest):
        assert upstream_requests(open_registry, "GET", f"/v2/lib/hello/blobs/{blob}") == 1

    # by digest: from the cache, exact bytes, the headers say so
    answer = requests.get(f"{server.url}/v2/up/hello/manifests/{digest}", timeout=30)
    assert answer.status_code == 200 and answer.content == image.manifest
    assert answer.headers["X-Entrepot-Cache"] == "hit"
    assert answer.headers["Docker-Content-Digest"] == digest
    assert answer.headers["Content-Type"] == "application/vnd.oci.image.manifest.v1+json"
    assert upstream_requests(open_registry, "GET", f"/v2/lib/hello/manifests/{digest}") == 0
    blob = requests.get(f"{server.url}/v2/up/hello/blobs/{image.layer_digest}", timeout=30)
    assert blob.content == image.blobs[image.layer_digest]
    assert blob.headers["X-Entrepot-Cache"] == "hit"
    tags = requests.get(f"{server.url}/v2/up/hello/tags/list", timeout=30)
    assert tags.json() == {"name": "up/hello", "tags": ["v1"]}


def test_pull_by_digest_and_unknown_content(
    server_factory: Factory, open_registry: Registry
) -> None:
    digest = push_test_image(open_registry, "lib/bydigest", "v1")
    image = open_registry.images[("lib/bydigest", "v1")]
    server = start(server_factory, open_registry)
    url = f"{server.url}/v2/up/bydigest"
    first = requests.get(f"{url}/manifests/{digest}", timeout=30)
    assert first.status_code == 200, first.text
    assert first.content == image.manifest
    assert first.headers["X-Entrepot-Cache"] == "miss"
    second = requests.get(f"{url}/manifests/{digest}", timeout=30)
    assert second.content == image.manifest and second.headers["X-Entrepot-Cache"] == "hit"
    path = f"/v2/lib/bydigest/manifests/{digest}"
    assert wait_for_log(open_registry, "GET", path, 1) == 1
    # a blob: HEAD asks upstream without storing, GET fills, then hits
    layer = image.layer_digest
    head = requests.head(f"{url}/blobs/{layer}", timeout=30)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(image.blobs[layer]))
    got = requests.get(f"{url}/blobs/{layer}", timeout=30)
    assert got.content == image.blobs[layer] and got.headers["X-Entrepot-Cache"] == "miss"
    again = requests.get(f"{url}/blobs/{layer}", timeout=30)
    assert again.content == image.blobs[layer] and again.headers["X-Entrepot-Cache"] == "hit"
    # what the upstream does not have
    missing = "sha256:" + "0" * 64
    error = assert_oci_error(
        requests.get(f"{url}/manifests/{missing}", timeout=30), 404, "MANIFEST_UNKNOWN"
    )
    assert "'upstream-lib'" in error["message"]
    assert_oci_error(requests.get(f"{url}/blobs/{missing}", timeout=30), 404, "BLOB_UNKNOWN")
    assert_oci_error(requests.get(f"{url}/manifests/nope", timeout=30), 404, "MANIFEST_UNKNOWN")


def test_a_stale_tag_is_served_when_the_upstream_is_down(
    server_factory: Factory, open_registry: Registry
) -> None:
    digest = push_test_image(open_registry, "lib/stale", "v1")
    push_test_image(open_registry, "lib/stale", "v2")
    server = start(server_factory, open_registry, ttl=0)
    url = f"{server.url}/v2/up/stale/manifests"
    first = requests.get(f"{url}/v1", timeout=30)
    assert first.status_code == 200 and first.headers["X-Entrepot-Cache"] == "miss"
    revalidated = requests.get(f"{url}/v1", timeout=30)  # TTL 0: a HEAD, no GET
    assert revalidated.status_code == 200 and revalidated.headers["X-Entrepot-Cache"] == "miss"
    assert wait_for_log(open_registry, "HEAD", "/v2/lib/stale/manifests/v1", 1) == 1
    assert upstream_requests(open_registry, "GET", "/v2/lib/stale/manifests/v1") == 1

    open_registry.stop()
    stale = requests.get(f"{url}/v1", timeout=60)
    assert stale.status_code == 200, stale.text
    assert stale.headers["X-Entrepot-Cache"] == "stale"
    assert stale.headers["Docker-Content-Digest"] == digest
    assert stale.content == open_registry.images[("lib/stale", "v1")].manifest
    assert "stale" in server.log()
    error = assert_oci_error(requests.get(f"{url}/v2", timeout=60), 502, "UNAVAILABLE")
    assert "cache rule 'upstream-lib'" in error["message"]
    by_digest = requests.get(f"{url}/{digest}", timeout=60)  # cached digests never go upstream
    assert by_digest.status_code == 200 and by_digest.headers["X-Entrepot-Cache"] == "hit"


def test_concurrent_cold_gets_of_a_blob_fetch_it_once(
    server_factory: Factory, open_registry: Registry
) -> None:
    content = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(64 * 1024))
    push_test_image(open_registry, "lib/big", "v1", content=content)  # a 2 MiB layer
    image = open_registry.images[("lib/big", "v1")]
    layer = image.layer_digest
    server = start(server_factory, open_registry)
    url = f"{server.url}/v2/up/big/blobs/{layer}"

    def get(_: int) -> tuple[int, bytes, str]:
        answer = requests.get(url, timeout=60)
        return answer.status_code, answer.content, answer.headers.get("X-Entrepot-Cache", "")

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(get, range(10)))
    assert all(status == 200 for status, _, _ in results), results
    assert all(body == image.blobs[layer] for _, body, _ in results)
    path = f"/v2/lib/big/blobs/{layer}"
    time.sleep(0.3)
    assert wait_for_log(open_registry, "GET", path, 1) == 1
    assert {origin for _, _, origin in results} <= {"miss", "hit"}
    assert json.loads(image.manifest)["layers"][0]["digest"] == layer


def test_a_rule_with_a_credential_set_pulls_with_its_credentials(
    server_factory: Factory, basic_registry: Registry
) -> None:
    """The set's secrets are read as its principal; an upstream 401 is ``UNAUTHORIZED`` naming
    the rule, and has the set's health measured again."""
    from tests.test_credential_health import (
        UNHEALTHY,
        Api,
        assert_healthy,
        create,
        get,
        health,
        kv,
        upstreams,
        validate,
        wait_for,
    )

    digest = push_test_image(basic_registry, "lib/private", "v1")
    push_test_image(basic_registry, "lib/private", "v2")
    image = basic_registry.images[("lib/private", "v1")]
    server = server_factory(upstreams(basic_registry.login_server))
    api = Api(server)
    api.vault("pullvault")
    api.secret("pullvault", "user", basic_registry.username)
    api.secret("pullvault", "pass", basic_registry.password)
    with server.client() as client:
        created = create(
            client, "private-creds", basic_registry.login_server,
            kv("pullvault", "user"), kv("pullvault", "pass"),
        )  # fmt: skip
        api.grant("pullvault", created.identity.principal_id)
        set_id = f"{server.registry_path}/credentialSets/private-creds"
        response = requests.put(
            f"{server.url}{server.registry_path}/cacheRules/private-rule",
            params={"api-version": "2025-04-01"},
            json={
                "properties": {
                    "sourceRepository": f"{basic_registry.login_server}/lib/*",
                    "targetRepository": "priv/*",
                    "credentialSetResourceId": set_id,
                }
            },
            headers=server.headers(),
            timeout=30,
        )
        assert response.status_code in (200, 201), response.text
        url = f"{server.url}/v2/priv/private/manifests"
        pulled = requests.get(f"{url}/v1", timeout=30)
        assert pulled.status_code == 200, pulled.text
        assert pulled.content == image.manifest and pulled.headers["X-Entrepot-Cache"] == "miss"
        blob = requests.get(f"{server.url}/v2/priv/private/blobs/{image.layer_digest}", timeout=30)
        assert blob.content == image.blobs[image.layer_digest]
        assert_healthy(validate(client, "private-creds"))  # granted after the create

        basic_registry.set_password("rotated-" + basic_registry.password)
        refused = requests.get(f"{url}/v2", timeout=30)
        error = assert_oci_error(refused, 401, "UNAUTHORIZED")
        assert "private-rule" in error["message"]
        assert basic_registry.password not in refused.text
        wait_for(
            lambda: health(get(client, "private-creds"))[0] == UNHEALTHY,
            10,
            "the health re-measured after the upstream 401",
        )
        cached = requests.get(f"{url}/{digest}", timeout=30)  # cached content needs no upstream
        assert cached.status_code == 200 and cached.headers["X-Entrepot-Cache"] == "hit"


def two_processes(
    process_factory: Callable[..., ServerProcess],
    database_url: str,
    upstream: Registry,
    tmp_path: Path,
    repository: str,
) -> tuple[ServerProcess, ServerProcess]:
    """Two ``entrepot serve`` processes sharing the database ``database_url`` and one content
    store, with the rule ``up/*`` -> ``<upstream>/lib/*``, once both serve ``up/<repository>``
    (the second revalidates its rules within a second)."""
    shared = {
        "ENTREPOT_DATABASE_URL": database_url,
        "ENTREPOT_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
    }
    extra = (
        f'\n[upstreams."{upstream.login_server}"]\nurl = "{upstream.url}"\n'
        f'\n[storage]\nroot = "{tmp_path / "shared-content"}"\n'
    )
    a = process_factory(extra, env=shared, name="a")
    b = process_factory(extra, env=shared, name="b")
    put_rule(a, "upstream-lib", f"{upstream.login_server}/lib/*", "up/*")
    for server in (a, b):
        deadline = time.monotonic() + 10
        url = f"{server.url}/v2/up/{repository}/tags/list"
        while requests.get(url, timeout=30).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    return a, b


@pytest.mark.slow
def test_two_processes_fetch_a_blob_once(
    process_factory: Callable[..., ServerProcess],
    database_url: str,
    open_registry: Registry,
    tmp_path: Path,
) -> None:
    """Two ``entrepot serve`` processes sharing the database and the content store: concurrent
    cold GETs on both make one upstream GET (the lease ``blob:<digest>``)."""
    content = b"".join(hashlib.sha256(b"x%d" % i).digest() for i in range(64 * 1024))
    push_test_image(open_registry, "lib/shared", "v1", content=content)
    image = open_registry.images[("lib/shared", "v1")]
    layer = image.layer_digest
    a, b = two_processes(process_factory, database_url, open_registry, tmp_path, "shared")

    def get(i: int) -> tuple[int, bytes]:
        server = (a, b)[i % 2]
        answer = requests.get(f"{server.url}/v2/up/shared/blobs/{layer}", timeout=60)
        return answer.status_code, answer.content

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(get, range(10)))
    assert all(status == 200 for status, _ in results), [s for s, _ in results]
    assert all(body == image.blobs[layer] for _, body in results)
    time.sleep(0.3)
    assert wait_for_log(open_registry, "GET", f"/v2/lib/shared/blobs/{layer}", 1) == 1


@pytest.mark.slow
def test_twenty_cold_image_pulls_over_two_processes_fetch_each_blob_once(
    process_factory: Callable[..., ServerProcess],
    database_url: str,
    open_registry: Registry,
    tmp_path: Path,
) -> None:
    """20 concurrent ``skopeo copy`` of one cold image, spread over two ``entrepot serve``
    processes sharing the database and the content store: every client gets the upstream's
    exact manifest and blobs, and the upstream serves each blob exactly once."""
    require_tools("skopeo")
    content = os.urandom(4 * 1024 * 1024)
    push_test_image(open_registry, "lib/crowd", "v1", content=content)
    image = open_registry.images[("lib/crowd", "v1")]
    a, b = two_processes(process_factory, database_url, open_registry, tmp_path, "crowd")

    def pull_one(i: int) -> Path:
        into = tmp_path / f"pull-{i}"
        done = skopeo(
            "--insecure-policy", "copy", "--src-tls-verify=false", "--src-no-creds",
            f"docker://127.0.0.1:{(a, b)[i % 2].port}/up/crowd:v1", f"dir:{into}",
            home=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr + a.log() + b.log()
        return into

    with ThreadPoolExecutor(20) as pool:
        pulled = list(pool.map(pull_one, range(20)))
    for into in pulled:
        assert (into / "manifest.json").read_bytes() == image.manifest
        for blob in (image.config_digest, image.layer_digest):
            assert (into / blob.split(":", 1)[1]).read_bytes() == image.blobs[blob]
    time.sleep(0.3)
    for blob in (image.config_digest, image.layer_digest):
        assert wait_for_log(open_registry, "GET", f"/v2/lib/crowd/blobs/{blob}", 1) == 1, blob


def test_blob_ranges(server_factory: Factory, open_registry: Registry) -> None:
    """A single ``Range`` is 206 with the right bytes, also of a blob not cached yet (filled
    whole with one upstream GET); an unsatisfiable one is 416; several ranges are the whole
    blob with 200; ``HEAD`` says ``Accept-Ranges: bytes``."""
    content = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(400))
    push_test_image(open_registry, "lib/ranged", "v1", content=content)
    image = open_registry.images[("lib/ranged", "v1")]
    layer = image.layer_digest
    data = image.blobs[layer]
    size = len(data)
    server = start(server_factory, open_registry)
    url = f"{server.url}/v2/up/ranged/blobs/{layer}"

    def ranged(header: str) -> requests.Response:
        return requests.get(url, headers={"Range": header}, timeout=30)

    def assert_partial(answer: requests.Response, start: int, end: int, origin: str) -> None:
        assert answer.status_code == 206, answer.text
        assert answer.content == data[start : end + 1]
        assert answer.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
        assert answer.headers["Content-Length"] == str(end - start + 1)
        assert answer.headers["Accept-Ranges"] == "bytes"
        assert answer.headers["Docker-Content-Digest"] == layer
        assert answer.headers["X-Entrepot-Cache"] == origin

    cold = ranged("bytes=100-199")  # not cached: filled whole, then the range from the store
    assert_partial(cold, 100, 199, "miss")
    path = f"/v2/lib/ranged/blobs/{layer}"
    assert_partial(ranged("bytes=0-9"), 0, 9, "hit")
    assert_partial(ranged("bytes=5000-5999"), 5000, 5999, "hit")
    assert_partial(ranged("bytes=-16"), size - 16, size - 1, "hit")
    assert_partial(ranged("bytes=-99999"), 0, size - 1, "hit")
    assert size > 10_000
    assert_partial(ranged(f"bytes={size - 300}-"), size - 300, size - 1, "hit")
    assert_partial(ranged(f"bytes={size - 1}-{size + 50}"), size - 1, size - 1, "hit")
    for header in (f"bytes={size}-", "bytes=9-3", "bytes=-0", "bytes=x-1", "lines=0-1"):
        refused = ranged(header)
        assert refused.status_code == 416, (header, refused.status_code)
        assert refused.headers["Content-Range"] == f"bytes */{size}"
        assert refused.content == b""
    several = ranged("bytes=0-1,5-6")
    assert several.status_code == 200 and several.content == data
    assert "Content-Range" not in several.headers
    whole = requests.get(url, timeout=30)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["Accept-Ranges"] == "bytes"
    head = requests.head(url, timeout=30)
    assert head.status_code == 200 and head.headers["Accept-Ranges"] == "bytes"
    assert head.headers["Content-Length"] == str(size)
    time.sleep(0.3)
    assert wait_for_log(open_registry, "GET", path, 1) == 1
    assert upstream_requests(open_registry, "GET", path) == 1
    # an unknown blob with a Range is still 404
    missing = "sha256:" + "0" * 64
    assert_oci_error(
        requests.get(
            f"{server.url}/v2/up/ranged/blobs/{missing}", headers={"Range": "bytes=0-1"},
            timeout=30,
        ),
        404, "BLOB_UNKNOWN",
    )  # fmt: skip


def test_a_cold_blob_with_concurrent_ranges_is_fetched_once(
    server_factory: Factory, open_registry: Registry
) -> None:
    content = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(64 * 1024))
    push_test_image(open_registry, "lib/bigrange", "v1", content=content)  # a 2 MiB layer
    image = open_registry.images[("lib/bigrange", "v1")]
    layer = image.layer_digest
    data = image.blobs[layer]
    server = start(server_factory, open_registry)
    url = f"{server.url}/v2/up/bigrange/blobs/{layer}"

    def get(i: int) -> tuple[int, bytes, bytes]:
        start = i * 100_000
        answer = requests.get(url, headers={"Range": f"bytes={start}-{start + 999}"}, timeout=60)
        return answer.status_code, answer.content, data[start : start + 1000]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(get, range(8)))
    assert all(status == 206 for status, _, _ in results), results
    assert all(body == expected for _, body, expected in results)
    time.sleep(0.3)
    path = f"/v2/lib/bigrange/blobs/{layer}"
    assert wait_for_log(open_registry, "GET", path, 1) == 1
