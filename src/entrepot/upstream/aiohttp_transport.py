"""The production :class:`~entrepot.upstream.transport.Transport`, over an aiohttp session.

The only module of :mod:`entrepot.upstream` that sees ``aiohttp.ClientResponse``: it turns
one into an :class:`~entrepot.upstream.response.UpstreamResponse` and aiohttp's exceptions
into domain errors. With an :class:`~entrepot.upstream.guard.AddressGuard` it connects only to
the addresses the guard allows (see :mod:`entrepot.upstream.guard`).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping

import aiohttp
from yarl import URL

from entrepot.errors import UpstreamError, UpstreamTlsError, UpstreamUnreachable
from entrepot.upstream.guard import AddressGuard, AddressRefused, GuardedConnector, unreachable
from entrepot.upstream.response import UpstreamResponse, hostport
from entrepot.upstream.transport import Timeouts

__all__ = ["AiohttpTransport"]

log = logging.getLogger("entrepot.upstream")

_FAILURES = (aiohttp.ClientError, OSError, TimeoutError, ValueError)


class AiohttpTransport:
    """Sends each request through ``session`` (its connector pools connections and decides
    TLS trust: system CAs by default), with aiohttp's own redirects and decompression switched
    off: a body comes as the bytes sent, whatever its ``Content-Encoding`` (a blob stored
    gzip-compressed is those bytes, by digest; :meth:`UpstreamResponse.read
    <entrepot.upstream.response.UpstreamResponse.read>` decodes documents).

    Every failure to connect (refused by ``guard``, connection refused, unreachable network, no
    answer in time) raises the same :func:`~entrepot.upstream.guard.unreachable` error, so that
    messages say nothing about which ports are open.

    :param session: the session to use; :meth:`close` closes it only if ``owns_session``.
        Without one, the transport opens its own on first use (inside the running event loop,
        where aiohttp wants it) and owns it. With a ``guard``, a given session must have been
        made with ``connector=guard.connector(...)``.
    :param owns_session: whether :meth:`close` closes ``session``.
    :param guard: the address policy of every connection (``None``: no address is refused,
        for tests and callers whose every URL comes from the config file).
    :raises ValueError: a ``guard`` and a ``session`` whose connector does not apply it.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        owns_session: bool = False,
        guard: AddressGuard | None = None,
    ) -> None:
        if guard is not None and session is not None:
            connector = session.connector
            if not isinstance(connector, GuardedConnector) or connector.guard is not guard:
                raise ValueError(
                    "a guarded AiohttpTransport needs a session made with guard.connector()"
                )
        self._session = session
        self._owns_session = owns_session or session is None
        self._guard = guard

    @property
    def guard(self) -> AddressGuard | None:
        """The address policy applied, if any."""
        return self._guard

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or (self._session.closed and self._owns_session):
            connector = self._guard.connector() if self._guard is not None else None
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def send(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: bytes | None = None,
        *,
        timeouts: Timeouts,
    ) -> UpstreamResponse:
        """One exchange (see :class:`~entrepot.upstream.transport.Transport`)."""
        client_timeout = aiohttp.ClientTimeout(
            total=timeouts.total, sock_connect=timeouts.connect, sock_read=timeouts.read
        )
        try:
            if self._guard is not None:
                self._guard.check_url(url)  # IP literals: aiohttp resolves only names
            resp = await self._open().request(
                method,
                url,
                headers=dict(headers),
                data=body,
                allow_redirects=False,
                raise_for_status=False,
                auto_decompress=False,
                timeout=client_timeout,
            )
        except AddressRefused:
            raise unreachable(hostport(url), timeouts.shortest, refused=True) from None
        except _FAILURES as exc:
            raise transport_error(exc, url, timeouts.shortest) from None
        return UpstreamResponse(
            resp.status,
            resp.headers,
            resp.url,
            _AiohttpBody(resp, timeouts.read if timeouts.read is not None else timeouts.shortest),
            reason=resp.reason or "",
        )

    async def close(self) -> None:
        """Close the session if this transport owns it."""
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()


class _AiohttpBody:
    """The :class:`~entrepot.upstream.response.ResponseBody` of an ``aiohttp.ClientResponse``."""

    def __init__(self, resp: aiohttp.ClientResponse, timeout: float | None) -> None:
        self._resp = resp
        self._timeout = timeout
        self._eof = False

    async def read_chunk(self, size: int) -> bytes:
        if self._eof:
            return b""
        try:
            chunk = await self._resp.content.read(size)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise transport_error(exc, self._resp.url, self._timeout, connected=True) from None
        except ValueError:  # a Content-Encoding that does not decode
            raise UpstreamError(
                f"The body sent by upstream {hostport(self._resp.url)} could not be decoded."
            ) from None
        if not chunk:
            self._eof = True
        return chunk

    async def close(self) -> None:
        # release() puts the connection back in the pool only when the whole body has come
        # off the wire (unread bytes already buffered do not matter); otherwise aiohttp closes
        # it. So a small 401 or 307 closed unread keeps its connection, a big blob does not.
        self._resp.release()


def transport_error(
    exc: BaseException, url: URL, timeout: float | None, *, connected: bool = False
) -> UpstreamError:
    """A domain error for a failed exchange with ``url``; names the host, nothing secret.

    Before the response (``connected`` false), a refused connection, an unreachable network and
    a timeout all give the one :func:`~entrepot.upstream.guard.unreachable` error (the cause
    goes to the debug log), so that closed and filtered ports look alike. While reading a body
    (``connected``), a timeout says the upstream stopped answering.
    """
    host = hostport(url)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        reason = getattr(cert_error, "verify_message", None) or type(cert_error).__name__
        return UpstreamTlsError(f"The TLS certificate of upstream {host} is not trusted: {reason}.")
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        inner = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
        reason = getattr(inner, "reason", None) or getattr(inner, "verify_message", None)
        detail = f": {reason}" if isinstance(reason, str) else ""
        return UpstreamTlsError(f"The TLS handshake with upstream {host} failed{detail}.")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return UpstreamUnreachable(f"The name of upstream {host} does not resolve.")
    if isinstance(exc, TimeoutError) and connected:
        within = f" within {timeout:g} s" if timeout is not None else " in time"
        return UpstreamUnreachable(f"The upstream {host} did not answer{within}.")
    if isinstance(exc, TimeoutError | aiohttp.ClientConnectorError):
        log.debug("upstream %s: no connection or no answer: %r", host, exc)
        return unreachable(host, timeout)
    if isinstance(exc, aiohttp.ClientConnectionError | ConnectionError):
        return UpstreamUnreachable(
            f"The connection to upstream {host} failed ({type(exc).__name__})."
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamUnreachable(
            f"The body sent by upstream {host} was cut short or malformed ({type(exc).__name__})."
        )
    if isinstance(exc, aiohttp.InvalidURL | ValueError):
        return UpstreamError(f"The URL of upstream {host} is invalid.")
    return UpstreamError(f"The request to upstream {host} failed ({type(exc).__name__}).")
