"""The serving path of blobs: exact bytes and headers of whole blobs and ranges, over plain HTTP
and TLS, from the filesystem and the memory drivers, and the zero-copy (``sendfile``) path
actually taken where it can be.

The upstream is Debian's ``docker-registry``; the servers are the real app (in process, on
uvloop as ``entrepot serve`` runs, so that :data:`entrepot.web.sendfile.STATS` can be read) or
real ``entrepot serve`` processes with TLS.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from entrepot.web.sendfile import STATS
from tests.conftest import InProcessServer, Server, ServerProcess, base_config, free_port
from tests.registries import Registry
from tests.test_pull_blobs import push_blob
from tests.test_registry_routes import put_rule
from tests.test_serving import HttpsServer, Pki, pki  # noqa: F401  (pki: the module's CA)

MiB = 1024 * 1024
SIZE = 5 * MiB + 12345  # more than a few CHUNK_SIZEs, not a multiple of anything
RANGE = (1_234_567, 3 * MiB + 7)  # first and last byte of the range GETs


def rule_config(registry: Registry, driver: str) -> str:
    return (
        f'\n[upstreams."{registry.login_server}"]\nurl = "{registry.url}"\n'
        f'\n[storage]\ndriver = "{driver}"\n'
    )


def snapshot() -> tuple[int, int, int, int]:
    return STATS.zero_copy_spans, STATS.zero_copy_bytes, STATS.copied_spans, STATS.copied_bytes


def check_blob_answer(
    answer: requests.Response, data: bytes, digest: str, origin: str, wanted: tuple[int, int] | None
) -> None:
    """The answer carries exactly the blob (or the range ``wanted``) and every header of the
    face."""
    headers = answer.headers
    if wanted is None:
        assert answer.status_code == 200, answer.text[:300]
        assert answer.content == data
        assert "Content-Range" not in headers
    else:
        first, last = wanted
        assert answer.status_code == 206, answer.text[:300]
        assert answer.content == data[first : last + 1]
        assert headers["Content-Range"] == f"bytes {first}-{last}/{len(data)}"
    assert headers["Content-Length"] == str(len(answer.content))
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Docker-Content-Digest"] == digest
    assert headers["ETag"] == f'"{digest}"'
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["X-Entrepot-Cache"] == origin
    assert headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert re.fullmatch(r"[0-9a-f-]{36}", headers["X-Request-Id"])


@pytest.fixture
def blob(open_registry: Registry) -> tuple[bytes, str]:
    data = os.urandom(SIZE)
    return data, push_blob(open_registry, "lib/serve", data)


def in_process(
    factory: Callable[..., InProcessServer], registry: Registry, driver: str
) -> InProcessServer:
    server = factory(rule_config(registry, driver))
    put_rule(server, "upstream-lib", f"{registry.login_server}/lib/*", "up/*")
    return server


def blob_url(server: Server, digest: str) -> str:
    return f"{server.url}/v2/up/serve/blobs/{digest}"


# -- plain HTTP, in process: the counters say which path was taken -------------------------------
def test_filesystem_blobs_go_out_with_sendfile_whole_and_ranged(
    server_factory: Callable[..., InProcessServer],
    open_registry: Registry,
    blob: tuple[bytes, str],
) -> None:
    data, digest = blob
    server = in_process(server_factory, open_registry, "filesystem")
    url = blob_url(server, digest)
    with requests.Session() as session:  # one keep-alive connection for all of them
        spans, sent, copied_spans, _ = snapshot()
        check_blob_answer(session.get(url, timeout=60), data, digest, "miss", None)
        # a fill's client gets at least its last byte from the committed file
        assert STATS.zero_copy_spans == spans + 1
        assert 1 <= STATS.zero_copy_bytes - sent <= SIZE

        spans, sent, copied_spans, copied = snapshot()
        check_blob_answer(session.get(url, timeout=60), data, digest, "hit", None)
        assert (STATS.zero_copy_spans, STATS.zero_copy_bytes) == (spans + 1, sent + SIZE)

        first, last = RANGE
        answer = session.get(url, headers={"Range": f"bytes={first}-{last}"}, timeout=60)
        check_blob_answer(answer, data, digest, "hit", RANGE)
        assert STATS.zero_copy_bytes == sent + SIZE + (last - first + 1)

        answer = session.get(url, headers={"Range": "bytes=-10"}, timeout=60)  # the tail
        check_blob_answer(answer, data, digest, "hit", (SIZE - 10, SIZE - 1))
        assert (STATS.copied_spans, STATS.copied_bytes) == (copied_spans, copied)  # none copied

        # the connection is still good for a small answer after the sendfiles
        assert session.get(f"{server.url}/v2/", timeout=10).status_code == 200


def test_entrepot_serve_sends_cached_blobs_and_logs_their_bytes(
    process_factory: Callable[..., ServerProcess],
    open_registry: Registry,
    blob: tuple[bytes, str],
) -> None:
    """The same through a real ``entrepot serve``; its access log counts the bytes that went
    out with sendfile as any others."""
    data, digest = blob
    server = process_factory(rule_config(open_registry, "filesystem"))
    put_rule(server, "upstream-lib", f"{open_registry.login_server}/lib/*", "up/*")
    url = blob_url(server, digest)
    first, last = RANGE
    with requests.Session() as session:
        check_blob_answer(session.get(url, timeout=60), data, digest, "miss", None)
        check_blob_answer(session.get(url, timeout=60), data, digest, "hit", None)
        answer = session.get(url, headers={"Range": f"bytes={first}-{last}"}, timeout=60)
        check_blob_answer(answer, data, digest, "hit", RANGE)
    server.stop()  # the log is complete
    logged = re.findall(
        rf"GET /v2/up/serve/blobs/{digest} (\d+) (\d+) .* cache=(\w+)", server.log()
    )
    assert [(status, cache) for status, _, cache in logged] == [
        ("200", "miss"),
        ("200", "hit"),
        ("206", "hit"),
    ], logged
    # "bytes" is what went out, headers included (as for any answer): the body is counted
    bodies = [SIZE, SIZE, last - first + 1]
    assert all(
        0 < int(size) - body < 1024 for (_, size, _), body in zip(logged, bodies, strict=True)
    ), logged


def test_memory_blobs_are_streamed_as_bytes(
    server_factory: Callable[..., InProcessServer],
    open_registry: Registry,
    blob: tuple[bytes, str],
) -> None:
    data, digest = blob
    server = in_process(server_factory, open_registry, "memory")
    url = blob_url(server, digest)
    before = snapshot()
    with requests.Session() as session:
        check_blob_answer(session.get(url, timeout=60), data, digest, "miss", None)
        check_blob_answer(session.get(url, timeout=60), data, digest, "hit", None)
        answer = session.get(url, headers={"Range": "bytes={}-{}".format(*RANGE)}, timeout=60)
        check_blob_answer(answer, data, digest, "hit", RANGE)
    assert snapshot() == before  # no local file: no span, neither sent nor copied


def test_a_blob_deleted_while_served_is_still_sent_whole(
    server_factory: Callable[..., InProcessServer],
    open_registry: Registry,
    blob: tuple[bytes, str],
) -> None:
    """The span is the reader's open descriptor: a file unlinked after the open still goes out
    entire (what a cleanup racing a download must not break)."""
    data, digest = blob
    server = in_process(server_factory, open_registry, "filesystem")
    url = blob_url(server, digest)
    assert requests.get(url, timeout=60).content == data  # cached
    hex_ = digest.removeprefix("sha256:")
    path = server.data_dir / "content/blobs/sha256" / hex_[:2] / hex_
    assert path.is_file()
    with requests.get(url, stream=True, timeout=60) as answer:
        assert answer.status_code == 200 and answer.headers["X-Entrepot-Cache"] == "hit"
        path.unlink()
        body = b"".join(answer.iter_content(256 * 1024))
    assert hashlib.sha256(body).hexdigest() == hex_


def test_a_client_hanging_up_mid_sendfile_costs_nothing(
    server_factory: Callable[..., InProcessServer],
    open_registry: Registry,
    blob: tuple[bytes, str],
) -> None:
    """Clients that read a little of a cached blob and hang up: no traceback, no error line,
    and the server goes on serving it whole."""
    data, digest = blob
    server = in_process(server_factory, open_registry, "filesystem")
    url = blob_url(server, digest)
    assert requests.get(url, timeout=60).content == data  # cached
    spans = STATS.zero_copy_spans
    request = f"GET /v2/up/serve/blobs/{digest} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(request)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    check_blob_answer(requests.get(url, timeout=60), data, digest, "hit", None)
    # the 5 MiB cannot all fit in the socket buffers: each hung-up send was cut short (a span
    # counts once sent whole), only the last GET's span completed
    assert STATS.zero_copy_spans == spans + 1
    log = server.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


# -- TLS, as `entrepot serve` runs it: sendfile cannot go under TLS, the bytes must ---------------
@pytest.fixture
def https_factory(
    pki: Pki,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[str], HttpsServer]]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca))
    started: list[HttpsServer] = []

    def start(extra: str) -> HttpsServer:
        port = free_port()
        root = tmp_path / f"srv-{port}"
        data_dir = root / "data"
        data_dir.mkdir(parents=True)
        config_path = root / "entrepot.toml"
        tls = f'[server]\ntls_cert = "{pki.cert}"\ntls_key = "{pki.key}"\n'
        config_path.write_text(base_config(port, data_dir, extra).replace("[server]\n", tls, 1))
        server = HttpsServer(config_path, data_dir, port)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("driver", ["filesystem", "memory"])
def test_blobs_over_tls(
    https_factory: Callable[[str], HttpsServer],
    open_registry: Registry,
    blob: tuple[bytes, str],
    driver: str,
) -> None:
    data, digest = blob
    server = https_factory(rule_config(open_registry, driver))
    put_rule(server, "upstream-lib", f"{open_registry.login_server}/lib/*", "up/*")
    url = blob_url(server, digest)
    assert url.startswith("https://")
    with requests.Session() as session:
        check_blob_answer(session.get(url, timeout=60), data, digest, "miss", None)
        check_blob_answer(session.get(url, timeout=60), data, digest, "hit", None)
        answer = session.get(url, headers={"Range": "bytes={}-{}".format(*RANGE)}, timeout=60)
        check_blob_answer(answer, data, digest, "hit", RANGE)
        assert session.get(f"{server.url}/v2/", timeout=10).status_code == 200


# -- the storage side: spans only of committed files ----------------------------------------------
@pytest.mark.parametrize("driver", ["filesystem", "memory"])
async def test_spans_are_of_committed_files_only(tmp_path: Path, driver: str) -> None:
    from entrepot.config import StorageConfig
    from entrepot.oci import Digest
    from entrepot.storage import ContentStore, open_storage

    storage = await open_storage(StorageConfig(driver=driver), tmp_path)
    store = ContentStore(storage)
    data = os.urandom(3 * MiB + 5)
    digest = Digest.of(data)
    try:
        async with store.ingest(digest, len(data)) as ingest:
            await ingest.write(data)
            partial = await ingest.open_partial(0)
            assert partial.local_span() is None  # unverified: never a span
            await partial.close()
            await ingest.commit()
        reader = await store.open(digest, 1000)
        try:
            span = reader.local_span(len(data) - 7)
            if driver == "memory":
                assert span is None and reader.offset == 1000
                return
            assert span is not None
            assert (span.offset, span.count) == (1000, len(data) - 7 - 1000)
            assert reader.offset == len(data) - 7
            body = b"".join([chunk async for chunk in span.chunks()])  # the copying path
            assert body == data[1000:-7]
            assert reader.local_span() is not None  # the last 7 bytes
            assert reader.local_span() is None  # nothing left
        finally:
            await reader.close()
    finally:
        await storage.close()


async def test_send_span_on_the_stock_asyncio_loop(tmp_path: Path) -> None:
    """Without uvloop (it is optional) the zero-copy path works the same: here on the test's
    own asyncio loop, through a bare aiohttp app around :func:`send_span`."""
    import asyncio

    import aiohttp
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from entrepot.storage import FileSpan
    from entrepot.web.sendfile import send_span

    assert "uvloop" not in type(asyncio.get_running_loop()).__module__
    data = os.urandom(2 * MiB + 3)
    path = tmp_path / "blob"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(data) - 10
        writer = await response.prepare(request)
        assert writer is not None
        await response.write(data[:10])  # bytes first, then the span after them
        await send_span(request, response, writer, FileSpan(fd, 10, len(data) - 20, "blob"))
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    spans = STATS.zero_copy_spans
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(2):  # keep-alive: the connection is fine after it
                async with session.get(server.make_url("/")) as answer:
                    assert await answer.read() == data[:-10]
    finally:
        await server.close()
        os.close(fd)
    assert STATS.zero_copy_spans == spans + 2


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_waiting_for_a_full_transport_buffer_restores_its_limits(loop_kind: str) -> None:
    """What ``send_span`` does before ``sendfile`` when the transport still holds bytes (the
    headers of a slow client): wait, with the transport's flow control, until it has written
    them all, then put its limits back as they were. On real sockets, on asyncio's loop and on
    uvloop (``entrepot serve``'s), whose limits come as ``(low, high)``."""
    import asyncio

    from entrepot.web import sendfile

    payload = os.urandom(16 * 1024 * 1024)

    async def main() -> None:
        done: asyncio.Future[tuple[tuple[int, int], tuple[int, int], int]] = (
            asyncio.get_running_loop().create_future()
        )

        async def serve(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            transport = writer.transport
            transport.set_write_buffer_limits(high=256 * 1024, low=64 * 1024)
            before = transport.get_write_buffer_limits()
            transport.write(payload)  # far more than the socket takes at once
            assert transport.get_write_buffer_size() > 0
            await sendfile._flushed(transport, writer)  # type: ignore[arg-type]
            done.set_result(
                (before, transport.get_write_buffer_limits(), transport.get_write_buffer_size())
            )
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.2)  # the server's buffer fills while nobody reads
        received = await reader.readexactly(len(payload))
        before, after, left = await asyncio.wait_for(done, 10)
        writer.close()
        server.close()
        assert received == payload
        assert after == before and left == 0

    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        uvloop.run(main())
    else:
        import asyncio

        asyncio.run(main())
