"""The configuration: one frozen :class:`Config`, loaded once and validated before serving.

Sources, later ones winning:

1. defaults declared next to each field below;
2. a TOML file (``--config FILE`` or ``ENTREPOT_CONFIG``);
3. environment variables ``ENTREPOT_<SECTION>_<KEY>`` (``ENTREPOT_SERVER_LISTEN=0.0.0.0:5000``,
   ``ENTREPOT_ARM_PAGE_SIZE=50``; lists are comma-separated, booleans ``true``/``false``);
4. explicit overrides from the command line (``--listen``, ``--data-dir``).

Example file::

    [server]
    listen = "127.0.0.1:5000"
    public_url = "https://entrepot.example.com"   # absolute URLs in LRO headers and nextLink
    data_dir = "/var/lib/entrepot"
    registry_domain = "cache.example.com"   # registry NAME is NAME.cache.example.com
    default_registry = "my-registry"        # answers on the server's own host

    [database]
    url = "postgresql://entrepot@db/entrepot"        # default: SQLite under data_dir

    [arm]
    page_size = 100
    retry_after = 1
    max_rules_per_registry = 1000

    [policy]
    allowed_login_servers = ["docker.io", "*.example.com"]   # empty: any upstream
    require_docker_hub_credentials = true

    [secrets]
    env_enabled = true
    env_allow = ["REGISTRY_*"]

    [health]
    interval_seconds = 600

    [registry]
    anonymous_pull = false                  # default: true only while listening on loopback
    rules_refresh_seconds = 1
    [storage]
    driver = "filesystem"                   # or "memory" (content lost at exit: tests)
    root = "/srv/entrepot-content"          # default: <data_dir>/content

    [upstreams."docker.io"]
    url = "http://127.0.0.1:5001"

    [[registries]]
    subscription = "00000000-0000-0000-0000-000000000000"
    resource_group = "my-resource-group"
    name = "my-registry"

Every error raised here is a :class:`~entrepot.errors.ConfigError` whose message names the key.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints
from urllib.parse import quote, unquote, urlsplit

from entrepot.errors import ConfigError, InvalidLoginServer
from entrepot.oci import parse_login_server

DEFAULT_LISTEN = "127.0.0.1:5000"
DEFAULT_DATA_DIR = "./entrepot-data"
ENV_PREFIX = "ENTREPOT_"
TOKEN_FILE = "admin-token"
NAME_RE = re.compile(r"^[a-zA-Z0-9-]{5,50}\Z")
RESOURCE_GROUP_RE = re.compile(r"^[-\w._()]{1,90}\Z")
SUBSCRIPTION_RE = re.compile(r"^[A-Za-z0-9-]{1,64}\Z")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
REGISTRY_DOMAIN_RE = re.compile(rf"^(?:{_LABEL}\.)*{_LABEL}\Z", re.IGNORECASE)


@dataclass(frozen=True)
class ServerConfig:
    """``[server]``: where to listen, where the data lives, how registries are addressed.

    ``registry_domain`` (a DNS name, empty: none) gives each registry its own login server
    ``<name>.<registry_domain>``; ``default_registry`` (a registry name, empty: none) is the
    registry that answers ``/v2/`` on the server's own host. See :mod:`entrepot.addressing`.
    """

    listen: str = DEFAULT_LISTEN
    public_url: str = ""
    data_dir: str = DEFAULT_DATA_DIR
    log_level: str = "info"
    registry_domain: str = ""
    default_registry: str = ""
    trusted_proxies: tuple[str, ...] = ()  # addresses or networks whose X-Forwarded-* count
    header_timeout_seconds: float = 10.0  # from a request's first byte to its last header line
    body_timeout_seconds: float = 60.0  # from the end of the headers to the body's last byte
    shutdown_timeout_seconds: float = 5.0  # how long SIGTERM waits for requests in progress
    access_log: str = "text"  # text | json | off
    tls_cert: str = ""  # PEM certificate chain; with tls_key, every face is served over HTTPS
    tls_key: str = ""
    allow_insecure_http: bool = False  # plain HTTP on an address off loopback

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]

    @property
    def local_address(self) -> str:
        """``host:port`` a client on this machine reaches: wildcard hosts become loopback."""
        host, port = split_listen(self.listen)
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{port}"

    @property
    def base_url(self) -> str:
        """Where clients reach this server: ``public_url``, else ``https://`` (with ``tls_cert``)
        or ``http://`` + the listen address (wildcards as loopback); no trailing slash. The one
        source of absolute URLs."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"{'https' if self.tls_cert else 'http'}://{self.local_address}"

    @property
    def listens_on_loopback(self) -> bool:
        """Whether the listen host is ``localhost`` or a loopback address (wildcards are not)."""
        return is_loopback_host(self.host)


@dataclass(frozen=True)
class DatabaseConfig:
    """``[database]``: ``url`` empty means SQLite at ``<data_dir>/entrepot.db``."""

    url: str = ""


@dataclass(frozen=True)
class ArmConfig:
    """``[arm]``: behaviour of the management API."""

    page_size: int = 100
    retry_after: int = 1
    max_rules_per_registry: int = 1000
    max_credential_sets_per_registry: int = 1000
    max_request_bytes: int = 1_048_576
    operation_min_seconds: float = 0.0
    default_location: str = "local"
    operation_lease_seconds: float = 10.0  # how long a runner holds an operation between renewals
    operation_sweep_seconds: float = 3.0  # how often each process looks for orphaned operations


@dataclass(frozen=True)
class PolicyConfig:
    """``[policy]``: which upstreams rules and credential sets may name, and which addresses
    entrepot connects to for them (:mod:`entrepot.upstream.guard`).

    ``allowed_upstream_networks`` (CIDRs) and ``allowed_upstream_hosts`` (host names or
    ``*.domain``) allow addresses the guard refuses otherwise: loopback, link-local, unspecified,
    and private ones when ``forbid_private_addresses``.
    """

    allowed_login_servers: tuple[str, ...] = ()
    require_docker_hub_credentials: bool = False
    forbid_private_addresses: bool = False
    allowed_upstream_networks: tuple[str, ...] = ()
    allowed_upstream_hosts: tuple[str, ...] = ()

    def allow_listed(self, host: str) -> bool:
        """Whether ``host`` (no port; an IP literal or a name) is in an upstream allow-list."""
        name = host.strip("[]").lower().rstrip(".")
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return any(
                name.endswith(p[1:]) and name != p[2:] if p.startswith("*.") else name == p
                for p in (h.lower() for h in self.allowed_upstream_hosts)
            )
        return any(address in ipaddress.ip_network(n) for n in self.allowed_upstream_networks)


@dataclass(frozen=True)
class SecretsConfig:
    """``[secrets]``: which secret resolvers besides the built-in vault are enabled.

    ``env:NAME`` identifiers resolve only when ``env_enabled`` and ``NAME`` matches one of the
    ``env_allow`` glob patterns; ``file:///PATH`` identifiers only when ``file_enabled`` and
    ``PATH`` lies under one of ``file_roots``. The built-in vault is always on.
    """

    env_enabled: bool = False
    env_allow: tuple[str, ...] = ()
    file_enabled: bool = False
    file_roots: tuple[str, ...] = ()


@dataclass(frozen=True)
class HealthConfig:
    """``[health]``: when credential health is measured besides create/update."""

    interval_seconds: float = 600.0
    timeout_seconds: float = 15.0


STORAGE_DRIVERS = ("filesystem", "memory")
"""The content-store drivers ``[storage] driver`` may name (:mod:`entrepot.storage`)."""

CONTENT_DIR = "content"
"""The content store's directory under the data dir when ``[storage] root`` is empty."""


@dataclass(frozen=True)
class StorageConfig:
    """``[storage]``: where content (blobs and manifests, by digest) is kept.

    ``driver`` is one of :data:`STORAGE_DRIVERS`; ``root`` is the filesystem driver's directory
    (empty: ``<data_dir>/content``; a relative path is relative to the working directory).
    """

    driver: str = "filesystem"
    root: str = ""


@dataclass(frozen=True)
class CacheConfig:
    """``[cache]``: the pull-through cache. ``tag_ttl_seconds``: how long a cached tag is served
    without asking the upstream again (0: revalidate on every pull). ``upstream_stall_seconds``:
    an upstream that sends nothing for this long (no headers, or no byte of a body) fails the
    request; there is no limit on a whole download. ``fill_lease_seconds``: how long a blob
    fill holds its cross-process lease between renewals (also how long other processes wait
    before taking over the fill of a process that died on another host; the lease of a process
    of this host that died is taken over at once). ``revalidate_timeout_seconds``: a
    stale tag with a cached copy is revalidated with one try that may wait this long (to
    connect, then for the answer), no retries; past it the copy is served ``stale``.
    ``upstream_backoff_seconds``: after an upstream could not be asked (unreachable, TLS, 5xx,
    429), requests that have a cached copy serve it ``stale`` without asking that upstream (its
    login server) for this long (0: always ask). ``max_blob_bytes``: the largest blob fetched
    from an upstream (a larger announced size is refused at once, a download of unknown size is
    cut when it passes it; nothing is kept). ``min_free_bytes``: the free space a fill must
    leave on the storage's filesystem (a blob whose announced size does not fit is refused, a
    download that brings the free space below it is cut; drivers that cannot tell their free
    space are not checked)."""

    tag_ttl_seconds: float = 300.0
    upstream_stall_seconds: float = 30.0
    fill_lease_seconds: float = 30.0
    revalidate_timeout_seconds: float = 3.0
    upstream_backoff_seconds: float = 15.0
    max_blob_bytes: int = 32 * 1024**3
    min_free_bytes: int = 1024**3


@dataclass(frozen=True)
class RegistryConfig:
    """``[registry]``: the registry face (``/v2/``).

    ``anonymous_pull``: whether pulls need no credentials; unset (or ``"auto"`` in the
    environment) means on only while the server listens on loopback
    (:attr:`Config.anonymous_pull`). Otherwise clients send HTTP Basic credentials: an API
    token's name and the token. ``rules_refresh_seconds``: how long the registry face uses the
    registries and cache rules it read before one point read revalidates them (changes made by
    this process apply at once; see :mod:`entrepot.proxy.directory`).
    """

    anonymous_pull: bool | None = None
    rules_refresh_seconds: float = 1.0


@dataclass(frozen=True)
class UpstreamEndpoint:
    """``[upstreams."<login server>"]``: where that login server's ``/v2/`` API really is.

    ``Config.upstreams`` is keyed by the login server in its normal form
    (:func:`entrepot.oci.parse_login_server`: lower case, IPv6 compressed).
    """

    url: str


@dataclass(frozen=True)
class RegistrySeed:
    """``[[registries]]``: a registry that exists from the first start."""

    subscription: str
    resource_group: str
    name: str
    location: str = "local"


@dataclass(frozen=True)
class Config:
    """The whole configuration. Each subsystem is handed only its own section."""

    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    arm: ArmConfig = field(default_factory=ArmConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    secrets: SecretsConfig = field(default_factory=SecretsConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    upstreams: Mapping[str, UpstreamEndpoint] = field(default_factory=dict)
    registries: tuple[RegistrySeed, ...] = ()

    @property
    def data_dir(self) -> Path:
        return Path(self.server.data_dir)

    @property
    def database_url(self) -> str:
        """The SQLAlchemy async URL of the metadata store."""
        return database_url(self.database.url, self.data_dir)

    @property
    def token_file(self) -> Path:
        return self.data_dir / TOKEN_FILE

    @property
    def anonymous_pull(self) -> bool:
        """``[registry] anonymous_pull``, or when unset whether the server listens on loopback."""
        if self.registry.anonymous_pull is None:
            return self.server.listens_on_loopback
        return self.registry.anonymous_pull

    @property
    def storage_root(self) -> Path:
        """The content store's directory: ``[storage] root``, else ``<data_dir>/content``."""
        return Path(self.storage.root) if self.storage.root else self.data_dir / CONTENT_DIR

    def sanitized(self) -> dict[str, Any]:
        """The configuration as plain data, safe for logs (passwords in URLs masked)."""
        return {
            "server": {
                k: list(v) if isinstance(v, tuple) else v for k, v in vars(self.server).items()
            },
            "database": {"url": mask_url(self.database_url)},
            "arm": vars(self.arm),
            "policy": {
                k: list(v) if isinstance(v, tuple) else v for k, v in vars(self.policy).items()
            },
            "secrets": {
                k: list(v) if isinstance(v, tuple) else v for k, v in vars(self.secrets).items()
            },
            "health": vars(self.health),
            "registry": vars(self.registry),
            "storage": vars(self.storage),
            "cache": vars(self.cache),
            "upstreams": {k: mask_url(v.url) for k, v in self.upstreams.items()},
            "registries": [vars(r) for r in self.registries],
        }


_SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "database": DatabaseConfig,
    "arm": ArmConfig,
    "policy": PolicyConfig,
    "secrets": SecretsConfig,
    "health": HealthConfig,
    "registry": RegistryConfig,
    "storage": StorageConfig,
    "cache": CacheConfig,
}


def split_listen(listen: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (IPv6 as ``[::1]:5000``) to ``(host, port)``.

    :raises ConfigError: when it is not of that shape.
    """
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]*):(\d{1,5})", listen.strip())
    if not m:
        raise ConfigError(f"server.listen: expected HOST:PORT, got {listen!r}")
    host = m.group(1) or m.group(3) or "0.0.0.0"
    port = int(m.group(2) or m.group(4))
    if not 0 <= port <= 65535:
        raise ConfigError(f"server.listen: port {port} is out of range")
    return host, port


def database_url(url: str, data_dir: Path) -> str:
    """Normalise a database URL to its async SQLAlchemy driver form.

    The user name and password are percent-encoded as they reach the driver, so a password
    written with a raw ``/``, ``@`` or ``:`` is taken as written (escapes already present are
    kept).
    """
    if not url:
        return f"sqlite+aiosqlite:///{(data_dir / 'entrepot.db').resolve()}"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + _quote_userinfo(url.split("://", 1)[1])
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    if url.startswith("sqlite+aiosqlite:///"):
        return url
    if url.startswith("postgresql+asyncpg://"):
        return "postgresql+asyncpg://" + _quote_userinfo(url.split("://", 1)[1])
    raise ConfigError(
        f"database.url: unsupported scheme in {mask_url(url)!r}; use sqlite:///PATH or "
        "postgresql://USER@HOST/DB"
    )


_SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pwd", "pass", "sslpassword", "secret"})


_HOST_AFTER_AT = re.compile(r"[A-Za-z0-9._~%\-]*(?:\[[0-9A-Fa-f:.]*\])?(?::[0-9]*)?(?=$|[/?#])")


def _split_userinfo(rest: str) -> tuple[str, str, str] | None:
    """``(user, password, after)`` of ``rest`` (a URL after ``scheme://``) when it holds a
    password. The user info ends at the rightmost ``@`` that is followed by a host (and then
    the end, ``/``, ``?`` or ``#``) and preceded by ``user:`` with a plain user name, so a
    password with a raw ``/``, ``@``, ``?`` or ``#`` is found whole, and an ``@`` inside a query
    value is not taken for one. ``after`` starts at that ``@``."""
    at = len(rest)
    while (at := rest.rfind("@", 0, at)) >= 0:
        user, colon, password = rest[:at].partition(":")
        if _HOST_AFTER_AT.match(rest, at + 1) and not any(c in user for c in "/?#@"):
            return (user, password, rest[at:]) if colon else None
    return None


def _quote_userinfo(rest: str) -> str:
    found = _split_userinfo(rest)
    if found is None:
        return rest
    user, password, after = found
    return f"{quote(unquote(user), safe='')}:{quote(unquote(password), safe='')}{after}"


def mask_url(url: str) -> str:
    """``url`` with its password hidden: the user info's password and the values of query
    parameters such as ``password=`` become ``***``. Safe for any log line or error message,
    also when a password holds a raw ``/``, ``@`` or ``:`` (it may then hide a little more)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    found = _split_userinfo(rest)
    if found is not None:
        rest = f"{found[0]}:***{found[2]}"
    head, qmark, query = rest.partition("?")
    if qmark:
        pairs = []
        for pair in query.split("&"):
            key, eq, _value = pair.partition("=")
            secret = unquote(key).strip().lower() in _SECRET_QUERY_KEYS
            pairs.append(f"{key}=***" if eq and secret else pair)
        rest = f"{head}?{'&'.join(pairs)}"
    return f"{scheme}{sep}{rest}"


class ConfigErrors(ConfigError):
    """Every problem found in one loading pass, each message naming its key.

    ``problems`` lists them in the order found; ``str()`` is the one message when there is
    one, else a count followed by one indented line per problem.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            text = f"{len(self.problems)} configuration errors:\n" + "\n".join(
                f"  {problem}" for problem in self.problems
            )
        super().__init__(text)


class _Problems:
    """Collects configuration errors so that one run reports all of them."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def add(self, message: str) -> None:
        """Record ``message`` (once: checks that depend on one bad value say it once)."""
        if message not in self.found:
            self.found.append(message)

    @contextmanager
    def check(self) -> Iterator[None]:
        """Run a block; a :class:`ConfigError` it raises is recorded and the caller goes on."""
        try:
            yield
        except ConfigErrors as exc:
            for problem in exc.problems:
                self.add(problem)
        except ConfigError as exc:
            self.add(str(exc))

    def raise_any(self) -> None:
        if self.found:
            raise ConfigErrors(self.found)


KNOWN_SECTIONS = (*_SECTIONS, "upstreams", "registries")


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load, merge and validate the configuration.

    Every problem is reported at once: the error raised is a :class:`ConfigErrors` listing
    each one (its message is the single problem's when there is only one). A file that cannot
    be read or parsed is reported alone.

    :param path: the TOML file; ``None`` means ``ENTREPOT_CONFIG`` if set, else defaults only.
    :param env: the environment to read ``ENTREPOT_*`` from (default ``os.environ``).
    :param overrides: ``{"server.listen": "...", ...}`` applied last; ``None`` values are skipped.
    :raises ConfigError: on any unreadable file, unknown section or key, or invalid value.
    """
    environ = os.environ if env is None else env
    if path is None and environ.get("ENTREPOT_CONFIG"):
        path = environ["ENTREPOT_CONFIG"]
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {str(path)!r} cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None

    problems = _Problems()
    for name in sorted(set(raw) - set(KNOWN_SECTIONS)):
        problems.add(
            f"[{name}]: unknown config section (known: {', '.join(sorted(KNOWN_SECTIONS))})"
        )

    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            problems.add(f"[{name}] must be a table")
            table = {}
        sections[name] = _build_section(name, cls, table, problems)

    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == "ENTREPOT_CONFIG":
            continue
        rest = key[len(ENV_PREFIX) :].lower()
        section, _, attr = rest.partition("_")
        if section not in _SECTIONS:
            continue  # other ENTREPOT_* variables (ENTREPOT_URL, ENTREPOT_TOKEN ...) are not config
        with problems.check():
            sections[section] = _override(section, sections[section], attr, value, from_env=True)

    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, attr = dotted.partition(".")
        if section not in _SECTIONS:
            problems.add(f"unknown override {dotted!r}")
            continue
        with problems.check():
            sections[section] = _override(section, sections[section], attr, value, from_env=False)

    upstreams = _load_upstreams(raw.get("upstreams", {}), problems)
    registries = _load_registries(raw.get("registries", []), problems)
    config = Config(upstreams=upstreams, registries=registries, **sections)
    with problems.check():
        _validate(config, problems)
    problems.raise_any()
    return config


def _build_section(name: str, cls: type, table: Mapping[str, Any], problems: _Problems) -> Any:
    instance = cls()
    for key, value in table.items():
        with problems.check():
            instance = _override(name, instance, key, value, from_env=False)
    return instance


def _override(section: str, instance: Any, attr: str, value: Any, *, from_env: bool) -> Any:
    hints = get_type_hints(type(instance))
    names = {f.name for f in fields(instance)}
    if attr not in names:
        where = f"ENTREPOT_{section.upper()}_{attr.upper()}" if from_env else f"{section}.{attr}"
        raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(names))})")
    converted = _convert(f"{section}.{attr}", hints[attr], value, from_env)
    return replace(instance, **{attr: converted})


def _convert(where: str, hint: Any, value: Any, from_env: bool) -> Any:
    origin = get_origin(hint)
    if hint == bool | None:  # unset means "auto"; only the environment can say it in words
        if from_env and isinstance(value, str) and value.strip().lower() in {"", "auto"}:
            return None
        return _convert(where, bool, value, from_env)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if from_env and isinstance(value, str) and value.lower() in {"1", "true", "yes", "on"}:
            return True
        if from_env and isinstance(value, str) and value.lower() in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if origin is tuple and get_args(hint)[0] is str:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    raise ConfigError(f"{where}: not a JSON list: {value!r}") from None
            else:
                value = [p.strip() for p in text.split(",") if p.strip()]
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    raise ConfigError(f"{where}: unsupported setting type")  # pragma: no cover


def _load_upstreams(table: Any, problems: _Problems) -> dict[str, UpstreamEndpoint]:
    out: dict[str, UpstreamEndpoint] = {}
    if not isinstance(table, dict):
        problems.add("[upstreams] must be a table of login servers")
        return out
    for login_server, entry in table.items():
        with problems.check():
            _load_upstream(login_server, entry, out)
    return out


def _load_upstream(login_server: str, entry: Any, out: dict[str, UpstreamEndpoint]) -> None:
    where = f'upstreams."{login_server}"'
    try:
        key = parse_login_server(login_server).text
    except InvalidLoginServer as exc:
        raise ConfigError(f"{where}: {exc.message}") from None
    if key in out:
        raise ConfigError(f"{where}: login server {key!r} is configured twice")
    if not isinstance(entry, dict) or set(entry) != {"url"} or not isinstance(entry["url"], str):
        raise ConfigError(f'{where}: expected a table with one key, url = "<scheme>://<host>"')
    parts = urlsplit(entry["url"])
    if parts.scheme not in {"http", "https"} or not parts.netloc or parts.query:
        raise ConfigError(
            f"{where}.url: expected http(s)://HOST[:PORT], got {mask_url(entry['url'])!r}"
        )
    if parts.path not in ("", "/") or parts.fragment:
        raise ConfigError(
            f"{where}.url: expected http(s)://HOST[:PORT] without a path (entrepot adds "
            f"/v2/... itself), got {mask_url(entry['url'])!r}"
        )
    out[key] = UpstreamEndpoint(url=entry["url"].rstrip("/"))


def _load_registries(items: Any, problems: _Problems) -> tuple[RegistrySeed, ...]:
    out: list[RegistrySeed] = []
    if not isinstance(items, list):
        problems.add("registries must be an array of tables ([[registries]])")
        return ()
    seen: dict[str, int] = {}  # lower-case name -> index of the entry that has it
    for i, item in enumerate(items):
        with problems.check():
            seed = _load_registry(f"registries[{i}]", item, seen)
            seen[seed.name.lower()] = i
            out.append(seed)
    return tuple(out)


def _load_registry(where: str, item: Any, seen: Mapping[str, int]) -> RegistrySeed:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a table")
    allowed = {"subscription", "resource_group", "name", "location"}
    if set(item) - allowed:
        raise ConfigError(f"{where}: unknown key(s) {sorted(set(item) - allowed)}")
    for key in ("subscription", "resource_group", "name"):
        if not isinstance(item.get(key), str):
            raise ConfigError(f"{where}.{key}: required string")
    seed = RegistrySeed(**item)
    if not SUBSCRIPTION_RE.match(seed.subscription):
        raise ConfigError(f"{where}.subscription: invalid subscription id {seed.subscription!r}")
    if not RESOURCE_GROUP_RE.match(seed.resource_group):
        raise ConfigError(f"{where}.resource_group: invalid name {seed.resource_group!r}")
    if not NAME_RE.match(seed.name):
        raise ConfigError(f"{where}.name: 5-50 letters, digits or hyphens, got {seed.name!r}")
    if seed.name.lower() in seen:
        raise ConfigError(
            f"{where}.name: {seed.name!r} is already the name of "
            f"registries[{seen[seed.name.lower()]}]; "
            "registry names are unique on the server (each has its own login server)"
        )
    return seed


def _validate(config: Config, problems: _Problems) -> None:
    """Check the values together; each problem is recorded in ``problems`` (a check that raises
    :class:`ConfigError` ends this function, and its message is recorded by the caller)."""
    with problems.check():
        split_listen(config.server.listen)
    if config.server.public_url:
        parts = urlsplit(config.server.public_url)
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.query:
            problems.add(
                "server.public_url: expected an absolute http(s) URL, got "
                f"{config.server.public_url!r}"
            )
    if config.server.log_level.lower() not in {"debug", "info", "warning", "error"}:
        problems.add("server.log_level: one of debug, info, warning, error")
    domain = config.server.registry_domain
    if domain and (
        not REGISTRY_DOMAIN_RE.match(domain)
        or len(domain) > 200
        or domain.rsplit(".", 1)[-1].isdigit()
    ):
        problems.add(
            "server.registry_domain: expected a DNS name such as cache.example.com (no scheme, "
            f"port, wildcard or trailing dot; at most 200 characters), got {domain!r}"
        )
    if config.server.default_registry and not NAME_RE.match(config.server.default_registry):
        problems.add(
            "server.default_registry: a registry name, 5-50 letters, digits or hyphens, got "
            f"{config.server.default_registry!r}"
        )
    _validate_serving(config.server, problems)
    with problems.check():
        database_url(config.database.url, config.data_dir)
    arm = config.arm
    checks = [
        (1 <= arm.page_size <= 1000, "arm.page_size: between 1 and 1000"),
        (0 <= arm.retry_after <= 600, "arm.retry_after: seconds between 0 and 600"),
        (1 <= arm.max_rules_per_registry <= 100_000, "arm.max_rules_per_registry: 1 to 100000"),
        (
            1 <= arm.max_credential_sets_per_registry <= 100_000,
            "arm.max_credential_sets_per_registry: 1 to 100000",
        ),
        (1024 <= arm.max_request_bytes <= 64 * 1_048_576, "arm.max_request_bytes: 1 KiB to 64 MiB"),
        (0 <= arm.operation_min_seconds <= 3600, "arm.operation_min_seconds: 0 to 3600"),
        (
            0.3 <= arm.operation_lease_seconds <= 3600,
            "arm.operation_lease_seconds: 0.3 to 3600",
        ),
        (
            0.1 <= arm.operation_sweep_seconds <= arm.operation_lease_seconds,
            "arm.operation_sweep_seconds: 0.1 to arm.operation_lease_seconds",
        ),
        (
            1 <= config.health.interval_seconds <= 86400,
            "health.interval_seconds: 1 to 86400",
        ),
        (0.1 <= config.health.timeout_seconds <= 300, "health.timeout_seconds: 0.1 to 300"),
        (
            0 <= config.cache.tag_ttl_seconds <= 86400 * 365,
            "cache.tag_ttl_seconds: 0 to 31536000",
        ),
        (
            0.1 <= config.cache.upstream_stall_seconds <= 3600,
            "cache.upstream_stall_seconds: 0.1 to 3600",
        ),
        (
            0.3 <= config.cache.fill_lease_seconds <= 3600,
            "cache.fill_lease_seconds: 0.3 to 3600",
        ),
        (
            0.1 <= config.cache.revalidate_timeout_seconds <= 300,
            "cache.revalidate_timeout_seconds: 0.1 to 300",
        ),
        (
            0 <= config.cache.upstream_backoff_seconds <= 3600,
            "cache.upstream_backoff_seconds: 0 to 3600",
        ),
        (
            1 <= config.cache.max_blob_bytes <= 2**50,
            "cache.max_blob_bytes: 1 to 1125899906842624 (1 PiB)",
        ),
        (
            0 <= config.cache.min_free_bytes <= 2**50,
            "cache.min_free_bytes: 0 to 1125899906842624 (1 PiB)",
        ),
        (
            0 <= config.registry.rules_refresh_seconds <= 3600,
            "registry.rules_refresh_seconds: 0 to 3600",
        ),
    ]
    for ok, message in checks:
        if not ok:
            problems.add(message)
    if config.storage.driver not in STORAGE_DRIVERS:
        problems.add(
            f"storage.driver: one of {', '.join(STORAGE_DRIVERS)}, got {config.storage.driver!r}"
        )
    if "\0" in config.storage.root:
        problems.add("storage.root: a directory path, got one with a NUL character")
    for pattern in config.policy.allowed_login_servers:
        if not _is_login_server_pattern(pattern):
            problems.add(
                f"policy.allowed_login_servers: {pattern!r} is not a login server or *.domain"
            )
    for network in config.policy.allowed_upstream_networks:
        try:
            ipaddress.ip_network(network)
        except ValueError:
            problems.add(
                f"policy.allowed_upstream_networks: {network!r} is not a network such as "
                "10.1.0.0/16 or 127.0.0.1/32 (no host bits set beyond the prefix)"
            )
    for pattern in config.policy.allowed_upstream_hosts:
        if not _is_host_pattern(pattern):
            problems.add(
                f"policy.allowed_upstream_hosts: {pattern!r} is not a lower-case host name or "
                "*.domain (no port; IP addresses go in allowed_upstream_networks)"
            )


def _validate_serving(server: ServerConfig, problems: _Problems) -> None:
    """The keys of how the server listens: timeouts, access log, proxies, TLS (each problem
    recorded, with the value given)."""
    checks = [
        (0.5 <= server.header_timeout_seconds <= 3600, "header_timeout_seconds", "0.5 to 3600"),
        (0.5 <= server.body_timeout_seconds <= 86400, "body_timeout_seconds", "0.5 to 86400"),
        (0 <= server.shutdown_timeout_seconds <= 600, "shutdown_timeout_seconds", "0 to 600"),
        (server.access_log in ("text", "json", "off"), "access_log", "text, json or off"),
    ]
    for ok, key, allowed in checks:
        if not ok:
            problems.add(f"server.{key}: {allowed}, got {getattr(server, key)!r}")
    for proxy in server.trusted_proxies:
        try:
            ipaddress.ip_network(proxy.strip(), strict=False)
        except ValueError:
            problems.add(
                f"server.trusted_proxies: {proxy!r} is not an IP address or network (CIDR)"
            )
    if bool(server.tls_cert) != bool(server.tls_key):
        missing = "server.tls_key" if server.tls_cert else "server.tls_cert"
        problems.add(f"{missing}: server.tls_cert and server.tls_key are set together")
    with problems.check():
        loopback = server.listens_on_loopback
        if not server.tls_cert and not loopback and not server.allow_insecure_http:
            problems.add(
                f"server.allow_insecure_http: the listen address {server.listen!r} is off "
                "loopback and no TLS is configured; set server.tls_cert and server.tls_key, or "
                "set server.allow_insecure_http = true (e.g. behind a TLS-terminating proxy)"
            )


def _is_login_server_pattern(pattern: str) -> bool:
    """Whether ``pattern`` is a login server or ``*.<DNS name>[:port]``, in normal form."""
    wildcard = pattern.startswith("*.")
    try:
        parsed = parse_login_server(pattern[2:] if wildcard else pattern)
    except InvalidLoginServer:
        return False
    if wildcard and parsed.is_address:
        return False
    return parsed.text == (pattern[2:] if wildcard else pattern)


def _is_host_pattern(pattern: str) -> bool:
    """Whether ``pattern`` is a DNS name or ``*.<DNS name>``, lower case, without a port."""
    wildcard = pattern.startswith("*.")
    name = pattern[2:] if wildcard else pattern
    try:
        parsed = parse_login_server(name)
    except InvalidLoginServer:
        return False
    return not parsed.is_address and parsed.port is None and parsed.text == name


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (no port) is ``localhost`` or a literal loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_private_host(host: str) -> bool:
    """Whether ``host`` (no port) is a literal loopback, private or link-local address."""
    if host == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return addr.is_private or addr.is_loopback or addr.is_link_local
