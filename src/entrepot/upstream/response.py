"""One upstream HTTP response, whatever transport fetched it: :class:`UpstreamResponse`.

A transport (:mod:`entrepot.upstream.transport`) builds it from the status line, the headers,
the URL it asked and a :class:`ResponseBody`, the transport's own view of the bytes still on
the wire. Nothing here knows aiohttp.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Protocol

from multidict import CIMultiDictProxy
from yarl import URL

from entrepot.errors import UpstreamError

__all__ = ["DEFAULT_CHUNK_SIZE", "ResponseBody", "UpstreamResponse"]

DEFAULT_CHUNK_SIZE = 64 * 1024


class ResponseBody(Protocol):
    """The body of one response as a transport delivers it (implemented by transports).

    The response calls :meth:`read_chunk` until it returns ``b""``, and then (or earlier, or
    after a failure) :meth:`close` at least once.
    """

    async def read_chunk(self, size: int) -> bytes:
        """The next bytes, at most ``size`` (> 0), as soon as some have arrived; ``b""`` at
        the end of the body.

        :raises UpstreamError: (or a subclass, e.g. :class:`~entrepot.errors.
            UpstreamUnreachable`) the connection failed or timed out before the end.
        """
        ...

    async def close(self) -> None:
        """Let go of the connection: back to the pool when the body was read to its end,
        closed otherwise (it cannot be reused mid-body). Idempotent; never raises."""
        ...


class UpstreamResponse:
    """The status, headers and body of one upstream response; returned by
    :meth:`UpstreamClient.request <entrepot.upstream.client.UpstreamClient.request>` and by
    :meth:`Transport.send <entrepot.upstream.transport.Transport.send>`.

    What callers may rely on:

    * ``status``, ``reason``, ``headers`` and ``url`` are known as soon as the response is
      returned; the body is not read yet.
    * The body can be consumed **once**: by :meth:`read`, or by iterating :meth:`iter_chunks`.
      Consuming it a second time raises :class:`RuntimeError` (a programming error).
    * :meth:`read` gives the document: a ``Content-Encoding: gzip`` or ``deflate`` body (an
      upstream that compresses although asked for ``identity``) is decoded; any other encoding
      but ``identity`` is refused. :meth:`iter_chunks` gives the bytes sent, never decoded
      (blobs are bytes by digest, whatever encoding their storage labels them with).
    * :meth:`iter_chunks` yields the bytes as they come from the wire, each chunk at most the
      size asked and never empty, without buffering the whole body: a caller can tee them to
      its clients and to a file while it computes a digest.
    * Reading to the end gives the connection back to the pool by itself. :meth:`close`
      releases it in every case and is idempotent. Closing before the end is always safe: the
      connection goes back to the pool if the whole body has already arrived (a small error
      body), and is closed otherwise (bytes still on the wire cannot be skipped safely), so
      the client stays usable for further requests. ``async with response:`` closes on the
      way out, whatever happens.
    * A failure while reading raises an :class:`~entrepot.errors.UpstreamError` (usually
      :class:`~entrepot.errors.UpstreamUnreachable`) and closes the response.
    * Nothing secret is kept: the request's ``Authorization`` is not part of the response.

    :ivar status: the HTTP status code.
    :ivar reason: the reason phrase (``""`` if none).
    :ivar headers: the response headers, case-insensitive, read-only, repeated names kept
        (``headers.getall("WWW-Authenticate", [])``).
    :ivar url: the URL this response answers. From :meth:`UpstreamClient.request
        <entrepot.upstream.client.UpstreamClient.request>`, the last hop after redirects.
    """

    def __init__(
        self,
        status: int,
        headers: CIMultiDictProxy[str],
        url: URL,
        body: ResponseBody,
        *,
        reason: str = "",
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.url = url
        self._body = body
        self._consumed = False
        self._eof = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<UpstreamResponse {self.status} {self.url.with_query(None)}>"

    @property
    def closed(self) -> bool:
        """The connection was let go: :meth:`close` was called, or the body was read to its
        end or failed."""
        return self._closed

    @property
    def content_length(self) -> int | None:
        """``Content-Length`` as an integer, or ``None`` when absent or invalid."""
        value = self.headers.get("Content-Length", "").strip()
        return int(value) if value.isascii() and value.isdigit() else None

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body, decoded when its ``Content-Encoding`` is gzip or deflate (the
        response is closed afterwards).

        :param limit: the most bytes accepted, on the wire and decoded alike; a body announced
            or found to be longer is refused without being buffered beyond ``limit`` (and the
            response closed). ``None`` for no limit.
        :raises UpstreamError: the body is longer than ``limit``; its encoding is not gzip,
            deflate or identity, or it does not decode; or the connection failed (a subclass
            such as :class:`~entrepot.errors.UpstreamUnreachable`).
        :raises RuntimeError: the body was already consumed.
        """
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        self._consume()
        try:
            length = self.content_length
            if limit is not None and length is not None and length > limit:
                raise self._too_large(limit)
            parts: list[bytes] = []
            total = 0
            size = DEFAULT_CHUNK_SIZE if limit is None else min(DEFAULT_CHUNK_SIZE, limit + 1)
            while chunk := await self._next_chunk(size):
                total += len(chunk)
                if limit is not None and total > limit:
                    raise self._too_large(limit)
                parts.append(chunk)
            return self._decoded(b"".join(parts), limit)
        finally:
            await self.close()

    def iter_chunks(self, size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]:
        """The body, chunk by chunk as it arrives (each at most ``size`` bytes, never empty).

        The response closes itself after the last chunk and on a failure; a caller that stops
        early closes it (or uses ``async with``).

        :raises RuntimeError: the body was already consumed (raised here, not on iteration).
        """
        if size <= 0:
            raise ValueError("size must be > 0")
        self._consume()
        return _Chunks(self, size)

    async def close(self) -> None:
        """Release the connection (see the class docstring); idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._body.close()

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- internals -------------------------------------------------------------------------------

    def _consume(self) -> None:
        if self._consumed:
            raise RuntimeError("the body of this upstream response was already consumed")
        if self._closed:
            raise RuntimeError("this upstream response is closed")
        self._consumed = True

    def _decoded(self, data: bytes, limit: int | None) -> bytes:
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("", "identity"):
            return data
        if encoding in ("gzip", "x-gzip"):
            attempts = [16 + zlib.MAX_WBITS]
        elif encoding == "deflate":  # zlib-wrapped as RFC 9110 says, or raw as some send it
            attempts = [zlib.MAX_WBITS, -zlib.MAX_WBITS]
        else:
            raise UpstreamError(
                f"The upstream {hostport(self.url)} sent {self.url.path} in an encoding it was "
                "not asked for (only identity, gzip and deflate are read)."
            )
        for wbits in attempts:
            decoder = zlib.decompressobj(wbits)
            try:
                out = decoder.decompress(data, 0 if limit is None else limit + 1)
            except zlib.error:
                continue
            if limit is not None and len(out) > limit:
                raise self._too_large(limit)
            if decoder.eof and not decoder.unused_data:
                return out
        raise UpstreamError(
            f"The upstream {hostport(self.url)} sent {self.url.path} with a Content-Encoding "
            f"({encoding}) that does not decode."
        )

    def _too_large(self, limit: int) -> UpstreamError:
        return UpstreamError(
            f"The upstream {hostport(self.url)} sent a body larger than the {limit} bytes accepted "
            f"for {self.url.path}; refused."
        )

    async def _next_chunk(self, size: int) -> bytes:
        if self._eof:
            return b""
        if self._closed:
            raise RuntimeError("this upstream response was closed before the end of its body")
        try:
            chunk = await self._body.read_chunk(size)
        except BaseException:
            await self.close()
            raise
        if not chunk:
            self._eof = True
            await self.close()
        return chunk


def hostport(url: URL) -> str:
    """``host`` or ``host:port`` (IPv6 in brackets, default ports left out), for messages."""
    host = url.host or "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{url.port}" if url.port is not None and not url.is_default_port() else host


class _Chunks:
    """The iterator of :meth:`UpstreamResponse.iter_chunks` (a class, not an async generator,
    so that abandoning it leaves nothing for the event loop to finalise)."""

    def __init__(self, response: UpstreamResponse, size: int) -> None:
        self._response = response
        self._size = size

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._response._next_chunk(self._size)
        if not chunk:
            raise StopAsyncIteration
        return chunk
