"""The upstream address guard (SSRF), with real listeners on loopback aliases.

What is checked, as an attacker with an API token would try it and as the operator sets it up:

* hosts named through the API (credential-set login servers) that are loopback in any spelling
  (``127.0.0.2``, ``localhost``, ``[::ffff:127.0.0.1]``) are refused before any connection:
  the listener there never sees one;
* what upstreams answer is checked too: a ``302`` to ``http://127.0.0.1:PORT/latest/meta-data/``
  (and to ``0x7f.1``, ``[::ffff:127.0.0.1]``, ``localhost``), a Bearer ``realm`` on
  ``127.0.0.1`` that would receive the Basic credentials; an https → http redirect is refused;
* cloud metadata (``169.254.169.254``, ``[::ffff:169.254.169.254]``, a name resolving there) is
  refused before any socket exists: those tests use a socket factory that records every
  connection attempt and lets none leave the machine;
* a closed port, a port the policy refuses and a filtered port give the same error;
* the allow-lists (``allowed_upstream_networks``, ``allowed_upstream_hosts``) and
  ``forbid_private_addresses`` do what the README says, and config endpoints stay trusted;
* ``env:ENTREPOT_*`` never resolves, so the server's own settings are never sent upstream.

Listeners bind 127.0.0.2 and other loopback aliases (usable on Linux without set-up).
"""

from __future__ import annotations

import asyncio
import base64
import errno
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from entrepot import errors as e
from entrepot.config import PolicyConfig, UpstreamEndpoint, load_config
from entrepot.errors import ConfigError, UpstreamError, UpstreamUnreachable
from entrepot.management.validation import UpstreamPolicy
from entrepot.upstream import AddressGuard, AiohttpTransport, UpstreamClient
from entrepot.upstream.guard import refusal_reason
from tests.conftest import ServerProcess
from tests.registries import self_signed
from tests.test_credential_health import (
    UNHEALTHY,
    Api,
    create,
    distinct,
    get,
    health,
    kv,
    upstreams,
)

ServerFactory = Callable[..., ServerProcess]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

UNIFORM = (
    "could not be reached: it refused the connection, the connection is not allowed, or it did "
    "not answer within"
)


# -- real listeners --------------------------------------------------------------------------------


class Listener:
    """An aiohttp application on ``host`` (a free port) in a thread of its own, counting every
    TCP connection it accepts (TLS or not, HTTP or not) and recording every request.

    :ivar connections: TCP connections accepted so far.
    :ivar requests: ``(method, path and query, Authorization or None)`` of each request.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        handler: Handler | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.handler = handler
        self.ssl_context = ssl_context
        self.port = 0
        self.connections = 0
        self.requests: list[tuple[str, str, str | None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.hostport}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            (request.method, request.path_qs, request.headers.get("Authorization"))
        )
        if self.handler is not None:
            return await self.handler(request)
        return web.json_response({})

    def start(self) -> Listener:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        def count_and_serve() -> asyncio.Protocol:
            self.connections += 1
            return runner.server()

        runner = web.AppRunner(app, access_log=None)

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(runner.setup())
                server = loop.run_until_complete(
                    loop.create_server(count_and_serve, self.host, 0, ssl=self.ssl_context)
                )
                self.port = int(server.sockets[0].getsockname()[1])
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            server.close()
            loop.run_until_complete(runner.cleanup())
            loop.close()
            self._stopped.set()

        self._thread = threading.Thread(target=run, name=f"listener-{self.host}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> Listener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def closed_port(host: str) -> int:
    """A port on ``host`` where nothing listens (connections are refused at once)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextmanager
def filtered_port(host: str) -> Iterator[int]:
    """A port on ``host`` that drops connection attempts, as a firewall's DROP does: a listening
    socket whose accept queue is full (Linux then ignores new SYNs, so connect() hangs)."""
    server = socket.socket()
    server.bind((host, 0))
    server.listen(0)
    port = int(server.getsockname()[1])
    fillers: list[socket.socket] = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with suppress(BlockingIOError):
                filler.connect((host, port))
            fillers.append(filler)
        time.sleep(0.2)
        with socket.socket() as probe:  # make sure it really drops: else the test means nothing
            probe.settimeout(0.3)
            with pytest.raises(TimeoutError):
                probe.connect((host, port))
        yield port
    finally:
        for filler in fillers:
            filler.close()
        server.close()


class SocketRecorder:
    """An aiohttp ``socket_factory``: records the address of every connection attempt and lets
    only loopback ones go on (nothing ever leaves this machine, even if the guard failed)."""

    def __init__(self) -> None:
        self.addresses: list[str] = []

    def __call__(self, addr_info: Any) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        self.addresses.append(str(sockaddr[0]))
        if not ipaddress.ip_address(sockaddr[0]).is_loopback:
            raise OSError(errno.ENETUNREACH, "this test lets no traffic leave the machine")
        return socket.socket(family, type_, proto)


class StaticResolver(AbstractResolver):
    """Answers names from a table, as a DNS server controlled by an attacker could."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.table:
            raise OSError(errno.ENOENT, f"{host} is not in the table")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.table[host]
        ]

    async def close(self) -> None:
        return None


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def shape(message: str, *hosts: str) -> str:
    """``message`` with each of ``hosts`` replaced by ``HOST``."""
    for host in hosts:
        message = message.replace(host, "HOST")
    return message


# -- the policy itself (no I/O) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.0.0.2", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::127.0.0.1", "loopback"),  # IPv4-compatible
        ("64:ff9b::7f00:1", "loopback"),  # NAT64
        ("169.254.169.254", "link-local"),
        ("::ffff:169.254.169.254", "link-local"),
        ("fe80::a9fe:a9fe", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),
        ("fd12:3456::1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_refusal_reasons(address: str, reason: str | None) -> None:
    parsed = ipaddress.ip_address(address)
    assert refusal_reason(parsed) == reason
    default, strict = AddressGuard(), AddressGuard(forbid_private=True)
    assert default.refusal(parsed) == (None if reason == "private" else reason)
    assert strict.refusal(parsed) == reason
    # An allow-listed network overrides everything, the embedded IPv4 address included.
    network = ipaddress.ip_network(f"{address}/{parsed.max_prefixlen}")
    assert AddressGuard(forbid_private=True, allowed_networks=(network,)).refusal(parsed) is None


def test_allow_lists_and_trust() -> None:
    policy = load_config(
        env={
            "ENTREPOT_POLICY_FORBID_PRIVATE_ADDRESSES": "true",
            "ENTREPOT_POLICY_ALLOWED_UPSTREAM_NETWORKS": '["10.1.0.0/16", "127.0.0.1/32"]',
            "ENTREPOT_POLICY_ALLOWED_UPSTREAM_HOSTS": "registry.lan,*.corp.example",
        }
    ).policy
    guard = AddressGuard.from_config(
        policy, {"docker.io": UpstreamEndpoint("http://127.0.0.9:5001")}
    )
    ip = ipaddress.ip_address
    assert guard.refusal(ip("10.1.2.3")) is None
    assert guard.refusal(ip("10.2.0.1")) == "private"
    assert guard.refusal(ip("127.0.0.1")) is None
    assert guard.refusal(ip("::ffff:127.0.0.1")) is None
    assert guard.refusal(ip("127.0.0.2")) == "loopback"
    assert guard.trusts("registry.lan", 443) and guard.trusts("REGISTRY.LAN.", 5000)
    assert guard.trusts("a.corp.example", 1) and not guard.trusts("corp.example", 1)
    # A config endpoint is trusted as written: that host and port, not its other ports.
    assert guard.trusts("127.0.0.9", 5001) and not guard.trusts("127.0.0.9", 5002)
    # The literal check: numeric spellings that are no canonical address are refused.
    for host in ("127.1", "2130706433", "0177.0.0.1"):
        with pytest.raises(Exception, match="refused by the upstream address guard"):
            AddressGuard().check_literal(host, 80)
    AddressGuard().check_literal("registry.example.com", 443)  # names go to the resolver
    # The ARM-level check of forbid_private_addresses obeys the same allow-lists.
    checks = UpstreamPolicy(policy)
    checks.check_allowed("10.1.2.3:5000", "properties.loginServer")
    checks.check_allowed("registry.lan:5000", "properties.loginServer")
    with pytest.raises(e.UpstreamNotAllowed):
        checks.check_allowed("10.2.0.1:5000", "properties.loginServer")
    with pytest.raises(e.UpstreamNotAllowed):
        UpstreamPolicy(PolicyConfig(forbid_private_addresses=True)).check_allowed(
            "10.1.2.3", "properties.loginServer"
        )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("allowed_upstream_networks", '["10.1.2.3/16"]'),  # host bits set
        ("allowed_upstream_networks", '["not-a-network"]'),
        ("allowed_upstream_hosts", '["Registry.LAN"]'),  # not lower case
        ("allowed_upstream_hosts", '["registry.lan:5000"]'),  # a port
        ("allowed_upstream_hosts", '["10.0.0.1"]'),  # an address: use the networks
        ("allowed_upstream_hosts", '["https://registry.lan"]'),
    ],
)
def test_allow_list_config_is_validated(tmp_path: Path, key: str, value: str) -> None:
    path = tmp_path / "entrepot.toml"
    path.write_text(f"[policy]\n{key} = {value}\n")
    with pytest.raises(ConfigError, match=f"policy.{key}"):
        load_config(path, env={})


# -- in process: a guarded transport, sockets recorded ---------------------------------------------


@pytest.fixture
def recorder() -> SocketRecorder:
    return SocketRecorder()


@contextmanager
def client_for(
    guard: AddressGuard,
    recorder: SocketRecorder,
    upstreams_: dict[str, UpstreamEndpoint],
    *,
    resolver: AbstractResolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Iterator[tuple[UpstreamClient, aiohttp.ClientSession]]:
    kwargs: dict[str, Any] = {"socket_factory": recorder}
    if ssl_context is not None:
        kwargs["ssl"] = ssl_context
    session = aiohttp.ClientSession(connector=guard.connector(resolver=resolver, **kwargs))
    client = UpstreamClient(
        AiohttpTransport(session, guard=guard), upstreams_, timeout=2, retries=0
    )
    yield client, session


@pytest.fixture
async def sessions() -> AsyncIterator[list[aiohttp.ClientSession]]:
    opened: list[aiohttp.ClientSession] = []
    yield opened
    for session in opened:
        await session.close()


async def test_cloud_metadata_refused_before_any_socket(
    recorder: SocketRecorder, sessions: list[aiohttp.ClientSession]
) -> None:
    """A trusted upstream redirects to the metadata service in every spelling: each is refused
    with the one error, and no socket is ever made for it (the recorder sees only loopback)."""
    targets = [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://[::ffff:a9fe:a9fe]:80/latest/meta-data/",
        "http://[fe80::a9fe:a9fe]/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "http://metadata.test/latest/meta-data/",  # a name that resolves there
        "http://2852039166/latest/meta-data/",  # 169.254.169.254 as one number
        "http://0.0.0.0/",
    ]

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(targets[int(request.match_info["tail"].rsplit("/", 1)[-1])])

    resolver = StaticResolver({"metadata.test": ["169.254.169.254"]})
    with Listener("127.0.0.1", redirect) as upstream:
        guard = AddressGuard.from_config(
            PolicyConfig(), {upstream.hostport: UpstreamEndpoint(upstream.url)}
        )
        with client_for(
            guard, recorder, {upstream.hostport: UpstreamEndpoint(upstream.url)}, resolver=resolver
        ) as (client, session):
            sessions.append(session)
            for i, target in enumerate(targets):
                with pytest.raises(UpstreamUnreachable) as info:
                    await client.request("GET", upstream.hostport, f"/v2/r/{i}", credentials=None)
                assert UNIFORM in info.value.message, (target, info.value.message)
            # Named directly as a login server (what a credential set would do): the same.
            for login_server in ("169.254.169.254", "[::ffff:169.254.169.254]"):
                with pytest.raises(UpstreamUnreachable) as info:
                    await client.login(login_server, ("user", "metadata-pw"))
                assert UNIFORM in info.value.message
                assert "metadata-pw" not in info.value.message
        assert len(upstream.requests) == len(targets)  # every redirect was really answered
    assert recorder.addresses  # the trusted upstream was connected to...
    assert {ipaddress.ip_address(a).is_loopback for a in recorder.addresses} == {True}  # ...only


async def test_private_addresses_allowed_by_default_refused_by_the_switch(
    recorder: SocketRecorder, sessions: list[aiohttp.ClientSession]
) -> None:
    """``10.0.0.1`` is tried by default (the recorder stops it: no traffic leaves), refused
    before any socket with ``forbid_private_addresses``, and allowed again by an allow-list."""
    cases = [
        (AddressGuard(), True),
        (AddressGuard(forbid_private=True), False),
        (
            AddressGuard(
                forbid_private=True, allowed_networks=(ipaddress.ip_network("10.0.0.0/8"),)
            ),
            True,
        ),
    ]
    for guard, attempted in cases:
        recorder.addresses.clear()
        with client_for(guard, recorder, {}) as (client, session):
            sessions.append(session)
            with pytest.raises(UpstreamUnreachable) as info:
                await client.login("10.0.0.1:5000", None)
        assert UNIFORM in info.value.message  # the same words whether tried or refused
        assert recorder.addresses == (["10.0.0.1"] if attempted else []), guard


async def test_a_name_resolving_to_refused_and_allowed_addresses_connects_to_allowed_ones(
    recorder: SocketRecorder, sessions: list[aiohttp.ClientSession]
) -> None:
    """DNS answers are filtered, not trusted: only the allowed address is connected to."""
    with Listener("127.0.0.2") as upstream:
        resolver = StaticResolver({"mixed.test": ["169.254.169.254", "127.0.0.2"]})
        guard = AddressGuard(allowed_networks=(ipaddress.ip_network("127.0.0.2/32"),))
        url = f"http://mixed.test:{upstream.port}"
        name = f"mixed.test:{upstream.port}"
        with client_for(guard, recorder, {}, resolver=resolver) as (_, session):
            sessions.append(session)
            # Plain http, as a config entry would give, but the host is not trusted by it.
            client = UpstreamClient(
                AiohttpTransport(session, guard=guard), {name: UpstreamEndpoint(url)}, retries=0
            )
            assert (await client.login(name, None)).auth == "none"
        assert upstream.connections >= 1
    assert "169.254.169.254" not in recorder.addresses
    assert set(recorder.addresses) == {"127.0.0.2"}


async def test_https_to_http_redirect_is_refused(
    tmp_path: Path, recorder: SocketRecorder, sessions: list[aiohttp.ClientSession]
) -> None:
    keys = self_signed("guard test upstream", hosts=("127.0.0.1",))
    crt, key = keys.write(tmp_path, "upstream")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(crt, key)
    client_context = ssl.create_default_context(cafile=str(crt))
    with Listener("127.0.0.2") as plain:

        async def downgrade(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(f"{plain.url}/v2/")

        with Listener("127.0.0.1", downgrade, ssl_context=server_context) as secure:
            configured = {
                secure.hostport: UpstreamEndpoint(secure.url),
                plain.hostport: UpstreamEndpoint(plain.url),  # trusted: only the scheme matters
            }
            guard = AddressGuard.from_config(PolicyConfig(), configured)
            with client_for(guard, recorder, configured, ssl_context=client_context) as (
                client,
                session,
            ):
                sessions.append(session)
                with pytest.raises(UpstreamError) as info:
                    await client.login(secure.hostport, ("user", "downgrade-pw"))
            assert "from https to plain http" in info.value.message
            assert "downgrade-pw" not in info.value.message
            assert secure.requests  # the redirect was really sent...
        assert plain.connections == 0  # ...and not followed


async def test_a_guarded_transport_needs_a_guarded_session() -> None:
    guard = AddressGuard()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ValueError, match=r"guard\.connector"):
            AiohttpTransport(session, guard=guard)
        async with aiohttp.ClientSession(connector=AddressGuard().connector()) as other:
            with pytest.raises(ValueError, match=r"guard\.connector"):
                AiohttpTransport(other, guard=guard)  # another guard's connector


# -- through `entrepot serve`, as an API caller would try it ---------------------------------------


class Sets:
    """Credential sets of one server, each with its own grant on one vault."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.api = Api(server)
        self.user = distinct("guard-user")
        self.password = distinct("guard-pw")
        self.api.vault("guard")
        self.api.secret("guard", "user", self.user)
        self.api.secret("guard", "pass", self.password)

    def measure(self, name: str, login_server: str) -> tuple[str | None, str | None, str]:
        """Create the set, grant its identity and validate it: ``(status, code, message)``."""
        with self.server.client() as client:
            created = create(client, name, login_server, kv("guard", "user"), kv("guard", "pass"))
            self.api.grant("guard", created.identity.principal_id)
            self.api.validate(name)
            status, code, message = health(get(client, name))
        assert message is None or (self.password not in message and self.user not in message)
        return status, code, message or ""


def test_api_named_loopback_hosts_are_refused_before_any_connection(
    server_factory: ServerFactory,
) -> None:
    with Listener("127.0.0.2") as alias, Listener("127.0.0.1") as loopback:
        sets = Sets(server_factory())
        cases = {
            "loopback-alias": (f"127.0.0.2:{alias.port}", alias.hostport),
            "localhost-name": (f"localhost:{loopback.port}", f"localhost:{loopback.port}"),
            "mapped-ipv6": (
                f"[::ffff:127.0.0.1]:{loopback.port}",
                f"[::ffff:7f00:1]:{loopback.port}",
            ),
        }
        for name, (login_server, shown) in cases.items():
            status, code, message = sets.measure(name, login_server)
            assert (status, code) == (UNHEALTHY, "UpstreamUnreachable"), message
            assert f"The upstream {shown} {UNIFORM}" in message, message
        assert (alias.connections, loopback.connections) == (0, 0)
    assert "refused" in sets.server.log() and "loopback" in sets.server.log()


def test_redirects_and_realms_to_loopback_are_refused(server_factory: ServerFactory) -> None:
    """Upstreams trusted by the config redirect (302) and send Bearer realms to loopback in
    several spellings; nothing reaches the listener there, no credentials above all."""
    with Listener("127.0.0.1") as victim:
        targets = {
            "redirect-ip": f"http://127.0.0.1:{victim.port}/latest/meta-data/iam/",
            "redirect-hex": f"http://0x7f.1:{victim.port}/latest/meta-data/",
            "redirect-mapped": f"http://[::ffff:127.0.0.1]:{victim.port}/latest/meta-data/",
            "redirect-name": f"http://localhost:{victim.port}/latest/meta-data/",
        }
        evil: dict[str, Listener] = {}
        for name, target in targets.items():

            async def redirect(request: web.Request, target: str = target) -> web.StreamResponse:
                raise web.HTTPFound(target)

            evil[name] = Listener("127.0.0.5", redirect).start()

        async def realm(request: web.Request) -> web.StreamResponse:
            challenge = f'Bearer realm="http://127.0.0.1:{victim.port}/token",service="evil"'
            return web.json_response({}, status=401, headers={"WWW-Authenticate": challenge})

        evil["bearer-realm"] = Listener("127.0.0.6", realm).start()
        try:
            config = "".join(
                f'\n[upstreams."{name}.evil.example"]\nurl = "{listener.url}"\n'
                for name, listener in evil.items()
            )
            sets = Sets(server_factory(config))
            for name, listener in evil.items():
                status, code, message = sets.measure(name, f"{name}.evil.example")
                assert (status, code) == (UNHEALTHY, "UpstreamUnreachable"), (name, message)
                assert UNIFORM in message, message
                assert listener.requests, name  # the trusted upstream was asked...
            assert victim.connections == 0  # ...and nothing it pointed at was
            assert victim.requests == []
        finally:
            for listener in evil.values():
                listener.stop()


def test_closed_refused_and_filtered_ports_give_the_same_error(
    server_factory: ServerFactory,
) -> None:
    """No port scanner: an open port the policy refuses, a closed port and a filtered one (both
    allowed) give the same code and, but for the host, the same message."""
    with Listener("127.0.0.2") as open_refused, filtered_port("127.0.0.4") as filtered:
        closed = closed_port("127.0.0.3")
        sets = Sets(
            server_factory(
                '\n[policy]\nallowed_upstream_networks = ["127.0.0.3/32", "127.0.0.4/32"]\n'
                "\n[health]\ntimeout_seconds = 1\n"
            )
        )
        cases = {
            "open-refused": open_refused.hostport,
            "closed-port": f"127.0.0.3:{closed}",
            "filtered-port": f"127.0.0.4:{filtered}",
        }
        shapes = set()
        for name, login_server in cases.items():
            status, code, message = sets.measure(name, login_server)
            assert (status, code) == (UNHEALTHY, "UpstreamUnreachable"), (name, message)
            shapes.add(shape(message, login_server))
        assert open_refused.connections == 0
    assert len(shapes) == 1, shapes
    assert UNIFORM in shapes.pop()


def test_allow_lists_let_loopback_upstreams_through(server_factory: ServerFactory) -> None:
    with Listener("127.0.0.2") as by_network, Listener("127.0.0.1") as by_name:
        sets = Sets(
            server_factory(
                '\n[policy]\nallowed_upstream_networks = ["127.0.0.2/32"]\n'
                'allowed_upstream_hosts = ["localhost"]\n'
            )
        )
        for name, login_server, listener in (
            ("by-network", by_network.hostport, by_network),
            ("by-name", f"localhost:{by_name.port}", by_name),
        ):
            status, code, message = sets.measure(name, login_server)
            # https spoken to a plain-http listener: connected, then the TLS handshake fails.
            assert (status, code) == (UNHEALTHY, "UpstreamTlsError"), (name, message)
            assert listener.connections >= 1, name


def test_entrepot_variables_are_never_sent_upstream(process_factory: ServerFactory) -> None:
    """``env_allow = ["*"]`` still does not make ``env:ENTREPOT_DATABASE_URL`` resolvable: the
    set is Unhealthy (SecretAccessDenied) and the upstream never sees the value. (A real process:
    the ``env:`` resolver reads the server's own environment.)"""

    async def basic(request: web.Request) -> web.StreamResponse:
        return web.json_response({}, status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    with Listener("127.0.0.1", basic) as upstream:
        config = upstreams(upstream.hostport) + (
            '\n[secrets]\nenv_enabled = true\nenv_allow = ["*"]\n'
        )
        server = process_factory(config, env={"REGISTRY_USER": "env-user"})
        database_url = f"sqlite:///{server.data_dir / 'entrepot.db'}"
        server.env["ENTREPOT_DATABASE_URL"] = database_url  # the same database, named by env
        server.restart()
        api = Api(server)
        with server.client() as client:
            for name, password_id in (
                ("env-db-url", "env:ENTREPOT_DATABASE_URL"),
                ("env-config", "env:ENTREPOT_CONFIG"),
            ):
                created = create(client, name, upstream.hostport, "env:REGISTRY_USER", password_id)
                assert health(created)[:2] == (UNHEALTHY, "SecretAccessDenied")
                body = api.validate(name)
                (cred,) = body["properties"]["authCredentials"]
                assert cred["credentialHealth"]["errorCode"] == "SecretAccessDenied"
                assert database_url not in cred["credentialHealth"]["errorMessage"]
        sent = [auth for _, _, auth in upstream.requests if auth]
        assert _basic("env-user", database_url) not in sent
        assert all(database_url.encode() not in base64.b64decode(a.split()[1]) for a in sent)
