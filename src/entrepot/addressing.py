"""Registry addressing: which login server each registry has, and which registry a host names.

Pure logic over ``[server]`` (no I/O, no HTTP); docs/adr/0003-registry-addressing.md explains
the choices. In short:

* Without ``registry_domain`` every registry reports the server's own address as its login
  server (the ``public_url``'s ``host[:port]`` as written, else the listen address with
  wildcards as loopback), and the ``Host`` of a ``/v2/`` request is not looked at: every request
  is for the server's own host (:data:`DEFAULT`).
* With ``registry_domain = "cache.example.com"`` registry ``MyRegistry`` is
  ``myregistry.cache.example.com``, plus ``:PORT`` when the port clients connect to is not the
  scheme's default (the ``public_url``'s port when it has one, else the listen port; http is
  assumed without ``public_url``). A ``/v2/`` request is routed by the host name of its
  ``Host`` header (its port is ignored): ``<name>.<registry_domain>`` names registry ``<name>``;
  the server's own host names :data:`DEFAULT`; any other host names nothing.
* The server's own hosts: the ``public_url``'s host, the listen host, and ``localhost``,
  ``127.0.0.1`` and ``::1`` when listening on loopback or on a wildcard address; on a wildcard
  address any IP literal too (an address cannot name a registry). An own host wins over
  ``<name>.<registry_domain>`` when both match.

Which registry :data:`DEFAULT` is (``default_registry``, else the only registry) and whether a
name exists is for the caller to find out.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from urllib.parse import urlsplit

from entrepot.config import ServerConfig, split_listen

__all__ = ["DEFAULT", "Default", "RegistryAddressing", "split_host"]

_NAME_RE = re.compile(r"^[a-z0-9-]{5,50}\Z")  # registry names, lower-cased
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Default(enum.Enum):
    """The type of :data:`DEFAULT`."""

    DEFAULT = "the server's own host"


DEFAULT = Default.DEFAULT
"""A host that names the server itself: the default registry answers there."""


def split_host(host: str) -> tuple[str, int | None] | None:
    """A ``Host`` header value as ``(host name, port)``: lower case, no trailing dot, IPv6
    without brackets and compressed. ``None`` when it is not of that shape."""
    value = host.strip().lower()
    m = re.fullmatch(r"\[([0-9a-f:.]+)\](?::(\d{1,5}))?|([^:\[\]/@\s]+)(?::(\d{1,5}))?", value)
    if m is None:
        return None
    port_text = m.group(2) or m.group(4)
    port = int(port_text) if port_text else None
    if port is not None and not 0 < port <= 65535:
        return None
    if m.group(1) is not None:
        try:
            return ipaddress.IPv6Address(m.group(1)).compressed, port
        except ValueError:
            return None
    name = m.group(3)
    name = name[:-1] if name.endswith(".") else name  # one root dot: "a.example." is absolute
    return (name, port) if name and not name.endswith(".") else None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class RegistryAddressing:
    """Login servers and host routing for one server configuration.

    :ivar domain: ``registry_domain`` lower-cased, ``None`` when not set.
    :ivar default_registry: ``default_registry`` lower-cased, ``None`` when not set.
    :ivar own_hosts: the host names (no port) that are the server's own (see the module).
    """

    def __init__(self, server: ServerConfig) -> None:
        self.domain = server.registry_domain.lower().rstrip(".") or None
        self.default_registry = server.default_registry.lower() or None
        listen_host, listen_port = split_listen(server.listen)
        listen_host = listen_host.strip("[]").lower()
        own: set[str] = set()
        if server.public_url:
            parts = urlsplit(server.public_url)
            own.add((parts.hostname or "").lower().rstrip("."))
            self._server_address = parts.netloc
            port = parts.port
            self._port = None if port in (None, _DEFAULT_PORTS.get(parts.scheme)) else port
        else:
            self._server_address = server.local_address
            self._port = None if listen_port == _DEFAULT_PORTS["http"] else listen_port
        self._wildcard = listen_host in _WILDCARDS
        listen_ip = _ip(listen_host)
        if not self._wildcard:
            own.add(listen_ip.compressed if listen_ip is not None else listen_host)
        if self._wildcard or listen_host == "localhost" or (listen_ip and listen_ip.is_loopback):
            own |= _LOOPBACK_NAMES
        own.discard("")
        self.own_hosts = frozenset(own)

    def login_server(self, registry_name: str) -> str:
        """The ``host[:port]`` clients pull ``registry_name`` from (its ARM ``loginServer``)."""
        if self.domain is None:
            return self._server_address
        port = f":{self._port}" if self._port is not None else ""
        return f"{registry_name.lower()}.{self.domain}{port}"

    def registry_name_for_host(self, host: str) -> str | Default | None:
        """The registry a request with ``Host: host`` is for.

        :returns: a registry name (lower case, not known to exist), :data:`DEFAULT` for the
            server's own host (always, without ``registry_domain``; also for an empty ``host``),
            or ``None`` when ``host`` names no registry of this server.
        """
        if self.domain is None or not host.strip():
            return DEFAULT
        split = split_host(host)
        if split is None:
            return None
        name = split[0]
        ip = _ip(name)
        if name in self.own_hosts or (ip is not None and ip.compressed in self.own_hosts):
            return DEFAULT
        if ip is not None:
            return DEFAULT if self._wildcard else None
        label, dot, rest = name.partition(".")
        if dot and rest == self.domain and _NAME_RE.match(label):
            return label
        return None
