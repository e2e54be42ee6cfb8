"""The upstream client against real registries (``tests/registries.py``) and small fakes.

The registries are Debian's ``docker-registry`` processes: htpasswd (Basic) auth, token auth
behind the tests' JWT issuer, and no auth. Fakes (aiohttp servers on other ports) only stand
in where a real registry cannot be made to misbehave: TLS failures, redirects to another
host, 429 and 5xx.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from entrepot.config import UpstreamEndpoint
from entrepot.errors import (
    InvalidPropertyValue,
    UpstreamAuthenticationFailed,
    UpstreamError,
    UpstreamTlsError,
    UpstreamTooManyRequests,
    UpstreamUnreachable,
)
from entrepot.upstream import (
    Challenge,
    UpstreamClient,
    parse_www_authenticate,
    resolve_endpoint,
)
from tests.registries import (
    OCI_MANIFEST,
    Registry,
    ThreadedServer,
    TokenServer,
    free_port,
    push_test_image,
    self_signed,
)

HUB = "https://auth.docker.io/token"

# -- WWW-Authenticate ----------------------------------------------------------------------------

CHALLENGES: list[tuple[str, list[Challenge]]] = [
    ("", []),
    ("Basic", [Challenge("basic")]),
    ('Basic realm="basic-realm"', [Challenge("basic", {"realm": "basic-realm"})]),
    (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/ubuntu:pull"',
        [
            Challenge(
                "bearer",
                {
                    "realm": HUB,
                    "service": "registry.docker.io",
                    "scope": "repository:library/ubuntu:pull",
                },
            )
        ],
    ),
    (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/ubuntu:pull",error="insufficient_scope"',
        [
            Challenge(
                "bearer",
                {
                    "realm": HUB,
                    "service": "registry.docker.io",
                    "scope": "repository:library/ubuntu:pull",
                    "error": "insufficient_scope",
                },
            )
        ],
    ),
    (
        'Bearer realm="https://r/token",scope="repository:a/b:pull,push"',
        [Challenge("bearer", {"realm": "https://r/token", "scope": "repository:a/b:pull,push"})],
    ),
    (
        'Bearer realm="r", error="invalid_token", error_description="expired, get a new one"',
        [
            Challenge(
                "bearer",
                {
                    "realm": "r",
                    "error": "invalid_token",
                    "error_description": "expired, get a new one",
                },
            )
        ],
    ),
    (
        'Basic realm="a", Bearer realm="b",service="c"',
        [Challenge("basic", {"realm": "a"}), Challenge("bearer", {"realm": "b", "service": "c"})],
    ),
    (  # RFC 7235 §4.1's example
        'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"',
        [
            Challenge("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
            Challenge("basic", {"realm": "simple"}),
        ],
    ),
    ('Basic realm="back\\\\slash \\q"', [Challenge("basic", {"realm": "back\\slash q"})]),
    ("Negotiate abc123==", [Challenge("negotiate", token68="abc123==")]),
    (
        'Negotiate a/b+c=, Basic realm="x"',
        [Challenge("negotiate", token68="a/b+c="), Challenge("basic", {"realm": "x"})],
    ),
    ('BEARER Realm="x", SERVICE=y', [Challenge("bearer", {"realm": "x", "service": "y"})]),
    (
        "Bearer realm=https://auth.example.com/token,service=reg",
        [Challenge("bearer", {"realm": "https://auth.example.com/token", "service": "reg"})],
    ),
    (
        'Bearer realm = "x" , service = "y"',
        [Challenge("bearer", {"realm": "x", "service": "y"})],
    ),
    ('Basic realm="first", realm="second"', [Challenge("basic", {"realm": "first"})]),
    ('Basic realm="unterminated', [Challenge("basic", {"realm": "unterminated"})]),
    (',, Basic realm="x",, ', [Challenge("basic", {"realm": "x"})]),
    ('Basic, Bearer realm="b"', [Challenge("basic"), Challenge("bearer", {"realm": "b"})]),
    ('Bearer realm="x" junk, service="s"', [Challenge("bearer", {"realm": "x", "service": "s"})]),
]


@pytest.mark.parametrize(("header", "expected"), CHALLENGES)
def test_parse_www_authenticate(header: str, expected: list[Challenge]) -> None:
    assert parse_www_authenticate(header) == expected


def test_parse_several_headers() -> None:
    got = parse_www_authenticate(['Basic realm="a"', 'Bearer realm="b"'])
    assert [c.scheme for c in got] == ["basic", "bearer"]
    assert got[1].realm == "b"
    assert got[1].get("REALM") == "b"


# -- endpoints -----------------------------------------------------------------------------------

ENDPOINTS: list[tuple[str, dict[str, str], str]] = [
    ("docker.io", {}, "https://registry-1.docker.io"),
    ("index.docker.io", {}, "https://registry-1.docker.io"),
    ("registry-1.docker.io", {}, "https://registry-1.docker.io"),
    ("Docker.IO", {}, "https://registry-1.docker.io"),
    ("ghcr.io", {}, "https://ghcr.io"),
    ("registry.example.com:5000", {}, "https://registry.example.com:5000"),
    ("127.0.0.1:5000", {}, "https://127.0.0.1:5000"),
    ("127.0.0.1:5000", {"127.0.0.1:5000": "http://127.0.0.1:5000"}, "http://127.0.0.1:5000"),
    ("docker.io", {"docker.io": "http://127.0.0.1:5001"}, "http://127.0.0.1:5001"),
    ("index.docker.io", {"docker.io": "http://127.0.0.1:5001"}, "http://127.0.0.1:5001"),
    ("ghcr.io", {"docker.io": "http://127.0.0.1:5001"}, "https://ghcr.io"),
    ("mirror.example", {"mirror.example": "https://m.example:8443/"}, "https://m.example:8443"),
]


@pytest.mark.parametrize(("login_server", "config", "expected"), ENDPOINTS)
def test_resolve_endpoint(login_server: str, config: dict[str, str], expected: str) -> None:
    upstreams = {k: UpstreamEndpoint(url=v) for k, v in config.items()}
    assert resolve_endpoint(login_server, upstreams) == URL(expected)


@pytest.mark.parametrize("bad", ["https://ghcr.io", "ghcr.io/org", "", "a b", "host:port"])
def test_resolve_endpoint_rejects_non_login_servers(bad: str) -> None:
    with pytest.raises(InvalidPropertyValue):
        resolve_endpoint(bad, {})


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def client_for(session: aiohttp.ClientSession, *registries: Registry, **kw: Any) -> UpstreamClient:
    upstreams: dict[str, UpstreamEndpoint] = {}
    for registry in registries:
        upstreams.update(registry.upstreams)
    return UpstreamClient(session, upstreams, **kw)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


# -- Basic ---------------------------------------------------------------------------------------


async def test_basic_login(session: aiohttp.ClientSession, basic_registry: Registry) -> None:
    client = client_for(session, basic_registry)
    result = await client.login(basic_registry.login_server, basic_registry.credentials)
    assert result.auth == "basic"
    assert result.verified and not result.anonymous
    assert result.endpoint == basic_registry.url
    assert (
        await client.token_for(basic_registry.login_server, basic_registry.credentials, None)
        is None
    )
    headers = await client.auth_headers(
        basic_registry.login_server, basic_registry.credentials, None
    )
    assert headers["Authorization"].startswith("Basic ")


async def test_basic_wrong_password(
    session: aiohttp.ClientSession, basic_registry: Registry
) -> None:
    client = client_for(session, basic_registry)
    with pytest.raises(UpstreamAuthenticationFailed) as info:
        await client.login(basic_registry.login_server, (basic_registry.username, "wrong-pw"))
    assert basic_registry.login_server in info.value.message
    assert "wrong-pw" not in str(info.value)
    with pytest.raises(UpstreamAuthenticationFailed, match="requires credentials"):
        await client.login(basic_registry.login_server, None)


async def test_basic_password_rotation(
    session: aiohttp.ClientSession, basic_registry: Registry
) -> None:
    client = client_for(session, basic_registry)
    old = basic_registry.credentials
    await client.login(basic_registry.login_server, old)
    basic_registry.set_password("rotated-pw-1")
    with pytest.raises(UpstreamAuthenticationFailed):
        await client.login(basic_registry.login_server, old)
    result = await client.login(basic_registry.login_server, basic_registry.credentials)
    assert result.verified


# -- Bearer --------------------------------------------------------------------------------------


async def test_token_login_get(session: aiohttp.ClientSession, token_registry: Registry) -> None:
    ts = token_registry.token_server
    assert ts is not None
    client = client_for(session, token_registry)
    result = await client.login(token_registry.login_server, token_registry.credentials)
    assert (result.auth, result.verified, result.anonymous) == ("bearer", True, False)
    assert [(h.method, h.username, h.status) for h in ts.hits] == [
        ("GET", token_registry.username, 200)
    ]


async def test_token_login_oauth2_post(
    session: aiohttp.ClientSession, token_registry: Registry
) -> None:
    ts = token_registry.token_server
    assert ts is not None
    ts.get_enabled = False
    client = client_for(session, token_registry)
    result = await client.login(token_registry.login_server, token_registry.credentials)
    assert result.verified
    assert [(h.method, h.status) for h in ts.hits] == [("GET", 405), ("POST", 200)]
    # The realm is remembered as OAuth2-only: a fresh login goes straight to POST.
    await client.login(
        token_registry.login_server, token_registry.credentials, "repository:a/b:pull", fresh=True
    )
    assert [(h.method, h.status) for h in ts.hits][2:] == [("POST", 200)]
    assert ts.hits[2].scopes == ("repository:a/b:pull",)


async def test_token_login_post_after_404(
    session: aiohttp.ClientSession, registry_factory: Callable[..., Registry]
) -> None:
    registry = registry_factory("token", get_enabled=False, get_disabled_status=404)
    client = client_for(session, registry)
    assert (await client.login(registry.login_server, registry.credentials)).verified
    assert registry.token_server is not None
    assert [h.method for h in registry.token_server.hits] == ["GET", "POST"]


async def test_token_wrong_password(
    session: aiohttp.ClientSession, token_registry: Registry
) -> None:
    ts = token_registry.token_server
    assert ts is not None
    client = client_for(session, token_registry)
    with pytest.raises(UpstreamAuthenticationFailed, match="token server"):
        await client.login(token_registry.login_server, (token_registry.username, "bad-pw-1"))
    ts.get_enabled = False
    client = client_for(session, token_registry)
    with pytest.raises(UpstreamAuthenticationFailed, match="token server"):
        await client.login(token_registry.login_server, (token_registry.username, "bad-pw-2"))
    assert [(h.method, h.status) for h in ts.hits][-2:] == [("GET", 405), ("POST", 400)]


async def test_token_anonymous(
    session: aiohttp.ClientSession, registry_factory: Callable[..., Registry]
) -> None:
    registry = registry_factory("token", public_repos={"public/app"})
    push_test_image(registry, "public/app", "v1")
    push_test_image(registry, "private/app", "v1")
    client = client_for(session, registry)
    result = await client.login(registry.login_server, None)
    assert (result.auth, result.verified, result.anonymous) == ("bearer", False, True)

    accept = {"Accept": OCI_MANIFEST}
    resp = await client.request(
        "GET",
        registry.login_server,
        "/v2/public/app/manifests/v1",
        credentials=None,
        headers=accept,
    )
    async with resp:
        assert resp.status == 200
        assert resp.headers["Docker-Content-Digest"] == registry.images[("public/app", "v1")].digest
    resp = await client.request(
        "GET",
        registry.login_server,
        "/v2/private/app/manifests/v1",
        credentials=None,
        headers=accept,
    )
    async with resp:
        assert resp.status == 401  # no access: returned, not raised

    assert registry.token_server is not None
    registry.token_server.allow_anonymous = False
    with pytest.raises(UpstreamAuthenticationFailed, match="anonymous"):
        await client_for(session, registry).login(registry.login_server, None)


async def test_request_pulls_with_scoped_token(
    session: aiohttp.ClientSession, token_registry: Registry
) -> None:
    digest = push_test_image(token_registry, "team/app", "v1")
    image = token_registry.images[("team/app", "v1")]
    client = client_for(session, token_registry)
    ls, creds = token_registry.login_server, token_registry.credentials
    resp = await client.request(
        "GET", ls, "/v2/team/app/manifests/v1", credentials=creds, headers={"Accept": OCI_MANIFEST}
    )
    async with resp:
        assert resp.status == 200
        assert await resp.read() == image.manifest
        assert resp.headers["Docker-Content-Digest"] == digest
    resp = await client.request(
        "GET", ls, f"/v2/team/app/blobs/{image.layer_digest}", credentials=creds
    )
    async with resp:
        assert resp.status == 200
        assert await resp.read() == image.blobs[image.layer_digest]

    token = await client.token_for(ls, creds, "repository:team/app:pull")
    assert token is not None
    claims = _claims(token)
    assert token_registry.token_server is not None
    assert claims["aud"] == token_registry.token_server.service
    assert claims["sub"] == token_registry.username
    assert claims["access"] == [{"type": "repository", "name": "team/app", "actions": ["pull"]}]


async def test_registry_rejects_tokens_of_another_key(
    session: aiohttp.ClientSession, token_registry: Registry
) -> None:
    """The JWT issuer is real: the registry checks the signature against its root bundle."""
    assert token_registry.token_server is not None
    good = token_registry.token_server.issue(token_registry.username, [])
    forged = TokenServer(users={}).issue(token_registry.username, [])
    for token, status in ((good, 200), (forged, 401)):
        headers = {"Authorization": f"Bearer {token}"}
        async with session.get(f"{token_registry.url}/v2/", headers=headers) as resp:
            assert resp.status == status


@pytest.mark.slow
async def test_token_cache(
    session: aiohttp.ClientSession, registry_factory: Callable[..., Registry]
) -> None:
    registry = registry_factory("token", expires_in=2)
    ts = registry.token_server
    assert ts is not None
    client = client_for(session, registry)
    ls, creds = registry.login_server, registry.credentials
    await client.login(ls, creds)
    await client.login(ls, creds)
    assert ts.count() == 1
    await client.login(ls, creds, "repository:a/b:pull")  # another scope: another token
    assert ts.count() == 2
    await client.login(ls, creds, fresh=True)
    assert ts.count() == 3
    await asyncio.sleep(2.0)  # 2 s lifetime minus a 0.5 s margin
    await client.login(ls, creds)
    assert ts.count() == 4

    # Another password is another cache entry: a rotation is checked at once.
    registry.set_password("rotated-pw-2")
    with pytest.raises(UpstreamAuthenticationFailed):
        await client.login(ls, (registry.username, "wrong-after-rotation"))
    assert (await client.login(ls, registry.credentials)).verified
    assert ts.count() == 6


async def test_concurrent_logins_fetch_one_token(
    session: aiohttp.ClientSession, token_registry: Registry
) -> None:
    client = client_for(session, token_registry)
    ls, creds = token_registry.login_server, token_registry.credentials
    await asyncio.gather(*(client.login(ls, creds) for _ in range(5)))
    assert token_registry.token_server is not None
    assert token_registry.token_server.count() == 1


# -- open registry -------------------------------------------------------------------------------


async def test_open_registry(session: aiohttp.ClientSession, open_registry: Registry) -> None:
    client = client_for(session, open_registry)
    result = await client.login(open_registry.login_server, None)
    assert (result.auth, result.verified, result.anonymous) == ("none", False, True)
    # Credentials given but never asked for: healthy, unverified (also with a scope).
    result = await client.login(open_registry.login_server, ("someone", "anything"))
    assert (result.auth, result.verified, result.anonymous) == ("none", False, False)
    result = await client.login(
        open_registry.login_server, ("someone", "anything"), "repository:x/y:pull"
    )
    assert not result.verified
    assert await client.auth_headers(open_registry.login_server, None, None) == {}


async def test_anonymous_v2_but_private_repository(session: aiohttp.ClientSession) -> None:
    """``/v2/`` open, the repository behind Basic: a scope lets login check the credentials."""

    async def v2(request: web.Request) -> web.Response:
        return web.json_response({})

    async def tags(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") == _basic("u", "right"):
            return web.json_response({"name": "x/y", "tags": []})
        return web.json_response({}, status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    app = web.Application()
    app.router.add_get("/v2/", v2)
    app.router.add_get("/v2/x/y/tags/list", tags)
    with ThreadedServer(app) as server:
        client = UpstreamClient(session, {server.host: UpstreamEndpoint(server.url)})
        ok = await client.login(server.host, ("u", "right"), "repository:x/y:pull")
        assert (ok.auth, ok.verified) == ("none", True)
        with pytest.raises(UpstreamAuthenticationFailed):
            await client.login(server.host, ("u", "wrong"), "repository:x/y:pull")
        assert not (await client.login(server.host, ("u", "wrong"))).verified


# -- transport failures --------------------------------------------------------------------------


async def test_unreachable(session: aiohttp.ClientSession) -> None:
    port = free_port()
    login_server = f"127.0.0.1:{port}"
    client = UpstreamClient(
        session, {login_server: UpstreamEndpoint(f"http://{login_server}")}, retries=1, backoff=0.01
    )
    with pytest.raises(UpstreamUnreachable) as info:
        await client.login(login_server, ("user", "secret-pw-unreachable"))
    assert login_server in info.value.message
    assert "secret-pw-unreachable" not in info.value.message


@pytest.mark.slow
async def test_timeout_is_unreachable(session: aiohttp.ClientSession) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/v2/", slow)
    with ThreadedServer(app) as server:
        client = UpstreamClient(
            session, {server.host: UpstreamEndpoint(server.url)}, timeout=0.3, retries=0
        )
        with pytest.raises(UpstreamUnreachable, match="did not answer"):
            await client.login(server.host, None)


async def test_tls_error(session: aiohttp.ClientSession, tmp_path: Path) -> None:
    keys = self_signed("untrusted test upstream", hosts=("127.0.0.1",))
    crt, key = keys.write(tmp_path, "upstream")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(crt, key)

    async def v2(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/v2/", v2)
    with ThreadedServer(app, ssl_context=context) as server:
        assert server.url.startswith("https://")
        client = UpstreamClient(session, {server.host: UpstreamEndpoint(server.url)})
        with pytest.raises(UpstreamTlsError) as info:
            await client.login(server.host, ("user", "tls-secret-pw"))
        assert server.host in info.value.message
        assert "tls-secret-pw" not in info.value.message
        # Plain http spoken to the TLS port is no TLS error but a failed exchange.
        plain = UpstreamClient(session, {server.host: UpstreamEndpoint(f"http://{server.host}")})
        with pytest.raises(UpstreamError):
            await plain.login(server.host, None)
    # And an https endpoint pointed at a plain-http registry port.
    http_app = web.Application()
    http_app.router.add_get("/v2/", v2)
    with ThreadedServer(http_app) as server:
        client = UpstreamClient(session, {server.host: UpstreamEndpoint(f"https://{server.host}")})
        with pytest.raises(UpstreamTlsError):
            await client.login(server.host, None)


async def test_429_and_5xx(session: aiohttp.ClientSession) -> None:
    hits = {"/v2/": 0}
    status = {"code": 429}

    async def v2(request: web.Request) -> web.Response:
        hits["/v2/"] += 1
        headers = {"Retry-After": "120"} if status["code"] == 429 else {}
        return web.json_response({}, status=status["code"], headers=headers)

    app = web.Application()
    app.router.add_get("/v2/", v2)
    with ThreadedServer(app) as server:
        client = UpstreamClient(
            session, {server.host: UpstreamEndpoint(server.url)}, retries=2, backoff=0.01
        )
        with pytest.raises(UpstreamTooManyRequests, match="retry after 120 s"):
            await client.login(server.host, None)
        assert hits["/v2/"] == 1  # Retry-After beyond max_retry_after: not waited for
        status["code"] = 503
        with pytest.raises(UpstreamError) as info:
            await client.login(server.host, None)
        assert type(info.value) is UpstreamError
        assert "503" in info.value.message
        assert hits["/v2/"] == 4  # one try and two retries
        status["code"] = 404
        with pytest.raises(UpstreamError, match="does not serve the registry API"):
            await client.login(server.host, None)


# -- redirects -----------------------------------------------------------------------------------


async def test_authorization_not_forwarded_to_another_host(
    session: aiohttp.ClientSession,
) -> None:
    seen: dict[str, str | None] = {}
    good = _basic("user", "redirect-pw")

    async def blob_store(request: web.Request) -> web.Response:
        seen["other-host"] = request.headers.get("Authorization")
        return web.Response(body=b"blob bytes")

    storage_app = web.Application()
    storage_app.router.add_get("/storage/blob", blob_store)
    with ThreadedServer(storage_app) as storage:

        async def guarded(request: web.Request) -> web.StreamResponse:
            if request.headers.get("Authorization") != good:
                return web.json_response(
                    {}, status=401, headers={"WWW-Authenticate": 'Basic realm="r"'}
                )
            if request.path == "/v2/":
                return web.json_response({})
            if request.path.endswith("/same-host"):
                raise web.HTTPTemporaryRedirect("/v2/r/target")
            if request.path.endswith("/target"):
                seen["same-host"] = request.headers.get("Authorization")
                return web.Response(body=b"same host")
            raise web.HTTPTemporaryRedirect(f"{storage.url}/storage/blob")

        app = web.Application()
        app.router.add_get("/{tail:.*}", guarded)
        with ThreadedServer(app) as registry:
            client = UpstreamClient(session, {registry.host: UpstreamEndpoint(registry.url)})
            creds = ("user", "redirect-pw")
            resp = await client.request(
                "GET", registry.host, "/v2/r/blobs/sha256:abc", credentials=creds
            )
            async with resp:
                assert resp.status == 200
                assert await resp.read() == b"blob bytes"
            assert "other-host" in seen and seen["other-host"] is None
            resp = await client.request("GET", registry.host, "/v2/r/same-host", credentials=creds)
            async with resp:
                assert await resp.read() == b"same host"
            assert seen["same-host"] == good


# -- secrets never leak --------------------------------------------------------------------------


async def test_no_secret_in_messages_or_logs(
    session: aiohttp.ClientSession,
    basic_registry: Registry,
    registry_factory: Callable[..., Registry],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token_registry = registry_factory("token", password="token-registry-pw")
    client = client_for(session, basic_registry, token_registry)
    secrets_seen = [basic_registry.password, token_registry.password, "leaky-wrong-pw"]
    messages: list[str] = []
    for registry in (basic_registry, token_registry):
        await client.login(registry.login_server, registry.credentials, "repository:a/b:pull")
        for creds in ((registry.username, "leaky-wrong-pw"), None):
            try:
                await client.login(registry.login_server, creds)
            except UpstreamError as exc:
                messages.append(str(exc))
                messages.append(repr(exc))
    token = await client.token_for(token_registry.login_server, token_registry.credentials, None)
    assert token is not None
    secrets_seen.append(token)
    unreachable = f"127.0.0.1:{free_port()}"
    offline = UpstreamClient(
        session, {unreachable: UpstreamEndpoint(f"http://{unreachable}")}, retries=0
    )
    with pytest.raises(UpstreamUnreachable) as info:
        await offline.login(unreachable, ("user", "leaky-wrong-pw"))
    messages.append(str(info.value))
    assert messages
    text = caplog.text + "\n".join(messages)
    for secret in secrets_seen:
        assert secret not in text


# -- the push helper -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["open", "basic", "token"])
def test_push_test_image(registry_factory: Callable[..., Registry], kind: str) -> None:
    registry = registry_factory(kind)
    digest = push_test_image(registry, "library/hello", "v1")
    assert digest.startswith("sha256:")
    creds = (
        ["--no-creds"]
        if kind == "open"
        else ["--creds", f"{registry.username}:{registry.password}"]
    )
    out = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--tls-verify=false",
            *creds,
            f"docker://{registry.login_server}/library/hello:v1",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["Digest"] == digest
    if kind != "open":
        denied = subprocess.run(
            [
                "skopeo",
                "inspect",
                "--tls-verify=false",
                "--creds",
                f"{registry.username}:wrong",
                f"docker://{registry.login_server}/library/hello:v1",
            ],
            capture_output=True,
            text=True,
        )
        assert denied.returncode != 0
