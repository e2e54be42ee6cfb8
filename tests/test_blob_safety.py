"""The safety of the blob path: size and free-space limits, a dead fill's lease taken over,
blobs scoped per repository, and shared upstream ``HEAD`` requests.

Upstreams are Debian's ``docker-registry`` (tests/registries.py) except for the size limits:
a real registry never sends an endless body nor announces a petabyte, so those tests use
:class:`Misbehaving`, a small aiohttp upstream of our own on 127.0.0.1 (a fake, by necessity).
"""

from __future__ import annotations

import base64
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from aiohttp import web

from entrepot.config import StorageConfig, load_config
from entrepot.errors import ConfigError
from entrepot.metadata.content import SqlContentIndex
from entrepot.metadata.leases import SqlLeases
from entrepot.metadata.records import BlobRef, NewManifest
from entrepot.metadata.resources import SqlResourceStore
from entrepot.proxy.links import BlobLinks
from entrepot.proxy.owners import is_gone, process_owner, start_time
from entrepot.storage import open_storage
from tests.conftest import InProcessServer, ServerProcess
from tests.metadata_support import NOW, add_registry, opened, store_url
from tests.registries import Registry, ThreadedServer, push_test_image
from tests.test_pull_blobs import (
    Relay,
    fetch,
    ingest_files,
    push_blob,
    start_server,
    stored,
    wait_until,
)
from tests.test_pull_cache import upstream_requests, wait_for_log
from tests.test_registry_face import assert_oci_error
from tests.test_registry_routes import delete_rule, put_rule

MiB = 1024 * 1024
Factory = Callable[..., InProcessServer]


# -- a misbehaving upstream (a fake: see the module doc) ---------------------------------------
class Misbehaving:
    """An upstream whose ``lib/endless`` blobs are an endless body without ``Content-Length``
    and whose ``lib/huge`` blobs announce ``Content-Length: 10**15``; it counts what it sent."""

    def __init__(self) -> None:
        self.sent = 0
        self.gets = 0
        self.lock = threading.Lock()
        app = web.Application()
        app.router.add_get("/v2/", self._ping)
        app.router.add_route("*", "/v2/lib/{name}/blobs/{digest}", self._blob)
        self.server = ThreadedServer(app)

    async def _ping(self, _request: web.Request) -> web.Response:
        return web.json_response({})

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if request.method == "GET":
            with self.lock:
                self.gets += 1
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if name == "huge":
            resp.content_length = 10**15
        else:
            resp.enable_chunked_encoding()
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        chunk = os.urandom(64 * 1024)
        try:
            while True:  # until the client hangs up
                await resp.write(chunk)
                with self.lock:
                    self.sent += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    def config(self, extra: str = "") -> str:
        return f'\n[upstreams."{self.server.host}"]\nurl = "{self.server.url}"\n{extra}'


@pytest.fixture
def misbehaving() -> Iterator[Misbehaving]:
    upstream = Misbehaving()
    upstream.server.start()
    yield upstream
    upstream.server.stop()


DIGEST = "sha256:" + "ab" * 32


def test_an_endless_body_is_cut_at_max_blob_bytes(
    server_factory: Factory, misbehaving: Misbehaving
) -> None:
    server = server_factory(misbehaving.config("\n[cache]\nmax_blob_bytes = 4194304\n"))
    put_rule(server, "bad-upstream", f"{misbehaving.server.host}/lib/*", "bad/*")
    began = time.monotonic()
    answer = requests.get(f"{server.url}/v2/bad/endless/blobs/{DIGEST}", timeout=60)
    error = assert_oci_error(answer, 502, "UNKNOWN")
    assert "max_blob_bytes = 4194304" in error["message"], error
    assert "cache rule 'bad-upstream'" in error["message"], error
    assert time.monotonic() - began < 10
    wait_until(lambda: not ingest_files(server), 10, "the ingest to be cancelled")
    assert not stored(server, DIGEST).exists()
    time.sleep(0.5)
    sent = misbehaving.sent
    assert sent < 4 * MiB + 16 * MiB, sent  # the cap plus what the buffers held, then no more
    time.sleep(0.5)
    assert misbehaving.sent == sent  # the download stopped (it does not outlive the client)
    assert "max_blob_bytes" in server.log() and "WARNING" in server.log()


def test_an_announced_petabyte_is_refused_at_once(
    server_factory: Factory, misbehaving: Misbehaving
) -> None:
    server = server_factory(misbehaving.config())  # the default max_blob_bytes: 32 GiB
    put_rule(server, "bad-upstream", f"{misbehaving.server.host}/lib/*", "bad/*")
    url = f"{server.url}/v2/bad/huge/blobs/{DIGEST}"
    head = requests.head(url, timeout=30)
    assert head.status_code == 502
    assert "Content-Length" not in head.headers or head.headers["Content-Length"] != str(10**15)
    answer = requests.get(url, timeout=30)
    error = assert_oci_error(answer, 502, "UNKNOWN")
    assert f"announced {10**15} bytes" in error["message"], error
    assert f"max_blob_bytes = {32 * 1024**3}" in error["message"], error
    assert misbehaving.gets == 1  # the HEAD was refused without a GET
    time.sleep(0.5)
    sent = misbehaving.sent  # what the socket buffers took before entrepot hung up
    assert sent < 16 * MiB, sent
    time.sleep(0.5)
    assert misbehaving.sent == sent
    assert not ingest_files(server) and not stored(server, DIGEST).exists()


def test_a_blob_above_a_small_limit_from_a_real_registry_is_refused(
    server_factory: Factory, open_registry: Registry
) -> None:
    data = os.urandom(2 * MiB)
    digest = push_blob(open_registry, "lib/two", data)
    extra = (
        f'\n[upstreams."{open_registry.login_server}"]\nurl = "{open_registry.url}"\n'
        "\n[cache]\nmax_blob_bytes = 1048576\n"
    )
    server = server_factory(extra)
    put_rule(server, "upstream-lib", f"{open_registry.login_server}/lib/*", "up/*")
    answer = requests.get(f"{server.url}/v2/up/two/blobs/{digest}", timeout=30)
    error = assert_oci_error(answer, 502, "UNKNOWN")
    assert "max_blob_bytes = 1048576" in error["message"]
    small = os.urandom(100_000)
    small_digest = push_blob(open_registry, "lib/small", small)
    ok = requests.get(f"{server.url}/v2/up/small/blobs/{small_digest}", timeout=30)
    assert ok.status_code == 200 and ok.content == small


def test_a_blob_that_would_eat_the_reserve_is_refused(
    server_factory: Factory, open_registry: Registry
) -> None:
    data = os.urandom(MiB)
    digest = push_blob(open_registry, "lib/one", data)
    free = os.statvfs(open_registry.root).f_bavail * os.statvfs(open_registry.root).f_frsize
    # More than is free now (by far more than other writers on this disk free meanwhile): the
    # blob cannot fit, however the free space moves while the test runs.
    reserve = free + 512 * MiB
    extra = (
        f'\n[upstreams."{open_registry.login_server}"]\nurl = "{open_registry.url}"\n'
        f"\n[cache]\nmin_free_bytes = {reserve}\n"
    )
    server = server_factory(extra)
    put_rule(server, "upstream-lib", f"{open_registry.login_server}/lib/*", "up/*")
    answer = requests.get(f"{server.url}/v2/up/one/blobs/{digest}", timeout=30)
    error = assert_oci_error(answer, 502, "UNKNOWN")
    assert "min_free_bytes" in error["message"] and "does not fit" in error["message"], error
    assert not stored(server, digest).exists()
    assert "does not fit in the cache" in server.log()


async def test_storage_drivers_tell_their_free_space(tmp_path: Path) -> None:
    filesystem = await open_storage(StorageConfig(driver="filesystem"), tmp_path)
    memory = await open_storage(StorageConfig(driver="memory"), tmp_path)
    try:
        free = await filesystem.free_bytes()
        stats = os.statvfs(tmp_path)
        assert free is not None and abs(free - stats.f_bavail * stats.f_frsize) < 64 * MiB
        assert await memory.free_bytes() is None  # cannot tell: not checked
    finally:
        await filesystem.close()
        await memory.close()


def test_limits_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "entrepot.toml"
    for bad in ("max_blob_bytes = 0", "min_free_bytes = -1"):
        path.write_text(f"[cache]\n{bad}\n")
        with pytest.raises(ConfigError, match=f"cache.{bad.split(' ')[0]}"):
            load_config(path, env={})
    path.write_text("[cache]\nmax_blob_bytes = 1048576\nmin_free_bytes = 0\n")
    cache = load_config(path, env={}).cache
    assert (cache.max_blob_bytes, cache.min_free_bytes) == (MiB, 0)
    assert load_config(env={}).cache.max_blob_bytes == 32 * 1024**3


# -- the lease of a dead fill ------------------------------------------------------------------
def test_owners_of_this_host() -> None:
    me = process_owner()
    host, namespace, pid, started, _ = me.split(":")
    assert int(pid) == os.getpid() and int(started) == start_time(os.getpid()) != 0
    assert namespace.endswith(f".{os.stat('/proc/self/ns/pid').st_ino}")
    assert len(me) <= 100
    here = f"{host}:{namespace}"
    assert not is_gone(me)  # this process
    assert is_gone(f"{here}:99999999:1:abc")  # no such pid
    parent = os.getppid()
    assert not is_gone(f"{here}:{parent}:{start_time(parent)}:abc")  # alive
    assert is_gone(f"{here}:{parent}:{(start_time(parent) or 0) + 1}:abc")  # pid reused
    assert not is_gone(f"another-host:{namespace}:99999999:1:abc")  # cannot tell: never gone
    boot = namespace.split(".")[0]
    assert not is_gone(f"{host}:{boot}.1:99999999:1:abc")  # another PID namespace (a container)
    assert not is_gone(f"{host}:0{boot[1:]}.{namespace.split('.')[1]}:99999999:1:abc")  # machine
    assert not is_gone(f"{host}:99999999:abc")  # the older form: never judged
    assert not is_gone("not an owner")


@pytest.fixture
async def leases(database_url: str, tmp_path: Path) -> AsyncIterator[SqlLeases]:
    async with opened(store_url(database_url, tmp_path)) as db:
        yield SqlLeases(db)


async def test_take_over_a_lease_from_its_holder(leases: SqlLeases) -> None:
    assert await leases.acquire("blob:x", "dead", 600)
    assert not await leases.take_over("blob:x", "b", "someone-else", 60)  # not the holder
    results = [await leases.take_over("blob:x", c, "dead", 60) for c in ("b", "c")]
    assert results == [True, False]  # one caller takes it over, the next finds "b"
    held = await leases.holder("blob:x")
    assert held is not None and held.owner == "b"
    assert not await leases.take_over("free", "b", "dead", 60)  # nobody holds it
    assert await leases.holder("free") is None


@pytest.mark.slow
def test_a_fill_killed_with_its_process_is_taken_over_at_once(
    process_factory: Callable[..., ServerProcess], open_registry: Registry
) -> None:
    """The lease (60 s) of the killed process is taken over by the restarted one at once."""
    data = os.urandom(24 * MiB)
    digest = push_blob(open_registry, "lib/crash", data)
    env = {"ENTREPOT_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}
    with Relay(open_registry.port, rate=8 * MiB) as relay:
        server = start_server(
            process_factory, open_registry, relay, "\n[cache]\nfill_lease_seconds = 60\n", env
        )
        assert isinstance(server, ServerProcess)
        url = f"{server.url}/v2/up/crash/blobs/{digest}"
        got = fetch(url, after=2 * MiB, then=lambda: server.stop(kill=True))
        assert not got.complete
        relay.rate = None
        server.start()
        again = fetch(url)
    assert again.complete and again.sha256 == digest and again.origin == "miss"
    assert again.first < 5, again  # not the 60 s of the dead process's lease
    assert stored(server, digest).read_bytes() == data
    assert wait_for_log(open_registry, "GET", f"/v2/lib/crash/blobs/{digest}", 2) == 2
    assert "a process of this host that is gone" in server.log()


async def test_blob_links_in_the_index_and_in_memory(database_url: str, tmp_path: Path) -> None:
    """A blob is linked to a repository by a manifest of it or by ``link_blob``; the links of
    hot repositories are answered from memory (no read), bounded."""
    async with opened(store_url(database_url, tmp_path)) as db:
        index = SqlContentIndex(db)
        reg = await add_registry(SqlResourceStore(db))
        one = (await index.ensure_repository(reg, "one")).id
        two = (await index.ensure_repository(reg, "two")).id
        layer, fetched, manifest = ("sha256:" + c * 64 for c in "abc")
        await index.put_manifest(
            NewManifest(
                one,
                manifest,
                "application/vnd.oci.image.manifest.v1+json",
                10,
                None,
                None,
                (BlobRef(layer, 5, None),),
                NOW,
            )
        )
        assert await index.blob_linked(one, layer)  # by the manifest
        assert not await index.blob_linked(two, layer)  # another repository
        assert not await index.blob_linked(one, fetched)
        await index.link_blob(two, fetched)
        await index.link_blob(two, fetched)  # idempotent
        assert await index.blob_linked(two, fetched) and not await index.blob_linked(one, fetched)

        links = BlobLinks(index, capacity=2)
        assert await links.linked(one, layer) and links.reads == 1
        assert await links.linked(one, layer) and links.reads == 1  # from memory
        assert not await links.linked(two, layer) and links.reads == 2  # misses are read
        await links.link(two, layer)
        assert await links.linked(two, layer) and links.reads == 2
        assert await index.blob_linked(two, layer)  # written through
        assert await links.linked(two, fetched) and links.reads == 3
        assert len(links) == 2  # bounded: the least recently used went
        assert await links.linked(one, layer) and links.reads == 4


# -- blobs scoped per repository ---------------------------------------------------------------
def two_rules(server_factory: Factory, a: Registry, b: Registry) -> InProcessServer:
    extra = "".join(f'\n[upstreams."{r.login_server}"]\nurl = "{r.url}"\n' for r in (a, b))
    server = server_factory(extra)
    put_rule(server, "rule-a", f"{a.login_server}/lib/*", "a/*")
    put_rule(server, "rule-b", f"{b.login_server}/lib/*", "b/*")
    return server


def test_a_blob_cached_through_one_rule_is_served_through_another_only_if_its_upstream_has_it(
    server_factory: Factory, registry_factory: Callable[..., Registry]
) -> None:
    a, b = registry_factory("open"), registry_factory("open")
    data = os.urandom(300_000)
    digest = push_blob(a, "lib/x", data)
    server = two_rules(server_factory, a, b)
    through_a = requests.get(f"{server.url}/v2/a/x/blobs/{digest}", timeout=30)
    assert through_a.status_code == 200 and through_a.content == data
    assert stored(server, digest).exists()

    b_path = f"/v2/lib/x/blobs/{digest}"
    for method in ("GET", "HEAD"):
        answer = requests.request(method, f"{server.url}/v2/b/x/blobs/{digest}", timeout=30)
        assert answer.status_code == 404, (method, answer.status_code)
        if method == "GET":
            assert_oci_error(answer, 404, "BLOB_UNKNOWN")
    assert upstream_requests(b, "GET", b_path) == 0  # asked, never downloaded
    assert wait_for_log(b, "HEAD", b_path, 2) == 2  # one per request: the upstream said 404

    push_blob(b, "lib/x", data)  # now b's upstream has it too
    time.sleep(0.3)
    heads = upstream_requests(b, "HEAD", b_path)
    through_b = requests.get(f"{server.url}/v2/b/x/blobs/{digest}", timeout=30)
    assert through_b.status_code == 200 and through_b.content == data
    assert through_b.headers["X-Entrepot-Cache"] == "miss"  # confirmed upstream, from the store
    assert wait_for_log(b, "HEAD", b_path, heads + 1) >= heads + 1
    warm = requests.get(f"{server.url}/v2/b/x/blobs/{digest}", timeout=30)
    assert warm.status_code == 200 and warm.headers["X-Entrepot-Cache"] == "hit"
    head = requests.head(f"{server.url}/v2/b/x/blobs/{digest}", timeout=30)
    assert head.status_code == 200 and head.headers["X-Entrepot-Cache"] == "hit"
    time.sleep(0.3)
    assert upstream_requests(b, "GET", b_path) == 0  # never downloaded through b
    assert upstream_requests(b, "HEAD", b_path) == heads + 1  # the warm requests asked nothing


def test_a_cache_only_repository_serves_only_its_own_blobs(
    server_factory: Factory, registry_factory: Callable[..., Registry]
) -> None:
    a, b = registry_factory("open"), registry_factory("open")
    push_test_image(a, "lib/img", "v1", content=b"only in a\n")
    push_test_image(b, "lib/img", "v1", content=b"only in b\n")
    layer_a = a.images[("lib/img", "v1")].layer_digest
    layer_b = b.images[("lib/img", "v1")].layer_digest
    server = two_rules(server_factory, a, b)
    for repo, layer in (("a", layer_a), ("b", layer_b)):
        manifest = requests.get(
            f"{server.url}/v2/{repo}/img/manifests/v1",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
            timeout=30,
        )
        assert manifest.status_code == 200
        assert requests.get(f"{server.url}/v2/{repo}/img/blobs/{layer}", timeout=30).ok
    delete_rule(server, "rule-b")  # b/img is now cache-only
    own = requests.get(f"{server.url}/v2/b/img/blobs/{layer_b}", timeout=30)
    assert own.status_code == 200 and own.headers["X-Entrepot-Cache"] == "hit"
    other = requests.get(f"{server.url}/v2/b/img/blobs/{layer_a}", timeout=30)
    assert stored(server, layer_a).exists()
    error = assert_oci_error(other, 404, "BLOB_UNKNOWN")
    assert "rule is gone" in error["message"] or "no cache rule" in error["message"], error
    assert requests.head(f"{server.url}/v2/b/img/blobs/{layer_a}", timeout=30).status_code == 404


def factory_with(server_factory: Factory, registry: Registry) -> InProcessServer:
    extra = f'\n[upstreams."{registry.login_server}"]\nurl = "{registry.url}"\n'
    server = server_factory(extra)
    put_rule(server, "upstream-lib", f"{registry.login_server}/lib/*", "up/*")
    return server


# -- shared HEAD requests ----------------------------------------------------------------------
def test_concurrent_cold_heads_of_a_blob_share_one_upstream_head(
    server_factory: Factory, open_registry: Registry
) -> None:
    data = os.urandom(200_000)
    digest = push_blob(open_registry, "lib/heads", data)
    server = factory_with(server_factory, open_registry)
    url = f"{server.url}/v2/up/heads/blobs/{digest}"
    assert open_registry.process is not None
    process = open_registry.process
    process.send_signal(signal.SIGSTOP)  # the upstream answers nothing until all have asked
    try:
        with ThreadPoolExecutor(20) as pool:
            pending = [pool.submit(requests.head, url, timeout=60) for _ in range(20)]
            time.sleep(1.0)
            process.send_signal(signal.SIGCONT)
            answers = [f.result() for f in pending]
    finally:
        process.send_signal(signal.SIGCONT)
    results = [(a.status_code, a.headers.get("Content-Length", "")) for a in answers]
    assert results == [(200, str(len(data)))] * 20
    path = f"/v2/lib/heads/blobs/{digest}"
    time.sleep(0.3)
    assert upstream_requests(open_registry, "HEAD", path) == 1
    assert upstream_requests(open_registry, "GET", path) == 0
    assert not stored(server, digest).exists()  # a HEAD stores nothing
