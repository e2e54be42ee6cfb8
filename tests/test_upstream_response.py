"""``UpstreamResponse`` and the swappable transport, against real ``docker-registry`` processes.

Every upstream here is Debian's ``docker-registry`` (``tests/registries.py``); the one extra
server is the blob storage that a registry with distribution's ``redirect`` storage middleware
sends its blob GETs to: a static file server over that registry's own storage directory, as
S3 or a CDN would be. :class:`RecordingTransport` wraps the production
:class:`AiohttpTransport` to watch every hop, which is also what proves the transport
swappable.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from yarl import URL

from entrepot.errors import UpstreamError
from entrepot.upstream import UpstreamClient
from entrepot.upstream.aiohttp_transport import AiohttpTransport
from entrepot.upstream.response import UpstreamResponse
from entrepot.upstream.transport import Timeouts, Transport
from tests.registries import (
    OCI_MANIFEST,
    REGISTRY_BIN,
    Registry,
    ThreadedServer,
    free_port,
    push_test_image,
    require_tools,
)

BIG = 3 * 1024 * 1024


# -- a second transport: a decorator that records each hop --------------------------------------


@dataclass(frozen=True)
class Hop:
    """One exchange seen by :class:`RecordingTransport`."""

    method: str
    url: URL
    authorization: str | None  # the scheme only ("Basic", "Bearer"), never the secret
    status: int


class RecordingTransport:
    """A :class:`Transport` that sends through another one and records every exchange."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.hops: list[Hop] = []

    async def send(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: bytes | None = None,
        *,
        timeouts: Timeouts,
    ) -> UpstreamResponse:
        resp = await self.inner.send(method, url, headers, body, timeouts=timeouts)
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
        self.hops.append(Hop(method, url, auth.split()[0] if auth else None, resp.status))
        return resp

    async def close(self) -> None:
        await self.inner.close()


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
async def connections() -> AsyncIterator[tuple[aiohttp.ClientSession, SimpleNamespace]]:
    """A session with a pool of **one** connection, and counts of connections made/reused.

    With one connection, a response that failed to give its connection back would make the
    next request wait forever: every test below would hang instead of passing.
    """
    counts = SimpleNamespace(created=0, reused=0)

    async def created(*_: Any) -> None:
        counts.created += 1

    async def reused(*_: Any) -> None:
        counts.reused += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(created)
    trace.on_connection_reuseconn.append(reused)
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:
        yield session, counts


def big_image(registry: Registry, repo: str) -> tuple[str, bytes]:
    """Push an image whose layer is ``BIG`` incompressible bytes; its layer digest and bytes."""
    push_test_image(registry, repo, "v1", content=os.urandom(BIG))
    image = registry.images[(repo, "v1")]
    return image.layer_digest, image.blobs[image.layer_digest]


async def within(seconds: float, awaitable: Any) -> Any:
    """``awaitable``, or a test failure (not a hang) if the pool was left without a connection."""
    return await asyncio.wait_for(awaitable, timeout=seconds)


# -- streaming -----------------------------------------------------------------------------------


async def test_stream_blob_in_chunks(
    connections: tuple[aiohttp.ClientSession, SimpleNamespace], token_registry: Registry
) -> None:
    session, _ = connections
    digest, blob = big_image(token_registry, "team/big")
    recorder = RecordingTransport(AiohttpTransport(session))
    client = UpstreamClient(recorder, token_registry.upstreams)
    ls, creds = token_registry.login_server, token_registry.credentials

    resp = await within(
        10, client.request("GET", ls, f"/v2/team/big/blobs/{digest}", credentials=creds)
    )
    async with resp:
        assert resp.status == 200
        assert resp.content_length == len(blob)
        assert resp.headers["docker-content-digest"] == digest  # case-insensitive
        sha = hashlib.sha256()
        sizes: list[int] = []
        async for chunk in resp.iter_chunks(16 * 1024):
            sizes.append(len(chunk))
            sha.update(chunk)
        assert f"sha256:{sha.hexdigest()}" == digest
        assert sum(sizes) == len(blob)
        assert len(sizes) >= len(blob) // (16 * 1024)
        assert all(0 < size <= 16 * 1024 for size in sizes)
        assert resp.closed  # the end of the body released the connection
        with pytest.raises(RuntimeError, match="consumed"):
            resp.iter_chunks()
        with pytest.raises(RuntimeError, match="consumed"):
            await resp.read()
    await resp.close()  # idempotent

    # The token dance went through the transport hop by hop: 401, token, retried with it.
    ts = token_registry.token_server
    assert ts is not None
    assert [(h.url.origin(), h.authorization, h.status) for h in recorder.hops] == [
        (URL(token_registry.url), None, 401),
        (URL(ts.url), "Basic", 200),
        (URL(token_registry.url), "Bearer", 200),
    ]
    assert resp.url == recorder.hops[-1].url


async def test_read_limit(
    connections: tuple[aiohttp.ClientSession, SimpleNamespace], open_registry: Registry
) -> None:
    session, counts = connections
    digest, blob = big_image(open_registry, "lib/big")
    client = UpstreamClient(session, open_registry.upstreams)
    ls, path = open_registry.login_server, f"/v2/lib/big/blobs/{digest}"

    resp = await within(10, client.request("GET", ls, path, credentials=None))
    with pytest.raises(UpstreamError) as info:
        await resp.read(limit=len(blob) - 1)
    assert type(info.value) is UpstreamError
    assert f"larger than the {len(blob) - 1} bytes" in info.value.message
    assert open_registry.login_server in info.value.message
    assert resp.closed
    with pytest.raises(RuntimeError, match="consumed"):
        await resp.read()

    resp = await within(10, client.request("GET", ls, path, credentials=None))
    assert await resp.read(limit=len(blob)) == blob  # exactly the limit is accepted
    assert resp.closed

    # A body without Content-Length (chunked: a tag list longer than Go's 2 KiB buffer) is
    # counted as it arrives and refused as soon as it passes the limit.
    manifest = open_registry.images[("lib/big", "v1")].manifest
    tags = [f"t{i:02d}-" + "x" * 120 for i in range(20)]
    for tag in tags:
        async with session.put(
            f"{open_registry.url}/v2/lib/big/manifests/{tag}",
            data=manifest,
            headers={"Content-Type": OCI_MANIFEST},
        ) as put:
            assert put.status == 201
    resp = await within(10, client.request("GET", ls, "/v2/lib/big/tags/list", credentials=None))
    assert resp.content_length is None
    assert "chunked" in resp.headers.get("Transfer-Encoding", "")
    with pytest.raises(UpstreamError, match="larger than the 1000 bytes"):
        await resp.read(limit=1000)
    assert resp.closed
    resp = await within(10, client.request("GET", ls, "/v2/lib/big/tags/list", credentials=None))
    listed = json.loads(await resp.read(limit=1 << 20))
    assert sorted(listed["tags"]) == sorted([*tags, "v1"])
    assert counts.created >= 2  # the refused bodies' connections were dropped, not pooled


async def test_close_early_then_reuse(
    connections: tuple[aiohttp.ClientSession, SimpleNamespace], basic_registry: Registry
) -> None:
    session, counts = connections
    digest, blob = big_image(basic_registry, "lib/big")
    client = UpstreamClient(session, basic_registry.upstreams)
    ls, creds = basic_registry.login_server, basic_registry.credentials
    path = f"/v2/lib/big/blobs/{digest}"
    await within(10, client.login(ls, creds))  # learn the scheme: one exchange per request

    # Read to the end: the connection goes back to the pool and the next request reuses it.
    resp = await within(10, client.request("GET", ls, path, credentials=creds))
    assert await resp.read() == blob
    created, reused = counts.created, counts.reused
    resp = await within(10, client.request("HEAD", ls, path, credentials=creds))
    async with resp:
        assert resp.status == 200
        assert resp.content_length == len(blob)
    assert (counts.created, counts.reused) == (created, reused + 1)

    # A small body closed unread (a 404's JSON error) has already come off the wire whole:
    # its connection goes back to the pool too.
    missing = "/v2/lib/big/blobs/sha256:" + "0" * 64
    resp = await within(10, client.request("GET", ls, missing, credentials=creds))
    async with resp:
        assert resp.status == 404
        assert resp.content_length
    resp = await within(10, client.request("HEAD", ls, path, credentials=creds))
    await resp.close()
    assert (counts.created, counts.reused) == (created, reused + 3)

    # Stop after one chunk: the connection is closed, not pooled with 3 MiB still unread...
    resp = await within(10, client.request("GET", ls, path, credentials=creds))
    chunks = resp.iter_chunks(4096)
    first = await anext(chunks)
    assert first == blob[: len(first)]
    await resp.close()
    await resp.close()
    assert resp.closed
    with pytest.raises(RuntimeError, match="closed before the end"):
        await anext(chunks)

    # ...and the client goes on over a fresh one (a pool of one: a leak would hang here).
    created = counts.created
    resp = await within(10, client.request("GET", ls, path, credentials=creds))
    sha = hashlib.sha256()
    async for chunk in resp.iter_chunks():
        sha.update(chunk)
    assert f"sha256:{sha.hexdigest()}" == digest
    assert counts.created == created + 1

    # ``async with`` leaving early (an exception) releases the connection as well.
    with pytest.raises(LookupError):
        async with await within(10, client.request("GET", ls, path, credentials=creds)) as resp:
            await anext(resp.iter_chunks())
            raise LookupError("the caller gave up")
    assert resp.closed
    resp = await within(10, client.request("GET", ls, path, credentials=creds))
    assert await resp.read() == blob


# -- redirects to blob storage, hop by hop -------------------------------------------------------


@pytest.fixture
def redirecting_registry(tmp_path: Path) -> Iterator[tuple[Registry, ThreadedServer, list[str]]]:
    """A Basic-auth registry whose blob GETs redirect (307) to a separate blob store.

    The store serves the registry's storage directory as static files and records the
    ``Authorization`` header of every request it gets (``""`` when there was none).
    """
    require_tools(REGISTRY_BIN, "htpasswd")
    seen: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization", ""))
        response: web.StreamResponse = await handler(request)
        return response

    port = free_port()
    registry = Registry("basic", tmp_path / f"redirecting-{port}", port, password="redirect-pw")
    (registry.root / "storage").mkdir(parents=True)
    store_app = web.Application(middlewares=[record])
    store_app.router.add_static("/", registry.root / "storage")
    with ThreadedServer(store_app) as store:
        registry.write_config()
        config = yaml.safe_load(registry.config_path.read_text())
        config["middleware"] = {
            "storage": [{"name": "redirect", "options": {"baseurl": store.url}}]
        }
        registry.config_path.write_text(yaml.safe_dump(config))
        registry.start()
        try:
            yield registry, store, seen
        finally:
            registry.stop()


async def test_redirect_hops_through_the_transport(
    connections: tuple[aiohttp.ClientSession, SimpleNamespace],
    redirecting_registry: tuple[Registry, ThreadedServer, list[str]],
) -> None:
    session, _ = connections
    registry, store, seen = redirecting_registry
    digest, blob = big_image(registry, "lib/big")
    recorder = RecordingTransport(AiohttpTransport(session))
    client = UpstreamClient(recorder, registry.upstreams)
    ls, creds = registry.login_server, registry.credentials
    await within(10, client.login(ls, creds))
    recorder.hops.clear()
    seen.clear()

    resp = await within(
        10, client.request("GET", ls, f"/v2/lib/big/blobs/{digest}", credentials=creds)
    )
    async with resp:
        assert resp.status == 200
        sha, size = hashlib.sha256(), 0
        async for chunk in resp.iter_chunks():
            sha.update(chunk)
            size += len(chunk)
        assert f"sha256:{sha.hexdigest()}" == digest
        assert size == len(blob)
    # One transport exchange per hop; Authorization stayed with the registry's origin.
    assert [(h.url.origin(), h.authorization, h.status) for h in recorder.hops] == [
        (URL(registry.url), "Basic", 307),
        (URL(store.url), None, 200),
    ]
    assert resp.url == recorder.hops[1].url  # the final URL, after the redirect
    assert resp.url.path.endswith(f"/blobs/sha256/{digest[7:9]}/{digest[7:]}/data")
    assert seen == [""]
