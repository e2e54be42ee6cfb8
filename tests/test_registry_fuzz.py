"""Property-based fuzzing of the registry face (``/v2/``) with hypothesis, against a real
in-process entrepot whose rules pull from a real upstream (Debian's ``docker-registry`` on
127.0.0.1; ``docker.io`` is pointed at it too, so nothing leaves loopback).

Requests are sent byte for byte as drawn (``http.client``: no client normalises ``..`` or
case away): random methods on paths under ``/v2/`` with ``..``, ``%2e%2e``, upper case, very
long names, malformed digests (``sha256:xyz``, ``md5:``, unknown algorithms, wrong lengths),
references with bad characters, queries with huge, negative and non-numeric ``n``, odd
``last`` and ``ns``, bad ``Range`` headers on blobs and unknown ``Accept`` media types. Every
answer must be a success or a well-formed OCI error of the error table (status and code as
:mod:`entrepot.errors` pairs them), never a 5xx, always with
``Docker-Distribution-API-Version`` and ``X-Request-Id``; a successful manifest or blob must be
the bytes its digest names; and the server must log no traceback.

The registry face's answers to authentication are fuzzed in ``tests/test_arm_fuzz.py``
(``fuzz_registry_face``); this module fuzzes what lies behind it, with content cached.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from entrepot import errors as e
from tests.conftest import InProcessServer, _new_server
from tests.registries import OciImage, push_test_image, start_registry
from tests.test_registry_routes import put_rule

pytestmark = pytest.mark.slow  # hundreds of requests, and an upstream with an image
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DIGEST_SHAPE = re.compile(r"sha256:[0-9a-f]{64}")
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


def _table() -> set[tuple[str, int]]:
    """Every ``(OCI code, status)`` pair of the error table."""
    pairs: set[tuple[str, int]] = set()
    todo: list[type[e.EntrepotError]] = [e.EntrepotError]
    while todo:
        kind = todo.pop()
        pairs.add((kind.kind.oci_code, kind.kind.status))
        todo.extend(kind.__subclasses__())
    return pairs


ERROR_TABLE = _table()


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


class Face:
    """The server, what it caches (``blobs`` by digest, the image's ``manifest`` and ``layer``
    digests), and the requests sent so far (``count``, and how many got each status)."""

    def __init__(self, server: InProcessServer, upstream: str, image: OciImage) -> None:
        self.server = server
        self.upstream = upstream
        self.blobs = dict(image.blobs)
        self.manifest = image.digest
        self.layer = image.layer_digest
        self.config = image.config_digest
        self.count = 0
        self.statuses: dict[int, int] = {}

    def __repr__(self) -> str:  # hypothesis prints it with every failing example
        return f"Face(port={self.server.port})"

    def send(self, method: str, target: str, headers: dict[str, str] | None = None) -> Answer:
        """Send ``method target`` exactly as given and check what every answer must keep."""
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            conn.endheaders()
            response = conn.getresponse()
            answer = Answer(response.status, response.headers, response.read())
        finally:
            conn.close()
        self.count += 1
        self.statuses[answer.status] = self.statuses.get(answer.status, 0) + 1
        check(method, target, answer, self.blobs)
        return answer


def check(method: str, target: str, answer: Answer, blobs: dict[str, bytes]) -> None:
    where = f"{method} {target[:300]} -> {answer.status} {answer.body[:300]!r}"
    headers = answer.headers
    assert 200 <= answer.status < 500, where
    assert headers.get("Docker-Distribution-API-Version") == "registry/2.0", where
    assert headers.get("X-Request-Id"), where
    assert headers.get("x-ms-request-id") is None, where
    if method == "HEAD":
        assert answer.body == b"", where
    if answer.status == 416:  # a range the blob does not have: its size, no body
        assert re.fullmatch(r"bytes \*/\d+", headers.get("Content-Range", "")), where
        return
    if answer.status >= 400:
        if method == "HEAD":
            return
        assert headers.get("Content-Type") == "application/json", where
        body = json.loads(answer.body)
        assert isinstance(body, dict) and set(body) == {"errors"}, where
        assert len(body["errors"]) == 1, where
        error = body["errors"][0]
        assert set(error) == {"code", "message", "detail"}, where
        assert (error["code"], answer.status) in ERROR_TABLE, where
        assert isinstance(error["message"], str) and error["message"], where
        assert error["detail"] is None or set(error["detail"]) == {"target"}, where
        return
    digest = headers.get("Docker-Content-Digest")
    if method != "GET" or digest is None:
        return
    assert DIGEST_SHAPE.fullmatch(digest), where
    if answer.status == 206:
        found = CONTENT_RANGE.fullmatch(headers.get("Content-Range", ""))
        assert found is not None, where
        start, end, size = (int(g) for g in found.groups())
        assert len(answer.body) == end - start + 1 and end < size, where
        if digest in blobs:
            assert answer.body == blobs[digest][start : end + 1], where
        return
    assert answer.status == 200, where
    assert "sha256:" + hashlib.sha256(answer.body).hexdigest() == digest, where
    assert headers.get("Content-Length") == str(len(answer.body)), where


@pytest.fixture(scope="module")
def face(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Face]:
    """An upstream with ``lib/fz:v1``, and a server with ``up/*`` -> ``<upstream>/lib/*`` and
    ``hub/*`` -> ``docker.io/library/*`` (docker.io being the same upstream), with ``up/fz:v1``
    and its layer pulled once (cached)."""
    upstream = start_registry(tmp_path_factory.mktemp("upstream"), "open")
    server: InProcessServer | None = None
    try:
        push_test_image(upstream, "lib/fz", "v1", content=bytes(range(256)) * 40)
        image = upstream.images[("lib/fz", "v1")]
        extra = "".join(
            f'\n[upstreams."{host}"]\nurl = "{upstream.url}"\n'
            for host in (upstream.login_server, "docker.io")
        )
        server = _new_server(InProcessServer, tmp_path_factory.mktemp("face"), "srv", extra)
        server.start()
        put_rule(server, "up-lib", f"{upstream.login_server}/lib/*", "up/*")
        put_rule(server, "hub-lib", "docker.io/library/*", "hub/*")
        found = Face(server, upstream.login_server, image)
        assert found.send("GET", "/v2/up/fz/manifests/v1").status == 200
        assert found.send("GET", f"/v2/up/fz/blobs/{image.layer_digest}").status == 200
        yield found
    finally:
        if server is not None:
            server.stop()
        upstream.stop()


def assert_clean_log(server: InProcessServer) -> None:
    log = server.log()
    for sign in ("Traceback", "unhandled error", " ERROR "):
        assert sign not in log, log[-5000:]


# -- strategies -----------------------------------------------------------------------------------
LAYER = "@layer"  # replaced by the cached layer's digest
CONFIG = "@config"  # replaced by the image config's digest (not cached until asked)
MANIFEST = "@manifest"  # replaced by the cached manifest's digest
UPSTREAM = "@upstream"  # replaced by the upstream's login server (mirror mode: ?ns=)
MAX_TARGET = 8000  # longer request lines are refused by the HTTP parser, before any route
names = st.one_of(
    st.sampled_from(
        [
            "up/fz",
            "up/fz",
            "up/nothing",
            "hub/alpine",
            "UP/fz",
            "up/FZ",
            "up/../up/fz",
            "up/%2e%2e/fz",
            "up/%2E%2E",
            "..",
            "up/./fz",
            "up//fz",
            "up/fz/",
            "/up/fz",
            "_catalog",
            "up/_catalog",
            "up/fz%2Fx",
            "up/f%00z",
            "up/" + "a" * 255,
            "up/" + "a" * 3000,
            "up/" + "/".join(["a"] * 400),
            "up/a.-b",
            "up/a__b",
            "up/a___b",
            "up/-a",
            "up/a-",
            "%75p/fz",
            "lib/fz",  # with ?ns=<upstream>: mirror mode, the same repository as up/fz
            "library/alpine",
            "alpine",
        ]
    ),
    st.from_regex(r"up/[a-zA-Z0-9._/-]{1,40}", fullmatch=True),
    st.from_regex(r"[a-zA-Z0-9._/%-]{1,60}", fullmatch=True),
    st.text(max_size=40).map(lambda s: quote(s, safe="/")),
)
digests = st.one_of(
    st.sampled_from(
        [
            LAYER,
            CONFIG,
            MANIFEST,
            "sha256:xyz",
            "sha256:",
            "sha256:" + "a" * 63,
            "sha256:" + "a" * 65,
            "sha256:" + "A" * 64,
            "sha256:" + "g" * 64,
            "sha256:" + "0" * 64,
            "SHA256:" + "a" * 64,
            "md5:" + "c" * 32,
            "sha512:" + "b" * 128,
            "sha512:" + "b" * 64,
            "blake3:" + "d" * 64,
            "sha256+b64u:" + "e" * 43,
            "x:y",
            ":" + "a" * 64,
            "sha256" + "a" * 64,
            "sha256:" + "a" * 5000,
            "%73ha256:" + "a" * 64,
        ]
    ),
    st.from_regex(r"[a-z0-9+._-]{1,10}:[a-zA-Z0-9=_-]{0,130}", fullmatch=True),
)
tags = st.one_of(
    st.sampled_from(
        [
            "v1",
            "V1",
            "latest",
            "nope",
            "-v1",
            ".v1",
            "v1!",
            "v%201",
            "a" * 128,
            "a" * 129,
            "..",
            "%2e%2e",
            "v1/x",
            "v1:x",
            "%00",
            "%FF",
            "",
        ]
    ),
    st.from_regex(r"[A-Za-z0-9_.-]{1,130}", fullmatch=True),
    st.text(max_size=30).map(lambda s: quote(s, safe="")),
)
routes = st.one_of(
    st.tuples(st.just("manifests/"), tags | digests),
    st.tuples(st.just("blobs/"), digests),
    st.tuples(st.just("referrers/"), digests),
    st.tuples(st.sampled_from(["tags/list", "tags/list/", "tags/", "blobs/uploads/"]), st.just("")),
    st.tuples(st.sampled_from(["blobs/uploads/", "manifests", "blobs", "x/"]), tags),
)
numbers = st.one_of(
    st.sampled_from(
        [
            "0",
            "1",
            "2",
            "1000",
            "1001",
            "-1",
            "-0",
            "+1",
            "1.5",
            "1e3",
            "0x10",
            " 1",
            "",
            "1" + "0" * 30,
            "9" * 4000,
            "0" * 50 + "3",
            "NaN",
            "%F0%9F%98%80",
            "\u0661",
        ]
    ),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
)
query_items = st.one_of(
    st.tuples(st.just("n"), numbers),
    st.tuples(st.just("last"), st.sampled_from(["", "v1", "zzz", "up/fz", "~", "\x00"]) | tags),
    st.tuples(
        st.just("ns"),
        st.sampled_from(
            [
                UPSTREAM,
                UPSTREAM,
                "docker.io",
                "DOCKER.IO",
                "index.docker.io",
                "quay.io",
                "",
                "not a host",
                "127.0.0.1:1",
                "[::1]:5000",
                "a" * 300,
                "docker.io/library",
                "%FF",
            ]
        )
        | st.text(max_size=30),
    ),
    st.tuples(st.just("artifactType"), st.text(max_size=30)),
    st.tuples(st.text(max_size=8), st.text(max_size=20)),
)
accepts = st.one_of(
    st.just(None),
    st.sampled_from(
        [
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.oci.image.index.v1+json",
            "application/x-unknown",
            "*/*",
            "text/html;q=0.9, */*;q=0.1",
            "garbage",
            ";;;,,,",
            "application/json;q=abc",
            "",
        ]
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
)
ranges = st.one_of(
    st.sampled_from(
        [
            "bytes=0-0",
            "bytes=0-9",
            "bytes=5-",
            "bytes=-5",
            "bytes=-0",
            "bytes=9-5",
            "bytes=0-99999999999",
            "bytes=99999999999-",
            "bytes=" + "9" * 40 + "-",
            "bytes=-" + "9" * 40,
            "bytes=0-1,4-5",
            "bytes=0-1,x",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes = 1-2",
            "items=0-1",
            "BYTES=0-1",
            "0-1",
            "",
        ]
    ),
    st.builds(
        lambda a, b: f"bytes={a}-{b}",
        st.integers(min_value=0, max_value=20000).map(str) | st.just(""),
        st.integers(min_value=0, max_value=20000).map(str) | st.just(""),
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)
# The HTTP parser itself refuses methods it does not know, before any route (web/serving.py
# answers those): every method it knows may come.
methods = st.sampled_from(
    ["GET", "GET", "GET", "HEAD", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]
) | st.sampled_from(["PROPFIND", "MKCOL", "COPY", "MOVE", "LOCK", "PURGE", "REPORT", "SEARCH"])


def with_query(face: Face, path: str, query: list[tuple[str, str]]) -> str:
    """``path`` and the query, percent-encoded, if the whole fits the HTTP parser's limit."""
    if query:
        pairs = ((k, v.replace(UPSTREAM, face.upstream)) for k, v in query)
        path += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)
    assume(len(path) <= MAX_TARGET)
    return path


def target(face: Face, name: str, route: tuple[str, str], query: list[tuple[str, str]]) -> str:
    """The request target: ``/v2/<name>/<route>`` and the query."""
    kind, argument = route
    for placeholder, digest in (
        (LAYER, face.layer),
        (CONFIG, face.config),
        (MANIFEST, face.manifest),
    ):
        argument = argument.replace(placeholder, digest)
    return with_query(face, f"/v2/{name}/{kind}{argument}", query)


# -- the fuzz tests -------------------------------------------------------------------------------
@settings(FUZZ, max_examples=500)
@given(
    method=methods,
    name=names,
    route=routes,
    query=st.lists(query_items, max_size=3),
    accept=accepts,
)
def fuzz_pulls(
    face: Face,
    method: str,
    name: str,
    route: tuple[str, str],
    query: list[tuple[str, str]],
    accept: str | None,
) -> None:
    headers = {} if accept is None else {"Accept": accept}
    face.send(method, target(face, name, route, query), headers)


@settings(FUZZ, max_examples=300)
# one satisfiable and one unsatisfiable range always, whatever the random examples are
@example(method="GET", name="up/fz", digest=LAYER, header="bytes=0-9", ns=None)
@example(method="GET", name="up/fz", digest=LAYER, header="bytes=99999999999-", ns=None)
@given(
    method=st.sampled_from(["GET", "GET", "GET", "HEAD"]),
    name=st.sampled_from(["up/fz", "up/fz", "up/nothing", "UP/fz", "up/../up/fz", "lib/fz"]),
    digest=st.sampled_from([LAYER, LAYER, LAYER, CONFIG, MANIFEST, "sha256:" + "0" * 64]) | digests,
    header=ranges,
    ns=st.sampled_from([None, None, UPSTREAM, "127.0.0.1:1", "docker.io"]),
)
def fuzz_blob_ranges(
    face: Face, method: str, name: str, digest: str, header: str, ns: str | None
) -> None:
    query = [] if ns is None else [("ns", ns)]
    face.send(method, target(face, name, ("blobs/", digest), query), {"Range": header})


@settings(FUZZ, max_examples=150)
@given(
    method=methods,
    path=st.one_of(
        st.sampled_from(
            [
                "/v2",
                "/v2/",
                "/v2/_catalog",
                "/v2/_catalog/",
                "/v2/_CATALOG",
                "/v2//",
                "/v2/..",
                "/v2/%2e%2e/",
                "/v2/../v2/",
                "/v2/" + "a" * 6000,
            ]
        ),
        st.text(max_size=60).map(lambda s: "/v2/" + quote(s, safe="/%")),
    ),
    query=st.lists(query_items, max_size=3),
)
def fuzz_top_level(face: Face, method: str, path: str, query: list[tuple[str, str]]) -> None:
    face.send(method, with_query(face, path, query))


def test_fuzz_pulls(face: Face) -> None:
    sent = face.count
    fuzz_pulls(face)
    assert face.count - sent >= 500
    assert_clean_log(face.server)


def test_fuzz_blob_ranges(face: Face) -> None:
    sent = face.count
    fuzz_blob_ranges(face)
    assert face.count - sent >= 300
    assert {206, 416} <= set(face.statuses), face.statuses  # both kinds of range answer seen
    assert_clean_log(face.server)


def test_fuzz_top_level(face: Face) -> None:
    sent = face.count
    fuzz_top_level(face)
    assert face.count - sent >= 150
    assert_clean_log(face.server)


def test_the_fuzzed_server_still_serves(face: Face) -> None:
    """After everything above, the cached image is served whole, as before."""
    answer = face.send("GET", f"/v2/up/fz/manifests/{face.manifest}")
    assert answer.status == 200
    layer = face.send("GET", f"/v2/up/fz/blobs/{face.layer}")
    assert layer.status == 200 and layer.body == face.blobs[face.layer]
