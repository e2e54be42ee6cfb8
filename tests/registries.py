"""Real upstream registries for the tests (a pytest plugin, loaded by ``tests/conftest.py``).

Every fixture here starts Debian's ``docker-registry`` (CNCF distribution 2.8) as a real
process on a free 127.0.0.1 port, with a temporary storage directory and a generated
``config.yml``:

* ``open_registry``: no auth;
* ``basic_registry``: ``auth: htpasswd`` with a bcrypt file made by ``htpasswd -Bbn``;
* ``token_registry``: ``auth: token`` whose realm is a :class:`TokenServer` started with it: a
  real JWT issuer (ES256, the signing certificate in the ``x5c`` header and in the registry's
  ``rootcertbundle``) with a GET (Basic) and a POST (OAuth2 password grant) token endpoint.

Each yields a :class:`Registry`: ``.url`` (``http://127.0.0.1:PORT``), ``.login_server``
(``127.0.0.1:PORT``), ``.username``, ``.password``, ``.credentials``, ``.upstreams`` (a
``Config.upstreams`` mapping pointing the login server at ``.url``), ``.set_password(new)``
(takes effect at once: distribution re-reads a changed htpasswd file; the token server's user
table is in memory) and ``.token_server`` (token registries only). ``registry_factory`` starts
more with options (``expires_in``, ``public_repos``, ``users``...).

:func:`push_test_image` builds a tiny OCI image on disk and pushes it with ``skopeo copy``;
:class:`ThreadedServer` runs any aiohttp application on a background thread (for fake
upstreams in tests that need one).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import gzip
import hashlib
import io
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from entrepot.config import UpstreamEndpoint

REGISTRY_BIN = os.environ.get("ENTREPOT_TEST_REGISTRY_BIN", "docker-registry")
SERVICE = "entrepot-test-registry"
ISSUER = "entrepot-test-token-issuer"
DEFAULT_USER = "alice"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_tools(*names: str) -> None:
    """Fail (not skip) with the install hint when a tool is missing."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)}: run `bash -c 'source scripts/_env.sh; "
            "ensure_registry_tools'` (apt: docker-registry skopeo apache2-utils)"
        )


# -- certificates ------------------------------------------------------------------------------


@dataclass
class KeyPair:
    """An EC P-256 key and a self-signed certificate for it."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write ``stem.crt`` and ``stem.key`` (PEM); returns their paths."""
        crt, key = directory / f"{stem}.crt", directory / f"{stem}.key"
        crt.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        return crt, key


def self_signed(common_name: str, *, hosts: tuple[str, ...] = ()) -> KeyPair:
    """A self-signed EC certificate (a CA, valid a day either side of now) naming ``hosts``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return KeyPair(key, builder.sign(key, hashes.SHA256()))


# -- a background aiohttp server ---------------------------------------------------------------


class ThreadedServer:
    """Runs an aiohttp application on 127.0.0.1 in a thread with its own event loop.

    Usable from sync fixtures and from async tests alike (the test's loop is not involved).
    """

    def __init__(self, app: web.Application, *, port: int = 0, ssl_context: Any = None) -> None:
        self.app = app
        self.port = port
        self.ssl_context = ssl_context
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ThreadedServer:
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            runner = web.AppRunner(self.app, access_log=None)
            try:
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=self.ssl_context)
                loop.run_until_complete(site.start())
                self.port = int(runner.addresses[0][1])
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"test-server-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._thread = None

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the token server --------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """The libtrust fingerprint distribution uses as ``kid``: SHA-256 of the DER public key,
    truncated to 240 bits, base32, in 12 groups of 4 joined by ``:``."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    return ":".join(b32[i : i + 4] for i in range(0, 48, 4))


@dataclass
class TokenHit:
    """One request the token server answered."""

    method: Literal["GET", "POST"]
    username: str | None
    scopes: tuple[str, ...]
    status: int


@dataclass
class TokenServer:
    """A Docker token server (distribution's "Token Authentication Specification").

    ``GET /token?service=..&scope=..`` authenticates with Basic (anonymous without), ``POST
    /token`` with the OAuth2 password grant (form ``grant_type=password``, ``username``,
    ``password``, ``client_id``, ``service``, ``scope``). Wrong credentials: GET → 401, POST →
    400 ``{"error": "invalid_grant"}`` (RFC 6749 §5.2). The JWT is signed ES256 with
    ``x5c`` and ``kid`` headers; claims ``iss``, ``sub``, ``aud`` (= service), ``exp``, ``nbf``,
    ``iat``, ``jti``, ``access``.

    Access: an authenticated user gets every action asked for on every repository, except
    repositories listed in ``restricted`` (repository → users allowed). Anonymous gets ``pull``
    on ``public_repos`` only, and nothing else (a token with an empty ``access``).

    Switches for tests: ``get_enabled=False`` answers GET with ``get_disabled_status`` (405)
    so clients must POST; ``post_enabled=False`` answers POST with 404;
    ``allow_anonymous=False`` refuses anonymous GETs with 401. ``hits`` records each request.
    """

    users: dict[str, str]
    service: str = SERVICE
    issuer: str = ISSUER
    expires_in: int = 300
    public_repos: set[str] = field(default_factory=set)
    restricted: dict[str, set[str]] = field(default_factory=dict)
    get_enabled: bool = True
    get_disabled_status: int = 405
    post_enabled: bool = True
    allow_anonymous: bool = True
    hits: list[TokenHit] = field(default_factory=list)
    keys: KeyPair = field(default_factory=lambda: self_signed("entrepot test token issuer"))
    _server: ThreadedServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "token server not started"
        return self._server.url

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    def count(self, method: str | None = None) -> int:
        return sum(1 for h in self.hits if method is None or h.method == method)

    def start(self) -> TokenServer:
        app = web.Application()
        app.router.add_get("/token", self._get)
        app.router.add_post("/token", self._post)
        self._server = ThreadedServer(app).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    # -- tokens --

    def grant(self, username: str | None, scopes: list[str]) -> list[dict[str, Any]]:
        access: list[dict[str, Any]] = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if not kind or not name:
                continue
            wanted = [a for a in actions.split(",") if a]
            if username is None:
                allowed = [a for a in wanted if a == "pull" and name in self.public_repos]
            elif kind == "repository" and name in self.restricted:
                allowed = wanted if username in self.restricted[name] else []
            else:
                allowed = wanted
            if allowed:
                access.append({"type": kind, "name": name, "actions": allowed})
        return access

    def issue(self, username: str | None, scopes: list[str]) -> str:
        now = int(time.time())
        header = {
            "typ": "JWT",
            "alg": "ES256",
            "kid": libtrust_key_id(self.keys.key.public_key()),
            "x5c": [base64.b64encode(self.keys.cert_der).decode()],
        }
        claims = {
            "iss": self.issuer,
            "sub": username or "",
            "aud": self.service,
            "exp": now + self.expires_in,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "access": self.grant(username, scopes),
        }
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        der = self.keys.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _token_body(self, username: str | None, scopes: list[str]) -> dict[str, Any]:
        token = self.issue(username, scopes)
        return {
            "token": token,
            "access_token": token,
            "expires_in": self.expires_in,
            "issued_at": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        }

    # -- endpoints --

    def _hit(
        self, method: Literal["GET", "POST"], user: str | None, scopes: list[str], st: int
    ) -> None:
        self.hits.append(TokenHit(method, user, tuple(scopes), st))

    async def _get(self, request: web.Request) -> web.Response:
        scopes = [s for raw in request.query.getall("scope", []) for s in raw.split()]
        if not self.get_enabled:
            self._hit("GET", None, scopes, self.get_disabled_status)
            return web.json_response({"error": "use POST"}, status=self.get_disabled_status)
        username: str | None = None
        header = request.headers.get("Authorization", "")
        if header:
            user = _check_basic(header, self.users)
            if user is None:
                self._hit("GET", None, scopes, 401)
                return _unauthorized()
            username = user
        elif not self.allow_anonymous:
            self._hit("GET", None, scopes, 401)
            return _unauthorized()
        if request.query.get("service") != self.service:
            self._hit("GET", username, scopes, 400)
            return web.json_response({"error": "invalid_request"}, status=400)
        self._hit("GET", username, scopes, 200)
        return web.json_response(self._token_body(username, scopes))

    async def _post(self, request: web.Request) -> web.Response:
        form = await request.post()
        scopes = str(form.get("scope", "")).split()
        user = str(form.get("username", "")) or None
        if not self.post_enabled:
            self._hit("POST", user, scopes, 404)
            return web.json_response({"error": "not found"}, status=404)

        def error(code: str, status: int = 400) -> web.Response:
            self._hit("POST", user, scopes, status)
            return web.json_response({"error": code}, status=status)

        if request.content_type != "application/x-www-form-urlencoded":
            return error("invalid_request")
        if form.get("grant_type") != "password":
            return error("unsupported_grant_type")
        if not form.get("client_id") or form.get("service") != self.service:
            return error("invalid_request")
        password = str(form.get("password", ""))
        if user is None or not _same(self.users.get(user), password):
            return error("invalid_grant")
        body = self._token_body(user, scopes)
        self._hit("POST", user, scopes, 200)
        return web.json_response(
            {
                "access_token": body["access_token"],
                "token_type": "Bearer",
                "expires_in": body["expires_in"],
                "scope": " ".join(scopes),
                "issued_at": body["issued_at"],
            }
        )


def _same(expected: str | None, given: str) -> bool:
    return expected is not None and secrets.compare_digest(expected.encode(), given.encode())


def _check_basic(header: str, users: dict[str, str]) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user if sep and _same(users.get(user), password) else None


def _unauthorized() -> web.Response:
    return web.json_response(
        {"details": "invalid credentials"},
        status=401,
        headers={"WWW-Authenticate": 'Basic realm="entrepot-test-token-server"'},
    )


# -- registries --------------------------------------------------------------------------------

RegistryKind = Literal["open", "basic", "token"]


@dataclass
class OciImage:
    """A tiny image built by :func:`build_oci_layout`; blobs by digest for later checks."""

    manifest: bytes
    digest: str
    config_digest: str
    layer_digest: str
    blobs: dict[str, bytes]


@dataclass
class Registry:
    """A running ``docker-registry`` process (see the module docstring)."""

    kind: RegistryKind
    root: Path
    port: int
    username: str = DEFAULT_USER
    password: str = ""
    token_server: TokenServer | None = None
    process: subprocess.Popen[bytes] | None = None
    images: dict[tuple[str, str], OciImage] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def login_server(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def credentials(self) -> tuple[str, str]:
        return (self.username, self.password)

    @property
    def upstreams(self) -> dict[str, UpstreamEndpoint]:
        """A ``Config.upstreams`` mapping: this login server → its plain-http URL."""
        return {self.login_server: UpstreamEndpoint(url=self.url)}

    @property
    def config_path(self) -> Path:
        return self.root / "config.yml"

    @property
    def htpasswd_path(self) -> Path:
        return self.root / "htpasswd"

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def write_config(self) -> None:
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root / "storage")},
                "delete": {"enabled": True},
            },
            "http": {"addr": f"127.0.0.1:{self.port}", "secret": secrets.token_hex(16)},
        }
        if self.kind == "basic":
            self._write_htpasswd({self.username: self.password})
            config["auth"] = {
                "htpasswd": {"realm": "entrepot-test", "path": str(self.htpasswd_path)}
            }
        elif self.kind == "token":
            assert self.token_server is not None
            bundle = self.root / "token-issuer.crt"
            bundle.write_bytes(self.token_server.keys.cert_pem)
            config["auth"] = {
                "token": {
                    "realm": self.token_server.realm,
                    "service": self.token_server.service,
                    "issuer": self.token_server.issuer,
                    "rootcertbundle": str(bundle),
                }
            }
        self.config_path.write_text(yaml.safe_dump(config))

    def _write_htpasswd(self, users: dict[str, str]) -> None:
        lines = []
        for user, password in users.items():
            out = subprocess.run(
                ["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True
            ).stdout.strip()
            lines.append(out)
        tmp = self.htpasswd_path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.htpasswd_path)

    def start(self, timeout: float = 20) -> None:
        assert self.process is None or self.process.poll() is not None
        (self.root / "storage").mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited early:\n{self.log()}")
            if _http_status(f"{self.url}/v2/") is not None:
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not start on {self.url}:\n{self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def set_password(self, new: str) -> None:
        """Change ``username``'s password upstream; the old one stops working at once."""
        self.password = new
        if self.kind == "token":
            assert self.token_server is not None
            self.token_server.users[self.username] = new
        elif self.kind == "basic":
            self._write_htpasswd({self.username: new})
            # distribution 2.8 re-reads the file when its modification time changes; wait for
            # it to take the new password, and restart if it does not.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if _http_status(f"{self.url}/v2/", self.credentials) == 200:
                    return
                time.sleep(0.05)
            self.restart()


def _http_status(url: str, credentials: tuple[str, str] | None = None) -> int | None:
    request = urllib.request.Request(url)
    if credentials is not None:
        token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def start_registry(
    root: Path,
    kind: RegistryKind,
    *,
    username: str = DEFAULT_USER,
    password: str | None = None,
    token_server: TokenServer | None = None,
) -> Registry:
    """Start a registry of ``kind`` under ``root`` (retrying on a port taken meanwhile)."""
    require_tools(REGISTRY_BIN, *(["htpasswd"] if kind == "basic" else []))
    password = password if password is not None else f"pw-{secrets.token_urlsafe(12)}"
    if kind == "token" and token_server is None:
        token_server = TokenServer(users={username: password}).start()
    last: Exception | None = None
    for _ in range(3):
        port = free_port()
        registry = Registry(kind, root / f"{kind}-{port}", port, username, password, token_server)
        registry.root.mkdir(parents=True)
        registry.write_config()
        try:
            registry.start()
            return registry
        except RuntimeError as exc:
            last = exc
            if "address already in use" not in str(exc):
                break
    raise RuntimeError(f"could not start a {kind} registry") from last


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator[Callable[..., Registry]]:
    """``start(kind, **options)`` → a running :class:`Registry`; all stopped at teardown.

    Options: ``username``, ``password``, and for ``kind="token"`` either ``token_server`` (a
    started :class:`TokenServer`) or any :class:`TokenServer` field (``expires_in``,
    ``public_repos``, ``get_enabled``, ``users``...) for the one started with the registry.
    """
    started: list[Registry] = []

    def start(kind: RegistryKind, **options: Any) -> Registry:
        username = options.pop("username", DEFAULT_USER)
        password = options.pop("password", None)
        token_server = options.pop("token_server", None)
        if kind == "token" and token_server is None:
            password = password if password is not None else f"pw-{secrets.token_urlsafe(12)}"
            users = options.pop("users", {})
            token_server = TokenServer(users={**users, username: password}, **options).start()
        elif options:
            raise TypeError(f"unknown options for a {kind} registry: {sorted(options)}")
        registry = start_registry(
            tmp_path, kind, username=username, password=password, token_server=token_server
        )
        started.append(registry)
        return registry

    yield start
    for registry in started:
        registry.stop()
        if registry.token_server is not None:
            registry.token_server.stop()


@pytest.fixture
def open_registry(registry_factory: Callable[..., Registry]) -> Registry:
    """A registry without auth."""
    return registry_factory("open")


@pytest.fixture
def basic_registry(registry_factory: Callable[..., Registry]) -> Registry:
    """A registry with htpasswd (Basic) auth for ``.username``/``.password``."""
    return registry_factory("basic")


@pytest.fixture
def token_registry(registry_factory: Callable[..., Registry]) -> Registry:
    """A registry with token auth; ``.token_server`` is its JWT issuer."""
    return registry_factory("token")


# -- test images -------------------------------------------------------------------------------


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build_oci_layout(directory: Path, tag: str, content: bytes) -> OciImage:
    """Write a one-layer OCI image layout (``oci-layout``, ``index.json``, blobs) for ``tag``.

    The layer holds one file, ``hello.txt``, with ``content``; everything is deterministic, so
    the same ``content`` always gives the same digests.
    """
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        info.mtime = 0
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(content))
    layer_tar = raw.getvalue()
    layer = gzip.compress(layer_tar, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [_digest(layer_tar)]},
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": _digest(layer), "size": len(layer)}],
        },
        separators=(",", ":"),
    ).encode()
    blobs = {_digest(b): b for b in (layer, config, manifest)}
    blob_dir = directory / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    for digest, data in blobs.items():
        (blob_dir / digest.removeprefix("sha256:")).write_bytes(data)
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": _digest(manifest),
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (directory / "index.json").write_text(json.dumps(index))
    return OciImage(manifest, _digest(manifest), _digest(config), _digest(layer), blobs)


def skopeo_creds(registry: Registry) -> list[str]:
    return (
        [] if registry.kind == "open" else ["--creds", f"{registry.username}:{registry.password}"]
    )


def push_test_image(
    registry: Registry, repo: str, tag: str = "latest", *, content: bytes | None = None
) -> str:
    """Push a tiny one-layer OCI image to ``registry`` as ``repo:tag``; its manifest digest.

    ``content`` (default: one derived from repo and tag) is the layer's only file. The image is
    also kept in ``registry.images[(repo, tag)]`` with its blobs.
    """
    require_tools("skopeo")
    data = content if content is not None else f"hello from {repo}:{tag}\n".encode()
    layout = registry.root / "layouts" / secrets.token_hex(4)
    image = build_oci_layout(layout, tag, data)
    digest_file = layout / "pushed-digest"
    creds = (
        ["--dest-creds", f"{registry.username}:{registry.password}"]
        if registry.kind != "open"
        else ["--dest-no-creds"]
    )
    result = subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
            *creds,
            "--digestfile",
            str(digest_file),
            f"oci:{layout}:{tag}",
            f"docker://{registry.login_server}/{repo}:{tag}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"skopeo copy failed ({result.returncode}):\n{result.stderr}")
    pushed = digest_file.read_text().strip()
    if pushed != image.digest:
        raise RuntimeError(f"pushed digest {pushed} differs from the built {image.digest}")
    registry.images[(repo, tag)] = image
    return pushed
