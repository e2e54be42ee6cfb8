"""The blob path of the pull-through cache: every client streamed while a fill runs, and the
faults of a real upstream (Debian's ``docker-registry``) and of entrepot itself.

Upstream requests are counted from the upstream registry's access log. To act while a blob is
still on its way, the upstream is reached through :class:`Relay`, a TCP relay that paces the
bytes the upstream sends (it passes them unchanged: the upstream is the real registry; the
relay stands for a slow network, which 127.0.0.1 cannot be).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from entrepot.config import StorageConfig
from entrepot.oci import Digest
from entrepot.storage import ContentStore, StorageError, open_storage
from tests.conftest import InProcessServer, ServerProcess
from tests.registries import Registry
from tests.test_pull_cache import upstream_requests, wait_for_log
from tests.test_registry_routes import put_rule

MiB = 1024 * 1024


# -- reading back an ingest (the storage capability the streaming stands on) --------------------
@pytest.fixture(params=["filesystem", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ContentStore]:
    storage = await open_storage(StorageConfig(driver=request.param), tmp_path)
    yield ContentStore(storage)
    await storage.close()


async def read_all(reader: object) -> bytes:
    from entrepot.storage import Reader

    assert isinstance(reader, Reader)
    async with reader:
        return b"".join([chunk async for chunk in reader])


async def test_an_ingest_is_read_back_while_written(store: ContentStore) -> None:
    data = os.urandom(3 * MiB + 123)
    digest = Digest.of(data)
    async with store.ingest(digest, len(data)) as ingest:
        assert ingest.readable == 0
        await ingest.write(data[: 2 * MiB])
        first = ingest.readable
        assert MiB <= first <= 2 * MiB  # what reached the driver, not what is buffered
        early = await ingest.open_partial(100)
        assert early.size == first
        await ingest.write(data[2 * MiB :])
        assert await read_all(early) == data[100:first]  # the size it was opened with
        later = await ingest.open_partial(first)
        assert await store.has(digest) is None  # read back, yet not visible
        await ingest.commit()
        with pytest.raises(StorageError):
            await ingest.open_partial(0)  # done: readers go to the store
        assert await read_all(later) == data[first : later.size]  # outlives the commit
    assert await store.has(digest) == len(data)


async def test_a_cancelled_ingest_cannot_be_read_back(store: ContentStore) -> None:
    data = os.urandom(2 * MiB)
    ingest = store.ingest(Digest.of(data), len(data))
    async with ingest:
        await ingest.write(data)
        with pytest.raises(StorageError):
            await ingest.open_partial(ingest.readable + 1)  # past what was written
    with pytest.raises(StorageError):
        await ingest.open_partial(0)
    assert await store.has(Digest.of(data)) is None


# -- helpers: a paced relay, blobs pushed and corrupted upstream, clients ----------------------
class Relay:
    """A TCP relay on 127.0.0.1 to ``port``, pacing the bytes the upstream sends at ``rate``
    bytes per second (``None``: as fast as they come); set ``rate`` at any time."""

    def __init__(self, port: int, rate: float | None) -> None:
        self.target = port
        self.rate = rate
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> Relay:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self._server = future.result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(self._relay, "127.0.0.1", 0)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._pipe(client_r, up_w, False), self._pipe(up_r, client_w, True))

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, paced: bool
    ) -> None:
        try:
            while True:
                rate = self.rate if paced else None
                data = await src.read(64 * 1024 if rate is None else max(1024, int(rate / 50)))
                if not data:
                    break
                dst.write(data)
                await dst.drain()
                if rate is not None:
                    await asyncio.sleep(len(data) / rate)
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()


def push_blob(registry: Registry, repo: str, data: bytes) -> str:
    """Upload ``data`` as a blob of ``repo`` (monolithic upload); its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    started = requests.post(f"{registry.url}/v2/{repo}/blobs/uploads/", timeout=30)
    assert started.status_code == 202, started.text
    location = started.headers["Location"]
    if location.startswith("/"):
        location = registry.url + location
    sep = "&" if "?" in location else "?"
    done = requests.put(
        f"{location}{sep}digest={digest}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=120,
    )
    assert done.status_code == 201, done.text
    return digest


def registry_blob_file(registry: Registry, digest: str) -> Path:
    """Where the registry's filesystem storage keeps the content of ``digest``."""
    hex_ = digest.removeprefix("sha256:")
    path = registry.root / "storage/docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"
    assert path.is_file()
    return path


def stored(server: InProcessServer | ServerProcess, digest: str) -> Path:
    hex_ = digest.removeprefix("sha256:")
    return server.data_dir / "content/blobs/sha256" / hex_[:2] / hex_


def ingest_files(server: InProcessServer | ServerProcess) -> list[str]:
    area = server.data_dir / "content/_uploads"
    return sorted(p.name for p in area.iterdir()) if area.is_dir() else []


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@dataclass
class Got:
    status: int
    size: int
    sha256: str
    origin: str
    complete: bool  # the body ended normally (not cut short)
    seconds: float
    first: float  # seconds to the first byte of the body
    began: float  # time.monotonic() when the request was sent

    @property
    def first_byte_at(self) -> float:
        return self.began + self.first

    @property
    def ended_at(self) -> float:
        return self.began + self.seconds


def fetch(
    url: str,
    headers: dict[str, str] | None = None,
    *,
    after: int = -1,
    then: Callable[[], None] | None = None,
    chunk: int = 256 * 1024,
) -> Got:
    """GET ``url`` streaming; ``then()`` runs once ``after`` bytes of the body have come."""
    begin = time.monotonic()
    hasher = hashlib.sha256()
    size = 0
    complete = True
    first = 0.0
    with requests.get(url, headers=headers, stream=True, timeout=60) as answer:
        try:
            for part in answer.iter_content(chunk):
                if size <= after < size + len(part) and then is not None:
                    then()
                if not size:
                    first = time.monotonic() - begin
                hasher.update(part)
                size += len(part)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
            complete = False
        expected = answer.headers.get("Content-Length")
        if expected is not None and int(expected) != size:
            complete = False
        return Got(
            answer.status_code,
            size,
            "sha256:" + hasher.hexdigest(),
            answer.headers.get("X-Entrepot-Cache", ""),
            complete,
            time.monotonic() - begin,
            first,
            begin,
        )


def cache_config(registry: Registry, relay: Relay, extra: str = "") -> str:
    return f'\n[upstreams."{registry.login_server}"]\nurl = "{relay.url}"\n{extra}'


QUICK_LEASE = {"ENTREPOT_CACHE_FILL_LEASE_SECONDS": "2"}  # a killed process's lease expires soon


@pytest.fixture
def relay(open_registry: Registry) -> Iterator[Relay]:
    with Relay(open_registry.port, rate=None) as r:
        yield r


def blob_url(server: InProcessServer | ServerProcess, repo: str, digest: str) -> str:
    return f"{server.url}/v2/up/{repo}/blobs/{digest}"


def start_server(
    factory: Callable[..., InProcessServer] | Callable[..., ServerProcess],
    registry: Registry,
    relay: Relay,
    extra: str = "",
    env: dict[str, str] | None = None,
) -> InProcessServer | ServerProcess:
    server = factory(cache_config(registry, relay, extra), env=env)
    put_rule(server, "upstream-lib", f"{registry.login_server}/lib/*", "up/*")
    return server


# -- every client streamed -----------------------------------------------------------------------
@pytest.mark.slow
def test_twenty_cold_clients_with_late_joiners_and_ranges_make_one_upstream_get(
    server_factory: Callable[..., InProcessServer], open_registry: Registry, relay: Relay
) -> None:
    """One client starts the fill; once it has bytes, 19 more arrive (some with a ``Range``)
    while the upstream is still sending: all are served from the running fill (``miss``)
    with the right bytes, and the upstream sees one GET."""
    data = os.urandom(16 * MiB)
    digest = push_blob(open_registry, "lib/big", data)
    relay.rate = 6 * MiB  # about 2.7 s for the blob
    server = start_server(server_factory, open_registry, relay)
    url = blob_url(server, "big", digest)
    flowing = threading.Event()
    ranges = {i: (i * 700_000, i * 700_000 + 999_999) for i in range(1, 20, 3)}

    def late(i: int) -> Got:
        if i in ranges:
            first, last = ranges[i]
            return fetch(url, {"Range": f"bytes={first}-{last}"})
        return fetch(url)

    with ThreadPoolExecutor(20) as pool:
        first = pool.submit(fetch, url, after=MiB, then=flowing.set)
        assert flowing.wait(30), "the first client got no bytes"
        joined_at = time.monotonic()
        others = {i: pool.submit(late, i) for i in range(1, 20)}
        results = {0: first.result(), **{i: f.result() for i, f in others.items()}}
    for i, got in results.items():
        assert got.complete, (i, got)
        assert got.origin == "miss", (i, got)  # served by the fill, not from the store after
        if i in ranges:
            first_byte, last_byte = ranges[i]
            assert got.status == 206
            assert (
                got.sha256
                == "sha256:" + hashlib.sha256(data[first_byte : last_byte + 1]).hexdigest()
            )
        else:
            assert got.status == 200 and got.size == len(data) and got.sha256 == digest, (i, got)
    fill_ended = results[0].ended_at  # the first client's last byte waits for the commit
    assert fill_ended - joined_at > 0.5  # the late joiners did join a fill in progress...
    for i in range(1, 20):  # ...and were streamed from it, not made to wait for its end
        assert results[i].first_byte_at < fill_ended - 0.3, (i, results[i], fill_ended)
    assert wait_for_log(open_registry, "GET", f"/v2/lib/big/blobs/{digest}", 1) == 1
    time.sleep(0.3)
    assert upstream_requests(open_registry, "GET", f"/v2/lib/big/blobs/{digest}") == 1
    assert stored(server, digest).read_bytes() == data
    hit = fetch(url)
    assert hit.origin == "hit" and hit.sha256 == digest


def test_a_range_of_a_cold_blob_streams_at_once_and_ends_once_verified(
    server_factory: Callable[..., InProcessServer], open_registry: Registry, relay: Relay
) -> None:
    """A range of a blob not cached yet starts as soon as its bytes are written (not once the
    whole blob is), and its last byte comes only after the content is verified."""
    data = os.urandom(8 * MiB)
    digest = push_blob(open_registry, "lib/ranged", data)
    relay.rate = 4 * MiB  # two seconds for the blob
    server = start_server(server_factory, open_registry, relay)
    got = fetch(blob_url(server, "ranged", digest), {"Range": "bytes=10-1009"}, chunk=1)
    assert got.status == 206 and got.complete and got.origin == "miss"
    assert got.sha256 == "sha256:" + hashlib.sha256(data[10:1010]).hexdigest()
    assert got.first < 1.2  # did not wait for the whole blob...
    assert got.seconds > 1.6  # ...but for its verification to send the last byte
    assert stored(server, digest).read_bytes() == data
    whole = fetch(blob_url(server, "ranged", digest))
    assert whole.sha256 == digest and whole.complete and whole.origin == "hit"
    assert wait_for_log(open_registry, "GET", f"/v2/lib/ranged/blobs/{digest}", 1) == 1


@pytest.mark.slow
def test_the_fill_goes_on_when_its_clients_leave(
    server_factory: Callable[..., InProcessServer], open_registry: Registry, relay: Relay
) -> None:
    """Two clients read a little of a cold blob, one stops reading, then both hang up while
    the upstream is still sending: the blob is cached whole all the same, with one GET."""
    data = os.urandom(16 * MiB)
    digest = push_blob(open_registry, "lib/left", data)
    relay.rate = 8 * MiB  # two seconds for the blob
    server = start_server(server_factory, open_registry, relay)
    url = blob_url(server, "left", digest)
    first = requests.get(url, stream=True, timeout=60)
    assert first.raw.read(MiB) == data[:MiB]  # then reads no more
    second = requests.get(url, stream=True, timeout=60)
    assert second.raw.read(3 * MiB) == data[: 3 * MiB]
    assert not stored(server, digest).exists()  # still filling...
    second.close()
    first.close()  # ...when both clients are gone
    wait_until(lambda: stored(server, digest).exists(), 15, "the fill to finish")
    assert stored(server, digest).read_bytes() == data
    hit = fetch(url)
    assert hit.origin == "hit" and hit.sha256 == digest
    assert wait_for_log(open_registry, "GET", f"/v2/lib/left/blobs/{digest}", 1) == 1
    time.sleep(0.3)
    assert upstream_requests(open_registry, "GET", f"/v2/lib/left/blobs/{digest}") == 1


# -- faults ----------------------------------------------------------------------------------------
def assert_cut_short(got: Got, size: int) -> None:
    assert got.status == 200
    assert not got.complete and got.size < size, got


@pytest.mark.slow
def test_an_upstream_killed_mid_blob(
    server_factory: Callable[..., InProcessServer], open_registry: Registry, relay: Relay
) -> None:
    data = os.urandom(24 * MiB)
    digest = push_blob(open_registry, "lib/killed", data)
    relay.rate = 8 * MiB
    server = start_server(server_factory, open_registry, relay)
    url = blob_url(server, "killed", digest)
    assert open_registry.process is not None
    process = open_registry.process

    got = fetch(url, after=2 * MiB, then=lambda: process.send_signal(signal.SIGKILL))
    assert_cut_short(got, len(data))
    process.wait(10)
    wait_until(lambda: not ingest_files(server), 10, "the ingest to be cancelled")
    assert not stored(server, digest).exists()

    relay.rate = None
    path = f"/v2/lib/killed/blobs/{digest}"
    before = upstream_requests(open_registry, "GET", path)  # 0: killed before it could log
    open_registry.start()
    again = fetch(url)
    assert again.complete and again.sha256 == digest and again.origin == "miss"
    assert stored(server, digest).read_bytes() == data
    assert wait_for_log(open_registry, "GET", path, before + 1) == before + 1


@pytest.mark.slow
def test_an_upstream_that_stalls_fails_the_fill_within_the_timeout(
    server_factory: Callable[..., InProcessServer], open_registry: Registry, relay: Relay
) -> None:
    """``[cache] upstream_stall_seconds`` bounds each read of the body; there is no overall
    limit (the download takes longer than the stall limit)."""
    data = os.urandom(24 * MiB)
    digest = push_blob(open_registry, "lib/stalled", data)
    relay.rate = 8 * MiB
    server = start_server(
        server_factory, open_registry, relay, "\n[cache]\nupstream_stall_seconds = 2\n"
    )
    url = blob_url(server, "stalled", digest)
    assert open_registry.process is not None
    process = open_registry.process
    stopped_at: list[float] = []

    def stop() -> None:
        process.send_signal(signal.SIGSTOP)
        stopped_at.append(time.monotonic())

    try:
        got = fetch(url, after=2 * MiB, then=stop)
        cut_after = time.monotonic() - stopped_at[0]
        assert_cut_short(got, len(data))
        assert cut_after < 10, cut_after  # the stall limit (2 s) plus draining the buffers
        wait_until(lambda: not ingest_files(server), 10, "the ingest to be cancelled")
        assert not stored(server, digest).exists()
        assert "within 2 s" in server.log()
    finally:
        process.send_signal(signal.SIGCONT)
    again = fetch(url)  # still paced: about 3 s, longer than the stall limit, yet not cut
    assert again.complete and again.sha256 == digest and again.origin == "miss"
    assert again.seconds > 2.5
    assert wait_for_log(open_registry, "GET", f"/v2/lib/stalled/blobs/{digest}", 2) == 2


def test_an_upstream_sending_other_content_stores_nothing(
    server_factory: Callable[..., InProcessServer], open_registry: Registry, relay: Relay
) -> None:
    data = os.urandom(3 * MiB)
    digest = push_blob(open_registry, "lib/corrupt", data)
    path = registry_blob_file(open_registry, digest)
    path.write_bytes(data[:MiB] + bytes([data[MiB] ^ 0xFF]) + data[MiB + 1 :])  # same size
    server = start_server(server_factory, open_registry, relay)
    url = blob_url(server, "corrupt", digest)

    got = fetch(url)
    assert_cut_short(got, len(data))  # at most all but the last byte, then a hang-up
    assert not stored(server, digest).exists()
    wait_until(lambda: not ingest_files(server), 10, "the ingest to be cancelled")
    assert "other content than blob" in server.log()
    assert wait_for_log(open_registry, "GET", f"/v2/lib/corrupt/blobs/{digest}", 1) == 1

    path.write_bytes(data)  # the upstream repaired
    again = fetch(url)
    assert again.complete and again.sha256 == digest and again.origin == "miss"
    assert stored(server, digest).read_bytes() == data
    assert wait_for_log(open_registry, "GET", f"/v2/lib/corrupt/blobs/{digest}", 2) == 2


@pytest.mark.slow
def test_entrepot_killed_mid_fill_leaves_a_consistent_store(
    process_factory: Callable[..., ServerProcess], open_registry: Registry, relay: Relay
) -> None:
    data = os.urandom(24 * MiB)
    digest = push_blob(open_registry, "lib/crash", data)
    relay.rate = 8 * MiB
    env = {**QUICK_LEASE, "ENTREPOT_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}
    server = start_server(process_factory, open_registry, relay, env=env)
    assert isinstance(server, ServerProcess)
    url = blob_url(server, "crash", digest)

    got = fetch(url, after=2 * MiB, then=lambda: server.stop(kill=True))
    assert_cut_short(got, len(data))
    assert not stored(server, digest).exists()  # no partial blob visible
    assert ingest_files(server)  # the dead fill's ingest file is left...

    relay.rate = None
    server.start()
    assert not ingest_files(server)  # ...and removed when the store opens again
    again = fetch(url)
    assert again.complete and again.sha256 == digest and again.origin == "miss"
    assert stored(server, digest).read_bytes() == data
    assert wait_for_log(open_registry, "GET", f"/v2/lib/crash/blobs/{digest}", 2) == 2
    hit = fetch(url)
    assert hit.origin == "hit" and hit.sha256 == digest


@pytest.mark.slow
def test_a_client_behind_a_fill_that_is_being_linked_does_not_hold_the_event_loop(
    process_factory: Callable[..., ServerProcess], open_registry: Registry, relay: Relay
) -> None:
    """A client that reads slower than the fill still has unverified bytes to read when the
    fill's content is committed to the store and the fill is recording the blob in the
    database. Meanwhile the server answers other requests, the database write is not held
    up by the server itself, and the client gets the whole blob once the fill ends.

    The test holds the SQLite write lock (as another process sharing the database would)
    from before the fill's content is committed until after the client caught up, so that
    the fill waits between the commit and its database write for as long as the test needs.
    """
    data = os.urandom(32 * MiB)
    digest = push_blob(open_registry, "lib/behind", data)
    relay.rate = 8 * MiB  # about four seconds for the blob
    server = start_server(process_factory, open_registry, relay)
    url = blob_url(server, "behind", digest)
    client = requests.get(url, stream=True, timeout=60)
    assert client.raw.read(MiB) == data[:MiB]  # then reads no more for now: the fill goes on
    other = sqlite3.connect(server.data_dir / "entrepot.db", timeout=30, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        assert not stored(server, digest).exists()  # the lock was taken before the commit
        wait_until(lambda: stored(server, digest).exists(), 30, "the fill's content")
        linked = "SELECT count(*) FROM blob_links WHERE digest = ?"
        assert other.execute(linked, (digest,)).fetchone() == (0,)  # not recorded yet
        rest: list[bytes] = []
        reading = threading.Thread(target=lambda: rest.append(client.raw.read()), daemon=True)
        reading.start()  # the client catches up with what the fill wrote, but for the end
        time.sleep(1)
        alive = requests.get(f"{server.url}/v2/", timeout=10)  # the server still answers
        assert alive.status_code in (200, 401)
        assert reading.is_alive()  # the last byte waits for the fill to end
    finally:
        other.execute("ROLLBACK")
        other.close()
    reading.join(30)
    assert not reading.is_alive()
    assert data[:MiB] + rest[0] == data
    client.close()
    hit = fetch(url)
    assert hit.origin == "hit" and hit.sha256 == digest and hit.complete
    assert upstream_requests(open_registry, "GET", f"/v2/lib/behind/blobs/{digest}") == 1


# -- memory ---------------------------------------------------------------------------------------
def peak_rss(pid: int) -> int:
    """The peak resident set size of process ``pid``, bytes (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_twenty_clients_of_a_large_cold_blob_keep_the_server_memory_flat(
    process_factory: Callable[..., ServerProcess], open_registry: Registry, relay: Relay
) -> None:
    """``ENTREPOT_TEST_BLOB_MIB`` (default 64) sets the blob size, ``ENTREPOT_TEST_CLIENTS``
    (default 20) the clients; the peak RSS of the server stays under 200 MB with 20 clients
    whatever the size."""
    size = int(os.environ.get("ENTREPOT_TEST_BLOB_MIB", "64")) * MiB
    clients = int(os.environ.get("ENTREPOT_TEST_CLIENTS", "20"))
    data = os.urandom(size)
    digest = push_blob(open_registry, "lib/large", data)
    del data
    env = {"ENTREPOT_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}
    server = start_server(process_factory, open_registry, relay, env=env)
    assert isinstance(server, ServerProcess) and server.process is not None
    url = blob_url(server, "large", digest)
    before = peak_rss(server.process.pid)
    begin = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda _: fetch(url, chunk=MiB), range(clients)))
    seconds = time.monotonic() - begin
    peak = peak_rss(server.process.pid)
    print(
        f"{clients} clients x {size // MiB} MiB: {seconds:.1f} s, server peak RSS "
        f"{peak / MiB:.0f} MiB (before: {before / MiB:.0f} MiB)"
    )
    assert all(r.complete and r.sha256 == digest for r in results), results
    if clients <= 20:
        assert peak < 200 * 1000 * 1000, peak
    assert wait_for_log(open_registry, "GET", f"/v2/lib/large/blobs/{digest}", 1) == 1


async def test_a_reader_waits_while_its_fill_records_a_commit(tmp_path: Path) -> None:
    """Between the store's commit of a fill and the fill recording it (its index and link
    writes run then), a reader of the fill that finds the ingest closed must wait, never loop
    without awaiting: that held the event loop, and with it the fill, forever (20 cold clients
    of a 200 MiB blob hung). A watchdog thread ends such a spin after 3 s and says so."""
    from entrepot.config import StorageConfig
    from entrepot.oci import Digest
    from entrepot.proxy.blobs import _Fill, _FillReader
    from entrepot.proxy.engine import BlobDescriptor, Origin
    from entrepot.storage import ContentStore, open_storage

    store = ContentStore(await open_storage(StorageConfig(driver="filesystem"), tmp_path))
    data = os.urandom(5 * MiB)  # more than the ingest holds back: some of it is readable
    digest = Digest.of(data)
    fill = _Fill(digest)
    ingest = store.ingest(digest, len(data))
    async with ingest:
        fill.start(len(data), None, ingest)
        await ingest.write(data)
        fill.progress()
        assert fill.readable > 0
        await ingest.commit()  # in the store; the fill has not recorded it yet
    reader = _FillReader(
        BlobDescriptor(digest, len(data), None, Origin.UPSTREAM), fill, store, 0, None
    )
    fired = threading.Event()

    def watchdog() -> None:
        if not recorded.wait(3):
            fired.set()
            fill.committed = True  # ends a spin (the loop cannot run anything else)

    recorded = threading.Event()
    threading.Thread(target=watchdog, daemon=True).start()

    async def read_all() -> bytes:
        parts = []
        async for part in reader.chunks():
            parts.append(
                part if isinstance(part, bytes) else os.pread(part.fd, part.count, part.offset)
            )
        await reader.close()
        return b"".join(parts)

    task = asyncio.create_task(read_all())
    for _ in range(20):
        await asyncio.sleep(0.01)  # the event loop runs: the reader waits
    recorded.set()
    fill.commit()
    fill.finish()
    assert await asyncio.wait_for(task, 10) == data
    assert not fired.is_set(), "the reader spun without awaiting"
    await store.storage.close()
