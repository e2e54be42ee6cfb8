"""Upstream faults seen through the pull-through cache: stalled and stopped upstreams (stale
tags served at once), operator warnings, what error bodies may say, odd upstream answers
(``Retry-After: ²``, reason phrases, gzip, invalid manifests), the address guard, and upstream
URLs in the config.

Real parts: Debian's ``docker-registry`` and a real socket that accepts and never answers (the
"blackhole"). Where a real registry cannot misbehave on purpose (gzip-labelled blobs, a
``Retry-After`` in Unicode digits, a secret in a reason phrase, a manifest that is not JSON) a
small aiohttp upstream of the test's own stands in for it: :class:`FakeUpstream`, a fake, and
each test using it says so.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from entrepot.config import PolicyConfig, load_config
from entrepot.errors import ConfigError, UpstreamAddressRefused
from entrepot.upstream import AddressGuard, AiohttpTransport, UpstreamClient, UpstreamResponse
from entrepot.upstream.client import _retry_after
from tests.conftest import InProcessServer
from tests.registries import Registry, ThreadedServer, push_test_image
from tests.test_registry_face import assert_oci_error
from tests.test_registry_routes import put_rule

Factory = Callable[..., InProcessServer]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def start(server_factory: Factory, upstream: str, cache: str = "") -> InProcessServer:
    """A server whose rule ``upstream-lib`` maps ``up/*`` to ``<upstream>/lib/*`` (plain http)."""
    extra = f'\n[upstreams."{upstream}"]\nurl = "http://{upstream}"\n\n[cache]\n{cache}\n'
    server = server_factory(extra)
    put_rule(server, "upstream-lib", f"{upstream}/lib/*", "up/*")
    return server


def timed(url: str) -> tuple[requests.Response, float]:
    began = time.monotonic()
    answer = requests.get(url, timeout=120)
    return answer, time.monotonic() - began


@contextmanager
def blackhole(port: int) -> Iterator[list[socket.socket]]:
    """A socket on ``127.0.0.1:port`` that accepts every connection and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def run() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=run, name="blackhole", daemon=True)
    thread.start()
    try:
        yield accepted
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()


# -- 1. stale serving when the upstream stalls or is stopped --------------------------------------
@pytest.mark.slow
def test_a_stale_tag_is_served_quickly_from_a_stalled_upstream(
    server_factory: Factory, open_registry: Registry
) -> None:
    """The upstream accepts connections and never answers: the stale tag comes after one
    revalidation try (1 s), the next one at once without asking, an uncached tag gets its 502
    after one try (the 2 s stall limit), and the resting upstream is logged once."""
    digest = push_test_image(open_registry, "lib/stall", "v1")
    push_test_image(open_registry, "lib/stall", "v2")
    server = start(
        server_factory,
        open_registry.login_server,
        "tag_ttl_seconds = 0\nrevalidate_timeout_seconds = 1\nupstream_backoff_seconds = 30\n"
        "upstream_stall_seconds = 2\n",
    )
    url = f"{server.url}/v2/up/stall/manifests"
    assert requests.get(f"{url}/v1", timeout=30).headers["X-Entrepot-Cache"] == "miss"
    open_registry.stop()
    with blackhole(open_registry.port) as accepted:
        first, first_took = timed(f"{url}/v1")
        assert first.status_code == 200, first.text
        assert first.headers["X-Entrepot-Cache"] == "stale"
        assert first.headers["Docker-Content-Digest"] == digest
        assert 0.9 < first_took < 2.5, first_took  # one try of 1 s, not 3 x 15 s + backoff
        assert len(accepted) == 1  # asked once

        second, second_took = timed(f"{url}/v1")
        assert second.status_code == 200 and second.headers["X-Entrepot-Cache"] == "stale"
        assert second_took < 0.5, second_took
        assert len(accepted) == 1  # not asked: it rests

        uncached, uncached_took = timed(f"{url}/v2")  # no copy: asked, once
        assert_oci_error(uncached, 502, "UNAVAILABLE")
        assert uncached_took < 5, uncached_took
        assert len(accepted) == 2
    log = server.log()
    assert log.count("could not be asked") == 1, log
    assert "cache rule 'upstream-lib'" in log


def test_a_stale_tag_is_served_at_once_from_a_stopped_upstream(
    server_factory: Factory, open_registry: Registry
) -> None:
    """A stopped docker-registry: the first stale answer takes no retries, the next ones do
    not even try; an uncached tag is 502 and one WARNING names the rule (rate-limited)."""
    digest = push_test_image(open_registry, "lib/down", "v1")
    push_test_image(open_registry, "lib/down", "v2")
    server = start(server_factory, open_registry.login_server, "tag_ttl_seconds = 0\n")
    url = f"{server.url}/v2/up/down/manifests"
    assert requests.get(f"{url}/v1", timeout=30).headers["X-Entrepot-Cache"] == "miss"
    open_registry.stop()

    first, first_took = timed(f"{url}/v1")
    assert first.status_code == 200 and first.headers["X-Entrepot-Cache"] == "stale"
    assert first.headers["Docker-Content-Digest"] == digest
    assert first_took < 0.5, first_took  # no retries (0.25 + 0.5 s of backoff before)
    for _ in range(3):
        again, took = timed(f"{url}/v1")
        assert again.headers["X-Entrepot-Cache"] == "stale" and took < 0.3, took
    for _ in range(2):
        error = assert_oci_error(requests.get(f"{url}/v2", timeout=30), 502, "UNAVAILABLE")
        assert "cache rule 'upstream-lib'" in error["message"]
    log = server.log()
    assert log.count("could not be asked") == 1, log
    failed = [x for x in log.splitlines() if "WARNING entrepot.proxy: pulling through" in x]
    assert len(failed) == 1 and "cache rule 'upstream-lib'" in failed[0], log  # rate-limited
    assert open_registry.login_server in failed[0]


# -- 2./3. credential sets: warnings for the operator, nothing internal for the client ------------
def test_credential_set_failures_are_logged_and_never_shown_to_clients(
    server_factory: Factory, basic_registry: Registry
) -> None:
    from tests.test_credential_health import Api, create, kv, upstreams

    push_test_image(basic_registry, "lib/private", "v1")
    server = server_factory(upstreams(basic_registry.login_server))
    api = Api(server)
    api.vault("pullvault")
    api.secret("pullvault", "user", basic_registry.username)
    api.secret("pullvault", "pass", basic_registry.password)
    with server.client() as client:
        good = create(
            client, "good-creds", basic_registry.login_server,
            kv("pullvault", "user"), kv("pullvault", "pass"),
        )  # fmt: skip
        api.grant("pullvault", good.identity.principal_id)
        broken = create(
            client, "broken-creds", basic_registry.login_server,
            kv("pullvault", "user"), kv("pullvault", "no-such-secret"),
        )  # fmt: skip
        api.grant("pullvault", broken.identity.principal_id)
    for rule, target, creds in (
        ("good-rule", "good/*", "good"),
        ("broken-rule", "bad/*", "broken"),
    ):
        response = requests.put(
            f"{server.url}{server.registry_path}/cacheRules/{rule}",
            params={"api-version": "2025-04-01"},
            json={
                "properties": {
                    "sourceRepository": f"{basic_registry.login_server}/lib/*",
                    "targetRepository": target,
                    "credentialSetResourceId": f"{server.registry_path}/credentialSets/"
                    f"{creds}-creds",
                }
            },
            headers=server.headers(),
            timeout=30,
        )
        assert response.status_code in (200, 201), response.text
    internal = ("pullvault", "no-such-secret", "vault.azure.net", broken.identity.principal_id)

    missing = requests.get(f"{server.url}/v2/bad/private/manifests/v1", timeout=30)
    error = assert_oci_error(missing, 401, "UNAUTHORIZED")
    assert error["message"] == (
        f"The credential set 'broken-creds' of cache rule 'broken-rule' could not log in to "
        f"{basic_registry.login_server}; its credential health says why."
    )
    assert not [word for word in internal if word in missing.text], missing.text
    log = server.log()
    line = next(x for x in log.splitlines() if "cache rule 'broken-rule'" in x)
    assert "WARNING" in line and "no-such-secret" in line, line  # the details: in the log

    good_url = f"{server.url}/v2/good/private/manifests/v1"
    assert requests.get(good_url, timeout=30).status_code == 200
    basic_registry.set_password("rotated-" + basic_registry.password)
    refused = requests.get(f"{server.url}/v2/good/private/manifests/v2", timeout=30)
    error = assert_oci_error(refused, 401, "UNAUTHORIZED")
    assert "credential set 'good-creds' of cache rule 'good-rule'" in error["message"]
    assert "credential health" in error["message"]
    assert good.identity.principal_id not in refused.text
    assert basic_registry.password not in refused.text
    log = server.log()
    warned = [x for x in log.splitlines() if "refused the credentials of credential set" in x]
    assert warned and "WARNING" in warned[0] and "good-rule" in warned[0], log
    assert basic_registry.password not in log and basic_registry.username not in log


# -- a fake upstream for answers a real registry does not give ------------------------------------
class FakeUpstream:
    """A FAKE registry (aiohttp, in a thread): ``/v2/`` and ``lib/<case>`` answers that Debian's
    docker-registry cannot be made to give. Records each request's ``Accept-Encoding``."""

    def __init__(self) -> None:
        self.layer = gzip.compress(b"layer bytes stored gzip-compressed\n" * 100, mtime=0)
        self.config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}'
        self.manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": sha256(self.config),
                    "size": len(self.config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": sha256(self.layer),
                        "size": len(self.layer),
                    }
                ],
            },
            separators=(",", ":"),
        ).encode()
        self.encodings: list[str] = []
        app = web.Application()
        app.router.add_get("/v2/", self._ping)
        app.router.add_route("*", "/v2/lib/{case}/{kind}/{ref}", self._answer)
        self.server = ThreadedServer(app)

    def __enter__(self) -> FakeUpstream:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    @property
    def host(self) -> str:
        return self.server.host

    async def _ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.encodings.append(request.headers.get("Accept-Encoding", ""))
        case, kind, ref = (request.match_info[k] for k in ("case", "kind", "ref"))
        if case == "ratelimited":
            return web.Response(status=429, headers={"Retry-After": "\u00b2"})
        if case == "reason":
            return web.Response(status=502, reason="Bad Basic ZXZpbDpodW50ZXIy")
        if case == "invalid" and kind == "manifests":
            return web.Response(body=b"this is not json", content_type=OCI_MANIFEST)
        if case == "gzip" and kind == "manifests":  # compressed although asked for identity
            body = gzip.compress(self.manifest)
            return web.Response(
                body=body,
                headers={
                    "Content-Type": OCI_MANIFEST,
                    "Content-Encoding": "gzip",
                    "Docker-Content-Digest": sha256(self.manifest),
                },
            )
        if case == "gzip" and kind == "blobs" and ref == sha256(self.layer):
            # object-store metadata: the stored (gzip) bytes labelled Content-Encoding: gzip
            return web.Response(
                body=self.layer,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Encoding": "gzip",
                    "Docker-Content-Digest": ref,
                },
            )
        return web.json_response({"errors": [{"code": "NOT_FOUND"}]}, status=404)


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
def fake_server(server_factory: Factory, fake_upstream: FakeUpstream) -> InProcessServer:
    return start(server_factory, fake_upstream.host)


def test_gzip_labelled_blobs_are_cached_as_the_bytes_sent(
    fake_server: InProcessServer, fake_upstream: FakeUpstream
) -> None:
    """With the FAKE upstream: blobs are bytes by digest (never decoded), a manifest an
    upstream compresses anyway is decoded, and entrepot asks for ``identity``."""
    base = f"{fake_server.url}/v2/up/gzip"
    manifest = requests.get(f"{base}/manifests/v1", timeout=30)
    assert manifest.status_code == 200, manifest.text
    assert manifest.content == fake_upstream.manifest
    assert manifest.headers["Docker-Content-Digest"] == sha256(fake_upstream.manifest)
    layer = sha256(fake_upstream.layer)
    for origin in ("miss", "hit"):
        blob = requests.get(f"{base}/blobs/{layer}", timeout=30, stream=True)
        raw = blob.raw.read(decode_content=False)
        assert blob.status_code == 200, raw
        assert raw == fake_upstream.layer and sha256(raw) == layer
        assert blob.headers["X-Entrepot-Cache"] == origin
        assert "Content-Encoding" not in blob.headers  # served as what it is: bytes
    assert fake_upstream.encodings and set(fake_upstream.encodings) == {"identity"}


def test_retry_after_in_unicode_digits_is_a_429(
    fake_server: InProcessServer, fake_upstream: FakeUpstream
) -> None:
    """With the FAKE upstream: ``Retry-After: ²`` (a Unicode digit) is no number: the 429 is
    retried with the usual backoff and answered ``TOOMANYREQUESTS``, not a 500."""
    answer = requests.get(f"{fake_server.url}/v2/up/ratelimited/manifests/v1", timeout=30)
    error = assert_oci_error(answer, 429, "TOOMANYREQUESTS")
    assert "cache rule 'upstream-lib'" in error["message"]
    assert "Traceback" not in fake_server.log()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("\u00b2", None), ("\u0663", None), ("\uff11\uff12", None), ("120", 120.0), ("", None)],
)
def test_retry_after_and_content_length_take_ascii_digits_only(
    value: str, seconds: float | None
) -> None:
    headers = CIMultiDictProxy(CIMultiDict({"Retry-After": value, "Content-Length": value}))
    assert _retry_after(headers) == seconds
    response = UpstreamResponse(200, headers, URL("http://upstream.test/v2/"), _NoBody())
    assert response.content_length == (None if seconds is None else int(seconds))


class _NoBody:
    async def read_chunk(self, size: int) -> bytes:
        return b""

    async def close(self) -> None:
        return None


def test_the_reason_phrase_of_an_upstream_is_never_repeated(
    fake_server: InProcessServer, fake_upstream: FakeUpstream
) -> None:
    """With the FAKE upstream: a 502 whose reason phrase carries a base64 secret."""
    answer = requests.get(f"{fake_server.url}/v2/up/reason/manifests/v1", timeout=30)
    error = assert_oci_error(answer, 502, "UNKNOWN")
    assert "answered 502" in error["message"] and "upstream-lib" in error["message"]
    assert "ZXZp" not in answer.text and "Bad Basic" not in answer.text
    assert "ZXZp" not in fake_server.log()


def test_an_invalid_manifest_from_upstream_is_a_502_naming_the_rule(
    fake_server: InProcessServer, fake_upstream: FakeUpstream
) -> None:
    """With the FAKE upstream: not JSON is the upstream's fault (502), not the client's (400)."""
    answer = requests.get(f"{fake_server.url}/v2/up/invalid/manifests/v1", timeout=30)
    error = assert_oci_error(answer, 502, "UNKNOWN")
    assert "invalid manifest" in error["message"]
    assert "cache rule 'upstream-lib'" in error["message"]


# -- 6. the address guard ----------------------------------------------------------------------
async def test_an_address_guard_refusal_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    guard = AddressGuard.from_config(PolicyConfig(), {})
    transport = AiohttpTransport(guard=guard)
    client = UpstreamClient(transport, {}, retries=2, backoff=0.25)
    caplog.set_level(logging.WARNING, logger="entrepot.upstream")
    began = time.monotonic()
    try:
        with pytest.raises(UpstreamAddressRefused):
            await client.request("GET", "127.0.0.1:9", "/v2/x/manifests/y", credentials=None)
    finally:
        await transport.close()
    assert time.monotonic() - began < 0.25  # no backoff of 0.25 + 0.5 s
    refusals = [r for r in caplog.records if "upstream address guard refused" in r.message]
    assert len(refusals) == 1, [r.message for r in caplog.records]


# -- 8. upstream URLs in the config ------------------------------------------------------------
@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:5055/v2/", "http://127.0.0.1:5055/v2", "https://mirror.test/x/"]
)
def test_an_upstream_url_with_a_path_is_refused(tmp_path: Path, url: str) -> None:
    path = tmp_path / "entrepot.toml"
    path.write_text(f'[upstreams."docker.io"]\nurl = "{url}"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert 'upstreams."docker.io".url' in message and "without a path" in message, message


@pytest.mark.parametrize("url", ["http://127.0.0.1:5055", "http://127.0.0.1:5055/"])
def test_an_upstream_url_without_a_path_is_accepted(tmp_path: Path, url: str) -> None:
    path = tmp_path / "entrepot.toml"
    path.write_text(f'[upstreams."docker.io"]\nurl = "{url}"\n', encoding="utf-8")
    config = load_config(path, env={})
    assert config.upstreams["docker.io"].url == "http://127.0.0.1:5055"


def test_one_failing_path_does_not_make_the_upstream_rest(
    server_factory: Factory, fake_upstream: FakeUpstream
) -> None:
    """With the FAKE upstream: a 5xx for one repository (any client can ask for a broken name)
    says nothing of the others, so the upstream does not rest: a cached tag of another
    repository is still revalidated with it (``miss``), not served ``stale``."""
    server = start(server_factory, fake_upstream.host, "tag_ttl_seconds = 0\n")
    good = f"{server.url}/v2/up/gzip/manifests/v1"
    assert requests.get(good, timeout=30).headers["X-Entrepot-Cache"] == "miss"
    for _ in range(2):
        broken = requests.get(f"{server.url}/v2/up/reason/manifests/v1", timeout=30)
        assert broken.status_code == 502, broken.text
    again = requests.get(good, timeout=30)
    assert again.status_code == 200 and again.headers["X-Entrepot-Cache"] == "miss", again.headers
    assert "could not be asked" not in server.log()
