"""The upstream address guard: which addresses entrepot connects to on a caller's behalf.

Credential health (and, next, pull-through) connects to hosts that callers of the API name:
credential-set login servers, cache-rule sources, and what those upstreams answer with (token
realms, redirect targets). The guard decides on **the address actually connected to**: after
DNS, for every hop, so a host name resolving to ``127.0.0.1``, a spelling such as ``0x7f.1`` or
``[::ffff:169.254.169.254]``, a ``302`` to a loopback URL and a token realm on loopback are all
judged by the address they lead to.

Policy (:class:`AddressGuard`):

* endpoints written in the config file (``[upstreams."..."] url``) are trusted as written: their
  ``(host, port)`` is connected to whatever it resolves to;
* every other address is refused when it is loopback, link-local (cloud metadata at
  ``169.254.169.254``), unspecified (``0.0.0.0/8``, ``::``), multicast, reserved, or a known
  cloud metadata address outside link-local (``fd00:ec2::254``, ``100.100.100.200``);
* other non-global addresses (RFC 1918, unique-local, shared ``100.64.0.0/10``...) are allowed,
  and refused when ``[policy] forbid_private_addresses = true``;
* ``[policy] allowed_upstream_networks`` (CIDRs) and ``allowed_upstream_hosts`` (host names or
  ``*.domain``) override both rules.

IPv6 addresses that embed an IPv4 address (mapped ``::ffff:a.b.c.d``, compatible ``::a.b.c.d``,
NAT64 ``64:ff9b::a.b.c.d``) are judged by that IPv4 address too. A host that looks numeric but is
no canonical address (``127.1``, ``2130706433``) is refused.

What callers may rely on: a refused address is never connected to (the refusal comes before any
socket exists), and the error a caller sees for it (:func:`unreachable`) is the same, message
shape included, as for a closed port or a filtered one, so that error messages cannot be used to
scan ports. The operator learns why from a warning in the server's log.

How it is enforced with aiohttp (:class:`AiohttpTransport
<entrepot.upstream.aiohttp_transport.AiohttpTransport>`): host names go through the resolver of
a :class:`GuardedConnector`, which keeps only the allowed addresses (aiohttp connects to what
its resolver returns, and nothing else); IP-literal hosts never reach a resolver in aiohttp, so
the transport checks them itself with :meth:`AddressGuard.check_url` before each exchange.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from entrepot.config import PolicyConfig, UpstreamEndpoint
from entrepot.errors import UpstreamAddressRefused, UpstreamUnreachable

__all__ = [
    "AddressGuard",
    "AddressRefused",
    "GuardedConnector",
    "GuardedResolver",
    "refusal_reason",
    "unreachable",
]

log = logging.getLogger("entrepot.upstream.guard")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CLOUD_METADATA: frozenset[IPAddress] = frozenset(
    {
        ipaddress.ip_address("fd00:ec2::254"),  # AWS instance metadata over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud metadata
    }
)
"""Metadata services outside link-local (``169.254.169.254`` and ``fe80::a9fe:a9fe`` are
link-local already): refused unless allow-listed, like loopback."""

_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def unreachable(host: str, timeout: float | None, *, refused: bool = False) -> UpstreamUnreachable:
    """The one error for an upstream that cannot be connected to, whatever the cause: refused
    by the guard, a closed port, a filtered one (no answer), or no answer in time.

    :param host: ``host[:port]`` as messages show it (:func:`~entrepot.upstream.response.
        hostport`).
    :param timeout: the time limit that applied, named in the message.
    :param refused: the guard refused the address: the same message, as an
        :class:`~entrepot.errors.UpstreamAddressRefused` (which is not retried).
    """
    within = f"within {timeout:g} s" if timeout is not None else "in time"
    cls = UpstreamAddressRefused if refused else UpstreamUnreachable
    return cls(
        f"The upstream {host} could not be reached: it refused the connection, the connection "
        f"is not allowed, or it did not answer {within}."
    )


class AddressRefused(Exception):
    """The guard refuses every address of ``host``; raised inside the transport, which turns it
    into :func:`unreachable` (never shown to callers as such).

    :ivar host: the host as the URL names it.
    :ivar port: the port.
    :ivar reasons: ``address (why)`` for each address refused, for the log.
    """

    def __init__(self, host: str, port: int, reasons: list[str]) -> None:
        super().__init__(f"{host}:{port} refused by the upstream address guard")
        self.host = host
        self.port = port
        self.reasons = reasons


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, compatible or NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal_reason(address: IPAddress) -> str | None:
    """Why ``address`` is refused by default (``"loopback"``, ``"link-local"``,
    ``"unspecified"``, ``"multicast"``, ``"reserved"``, ``"cloud metadata"``), ``"private"`` for
    another non-global address (refused only with ``forbid_private_addresses``), ``None`` for a
    global address. Allow-lists are not consulted here."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return refusal_reason(embedded)
    if address.is_unspecified or (
        isinstance(address, ipaddress.IPv4Address) and address in _THIS_NETWORK
    ):
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address in CLOUD_METADATA:
        return "cloud metadata"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "private"
    return None


def _parse_address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def _looks_numeric(host: str) -> bool:
    """What aiohttp treats as an IP literal (and so never resolves): digits and dots, or a
    colon. Such a host that is no canonical address is refused (``127.1``)."""
    return ":" in host or host.replace(".", "").isdigit()


def _normal_host(host: str) -> str:
    address = _parse_address(host)
    if address is not None:
        return address.compressed
    return host.lower().rstrip(".")


def _host_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and host != pattern[2:]
    return host == pattern


@dataclass(frozen=True)
class AddressGuard:
    """The address policy of upstream connections (see the module doc).

    :ivar forbid_private: refuse non-global addresses that are not refused anyway.
    :ivar allowed_networks: addresses in these networks are always allowed.
    :ivar allowed_hosts: host names (or ``*.domain``) whose addresses are always allowed.
    :ivar trusted: ``(host, port)`` of the config file's ``[upstreams]`` endpoints, hosts in
        normal form (lower case, no trailing dot, IP addresses compressed).
    """

    forbid_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    trusted: frozenset[tuple[str, int]] = frozenset()

    @classmethod
    def from_config(
        cls, policy: PolicyConfig, upstreams: Mapping[str, UpstreamEndpoint]
    ) -> AddressGuard:
        """The guard of ``[policy]`` (validated by :func:`entrepot.config.load_config`), trusting
        every ``[upstreams]`` endpoint."""
        trusted: set[tuple[str, int]] = set()
        for endpoint in upstreams.values():
            url = URL(endpoint.url)
            if url.host is not None and url.port is not None:
                trusted.add((_normal_host(url.host), url.port))
        return cls(
            forbid_private=policy.forbid_private_addresses,
            allowed_networks=tuple(
                ipaddress.ip_network(n) for n in policy.allowed_upstream_networks
            ),
            allowed_hosts=tuple(h.lower() for h in policy.allowed_upstream_hosts),
            trusted=frozenset(trusted),
        )

    def trusts(self, host: str, port: int) -> bool:
        """Whether every address of ``host:port`` may be connected to (a config endpoint or an
        allow-listed host name)."""
        name = _normal_host(host)
        return (name, port) in self.trusted or any(
            _host_matches(name, p) for p in self.allowed_hosts
        )

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` is refused (see :func:`refusal_reason`), ``None`` when allowed."""
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address):
            embedded = _embedded_ipv4(address)
            if embedded is not None:
                candidates.append(embedded)
        if any(a in net for a in candidates for net in self.allowed_networks):
            return None
        reason = refusal_reason(address)
        if reason == "private" and not self.forbid_private:
            return None
        return reason

    def check_literal(self, host: str, port: int) -> None:
        """Check a host aiohttp would connect to without resolving it (an IP literal, or
        anything numeric); host names pass (their resolver checks them).

        :raises AddressRefused: when the address is refused, or numeric but not canonical.
        """
        if not _looks_numeric(host) and _parse_address(host) is None:
            return
        if self.trusts(host, port):
            return
        address = _parse_address(host)
        if address is None:
            raise self._refused(host, port, [f"{host} (not a canonical address)"])
        reason = self.refusal(address)
        if reason is not None:
            raise self._refused(host, port, [f"{address.compressed} ({reason})"])

    def check_url(self, url: URL) -> None:
        """:meth:`check_literal` for the host and port ``url`` connects to.

        :raises AddressRefused: as :meth:`check_literal`.
        """
        host = url.raw_host
        if host is None or url.port is None:
            return  # not connectable: aiohttp refuses it on its own
        self.check_literal(host, url.port)

    def filter(self, host: str, port: int, results: list[ResolveResult]) -> list[ResolveResult]:
        """The resolved ``results`` of ``host`` that may be connected to.

        :raises AddressRefused: when none may.
        """
        if self.trusts(host, port):
            return results
        kept: list[ResolveResult] = []
        reasons: list[str] = []
        for result in results:
            address = _parse_address(str(result["host"]))
            reason = "unparsable" if address is None else self.refusal(address)
            if reason is None:
                kept.append(result)
            else:
                reasons.append(f"{result['host']} ({reason})")
        if not kept:
            raise self._refused(host, port, reasons)
        if reasons:
            log.info(
                "upstream address guard: %s:%s skips %s", host, port, ", ".join(sorted(reasons))
            )
        return kept

    def connector(
        self, *, resolver: AbstractResolver | None = None, **kwargs: Any
    ) -> GuardedConnector:
        """A ``TCPConnector`` whose resolver applies this guard (for
        ``aiohttp.ClientSession(connector=...)``).

        :param resolver: the resolver asked first (default: the system's ``getaddrinfo``).
        :param kwargs: passed to ``aiohttp.TCPConnector`` (``ssl``, ``limit``...).
        """
        return GuardedConnector(self, resolver=resolver, **kwargs)

    def _refused(self, host: str, port: int, reasons: list[str]) -> AddressRefused:
        log.warning(
            "upstream address guard refused %s:%s: %s; allow it with [policy] "
            "allowed_upstream_networks or allowed_upstream_hosts, or name it in [upstreams]",
            host,
            port,
            ", ".join(reasons) or "no address",
        )
        return AddressRefused(host, port, reasons)


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` (default: the system resolver), then keeps only the addresses
    ``guard`` allows (:meth:`AddressGuard.filter`); raises :class:`AddressRefused` when none."""

    def __init__(self, guard: AddressGuard, inner: AbstractResolver | None = None) -> None:
        self.guard = guard
        self._inner = inner
        self._owns_inner = inner is None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = ThreadedResolver()
        results = await self._inner.resolve(host, port, family)
        return self.guard.filter(host, port, results)

    async def close(self) -> None:
        if self._owns_inner and self._inner is not None:
            await self._inner.close()


class GuardedConnector(aiohttp.TCPConnector):
    """An ``aiohttp.TCPConnector`` that resolves host names through a :class:`GuardedResolver`.

    :ivar guard: the guard applied (a guarded :class:`AiohttpTransport
        <entrepot.upstream.aiohttp_transport.AiohttpTransport>` checks its session has it).
    """

    def __init__(
        self, guard: AddressGuard, *, resolver: AbstractResolver | None = None, **kwargs: Any
    ) -> None:
        super().__init__(resolver=GuardedResolver(guard, resolver), **kwargs)
        self.guard = guard
