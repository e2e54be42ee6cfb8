"""Zero-copy sending of local files on an aiohttp connection (``sendfile(2)``).

What callers may rely on:

* :func:`send_span` sends a :class:`~entrepot.storage.FileSpan` on the connection of a prepared
  response: with ``sendfile(2)`` straight from the file to the socket when the connection is
  plain TCP (the bytes never enter Python), else (TLS, no socket) by reading the file in
  :data:`~entrepot.storage.CHUNK_SIZE` chunks and writing them as any body. Either way the
  response's ``body_length`` (the access log's ``bytes``) counts the span.
* It works on uvloop (what ``entrepot serve`` runs) and on asyncio's own loops alike: it does
  not use ``loop.sendfile``, which uvloop does not implement. It waits until the transport has
  written what it had buffered (the headers, earlier chunks), then writes to a duplicate of the
  socket's descriptor, waiting for it to be writable between calls, so the event loop is never
  blocked on the network (a file not in the page cache is read by the kernel on the loop's
  thread, as every ``sendfile`` server does).
* A client that hangs up ends the sending with :class:`ConnectionError`; so does one that reads
  nothing for :data:`STALL_SECONDS` (it no longer holds a descriptor and a task forever). Waiting
  for a client costs no CPU: the transport's buffer is waited for with its flow control, the
  socket with the loop's writer callback.
* :data:`STATS` counts the spans and bytes sent each way (tests check that the zero-copy path is
  the one taken).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from entrepot.storage import FileSpan

__all__ = ["STALL_SECONDS", "STATS", "SendfileStats", "send_span", "zero_copy_possible"]

_MAX_CALL = 1 << 30  # bytes one sendfile(2) call may be asked for
STALL_SECONDS = 120.0
"""How long a client may read nothing before its answer is given up."""


@dataclass
class SendfileStats:
    """What :func:`send_span` sent, since the process started."""

    zero_copy_spans: int = 0
    zero_copy_bytes: int = 0
    copied_spans: int = 0
    copied_bytes: int = 0


STATS = SendfileStats()


def zero_copy_possible(request: web.BaseRequest) -> bool:
    """Whether the request's connection can take ``sendfile(2)``: plain TCP, not TLS."""
    transport = request.transport
    if transport is None or transport.get_extra_info("sslcontext") is not None:
        return False
    sock = transport.get_extra_info("socket")
    return sock is not None and sock.fileno() >= 0


async def send_span(
    request: web.BaseRequest,
    response: web.StreamResponse,
    writer: AbstractStreamWriter,
    span: FileSpan,
) -> None:
    """Send ``span`` as the next bytes of ``response``'s body (prepared: ``writer`` is what
    ``prepare`` returned).

    :raises ConnectionError: when the client hung up.
    :raises StorageError: when the file is shorter than the span (copying path).
    """
    if not zero_copy_possible(request):
        async for data in span.chunks():
            await response.write(data)
        STATS.copied_spans += 1
        STATS.copied_bytes += span.count
        return
    transport = request.transport
    assert transport is not None
    # what aiohttp wrote before (the headers at least) goes out first
    if transport.get_write_buffer_size():
        await _flushed(transport, writer)
    if transport.is_closing():
        raise ConnectionResetError("the client hung up")
    sock = transport.get_extra_info("socket")
    fd = os.dup(sock.fileno())  # ours: the transport may close its own meanwhile
    try:
        await _sendfile(fd, span)
    finally:
        os.close(fd)
    writer.output_size += span.count  # StreamResponse.body_length is read from it at EOF
    STATS.zero_copy_spans += 1
    STATS.zero_copy_bytes += span.count


async def _flushed(transport: asyncio.WriteTransport, writer: AbstractStreamWriter) -> None:
    """Wait until ``transport`` has written all it buffered: its flow control pauses the
    protocol while anything is buffered (high-water mark 0) and ``drain`` waits for the
    resume; at most :data:`STALL_SECONDS`."""
    low, high = transport.get_write_buffer_limits()  # asyncio and uvloop: (low, high)
    transport.set_write_buffer_limits(high=0, low=0)
    try:
        await asyncio.wait_for(writer.drain(), STALL_SECONDS)
    except TimeoutError:
        raise ConnectionResetError("the client read nothing for too long") from None
    finally:
        if not transport.is_closing():
            transport.set_write_buffer_limits(high=high, low=low)
    if transport.get_write_buffer_size() and not transport.is_closing():
        raise ConnectionResetError("the client's connection did not drain")


async def _sendfile(sock_fd: int, span: FileSpan) -> None:
    loop = asyncio.get_running_loop()
    offset, left = span.offset, span.count
    while left:
        try:
            sent = os.sendfile(sock_fd, span.fd, offset, min(left, _MAX_CALL))
        except BlockingIOError:
            await _writable(loop, sock_fd)
            continue
        except OSError as exc:  # EPIPE, ECONNRESET: the client is gone
            raise ConnectionResetError(f"sending a file failed: {exc.strerror}") from None
        if sent == 0:
            raise ConnectionResetError("the file ended before the span did")
        offset += sent
        left -= sent


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    waiter: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not waiter.done():
            waiter.set_result(None)

    loop.add_writer(fd, ready)
    try:
        await asyncio.wait_for(waiter, STALL_SECONDS)
    except TimeoutError:
        raise ConnectionResetError("the client read nothing for too long") from None
    finally:
        loop.remove_writer(fd)
