"""The swappable bottom of the upstream client: :class:`Transport` (one HTTP exchange).

:class:`~entrepot.upstream.client.UpstreamClient` does everything above the wire itself
(redirects hop by hop, ``Authorization`` kept to the endpoint's origin, retries, 429, tokens)
and asks a transport for each single exchange. :class:`AiohttpTransport
<entrepot.upstream.aiohttp_transport.AiohttpTransport>` is the one used in production; a
transport may also wrap another (to record or check each hop), as azure-core's policies and
httpx's transports do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from yarl import URL

from entrepot.upstream.response import UpstreamResponse

__all__ = ["Timeouts", "Transport"]


@dataclass(frozen=True)
class Timeouts:
    """Time limits of one exchange, in seconds (``None``: no limit).

    :ivar connect: to establish the connection (TLS included).
    :ivar read: for each read from the socket, headers and body alike.
    :ivar total: for the whole exchange, the body included.
    """

    connect: float | None = None
    read: float | None = None
    total: float | None = None

    @classmethod
    def exchange(cls, seconds: float) -> Timeouts:
        """A small exchange (a ping, a token) that must be over, body read, in ``seconds``."""
        return cls(total=seconds)

    @classmethod
    def stream(cls, seconds: float, read: float | None = None) -> Timeouts:
        """A body of any size: ``seconds`` to connect, ``read`` (default ``seconds``) for each
        read, no overall limit: a stalled body fails, a long one does not."""
        return cls(connect=seconds, read=seconds if read is None else read)

    @property
    def shortest(self) -> float | None:
        """The smallest limit set (named in "did not answer within N s" messages)."""
        limits = [t for t in (self.connect, self.read, self.total) if t is not None]
        return min(limits) if limits else None


class Transport(Protocol):
    """Sends one HTTP request and returns its response, headers read, body not yet.

    Contract, for implementations and for the rare caller outside ``UpstreamClient``:

    * exactly one exchange per :meth:`send`: redirects are **not** followed (a 3xx is
      returned like any status), no retries, no authentication added, no status raised;
    * the headers are sent as given (the transport may add ``Host``, ``Content-Length``,
      ``Accept-Encoding``...) and ``body`` as is;
    * a failure to exchange raises :class:`~entrepot.errors.UpstreamError` or a subclass
      (:class:`~entrepot.errors.UpstreamUnreachable` for connection failures and timeouts,
      :class:`~entrepot.errors.UpstreamTlsError` for TLS), never a library's own exception,
      and its message names the host and nothing secret;
    * the caller owns the returned :class:`UpstreamResponse`: it reads it to the end or
      closes it, so that the connection is released.
    """

    async def send(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: bytes | None = None,
        *,
        timeouts: Timeouts,
    ) -> UpstreamResponse:
        """One exchange; see the class docstring."""
        ...

    async def close(self) -> None:
        """Release what the transport owns (idempotent)."""
        ...
