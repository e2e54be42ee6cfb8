"""The HTTP server around the application: listening (plain or TLS), read timeouts, what the
HTTP parser refuses, and a graceful shutdown.

:func:`serve_app` runs an application until SIGINT or SIGTERM. What callers may rely on:

* **Read timeouts** (``[server] header_timeout_seconds`` / ``body_timeout_seconds``). A
  connection whose request headers are not complete within the header timeout of its first
  byte (or of the connection's start) is closed; so is one whose request body is not complete
  within the body timeout of the end of its headers, also when the request is authenticated
  and its handler is waiting for the body (the handler sees the connection lost). Idle
  keep-alive connections are closed by aiohttp's keep-alive timeout instead.
* **Parser errors** (a bad request line, an over-long URL or header line, too many headers):
  answered 400 in the management API's error shape (``{"error": {"code": "BadRequest",
  ...}}`` with ``x-ms-request-id``), whatever the path (it is not known when the request line
  itself is refused), and logged as one warning line without a traceback, at most once per
  interval (:class:`~entrepot.web.access_log.RateLimitedLog`). The message never repeats the
  client's bytes.
* **Headers**: every response has ``Server: entrepot`` (no versions).
* **Shutdown**: on SIGINT/SIGTERM the listener closes at once, idle connections are closed,
  requests in progress get ``[server] shutdown_timeout_seconds`` to finish and are then
  cancelled, and the application's cleanup runs; the call returns.
* **TLS**: :func:`tls_context` loads ``[server] tls_cert`` / ``tls_key`` (TLS 1.2 or newer);
  every face is then served over HTTPS on the one listen address.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import http_exceptions, web

from entrepot import errors as e
from entrepot.config import ServerConfig
from entrepot.errors import ConfigError
from entrepot.web.access_log import (
    ACCESS_LOGGER,
    PARSER_ERROR,
    AccessLogger,
    RateLimitedLog,
)
from entrepot.web.responses import BodyTimeout, management_error

__all__ = ["SERVER_HEADER", "ServingLimits", "serve_app", "tls_context"]

SERVER_HEADER = "entrepot"
log = logging.getLogger("entrepot.http")


@dataclass(frozen=True)
class ServingLimits:
    """How long a client may take to send a request; see the module docstring."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0

    @classmethod
    def of(cls, server: ServerConfig) -> ServingLimits:
        return cls(server.header_timeout_seconds, server.body_timeout_seconds)


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server TLS context for the PEM certificate chain ``cert`` and private key ``key``.

    :raises ConfigError: naming ``server.tls_cert`` or ``server.tls_key`` when a file is
        missing or unreadable, or they are not a matching certificate and unencrypted key.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for name, path in (("server.tls_cert", cert), ("server.tls_key", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read {path!r}: {exc.strerror or exc}") from None
    try:
        context.load_cert_chain(cert, key, password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        raise ConfigError(
            f"server.tls_cert / server.tls_key: {cert!r} and {key!r} are not a PEM certificate "
            f"chain and its unencrypted private key ({reason})"
        ) from None
    return context


def _describe(exc: BaseException | None) -> str:
    """What the parser refused, in words that never repeat the client's bytes."""
    if isinstance(exc, http_exceptions.LineTooLong):
        return "The request line or a header line is too long."
    if isinstance(exc, http_exceptions.BadHttpMethod):
        return "The request method is not valid."
    if isinstance(exc, http_exceptions.BadStatusLine | http_exceptions.InvalidURLError):
        return "The request line is not valid."
    return "The request is not valid HTTP/1.1."


class _Protocol(web.RequestHandler):
    """aiohttp's connection handler with read timeouts and quiet, JSON parser errors."""

    def __init__(
        self,
        manager: web.Server,
        *,
        limits: ServingLimits,
        warnings: RateLimitedLog,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._warnings = warnings
        self._between_requests = True
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    # -- timeouts -------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if data and self._between_requests and self._header_timer is None:
            self._arm_header_timer()  # a new request begins
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def headers_complete(self, request: web.BaseRequest) -> None:
        """Called when a request's headers are parsed: the body timer starts."""
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._between_requests = False
        if request.content.is_eof():
            return
        timer = asyncio.get_running_loop().call_later(
            self._limits.body_timeout, self._body_timed_out, request
        )
        self._body_timer = timer
        request.content.on_eof(timer.cancel)

    def request_done(self) -> None:
        """Called when the application has answered a request."""
        self._between_requests = True

    def _arm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = asyncio.get_running_loop().call_later(
            self._limits.header_timeout, self._headers_timed_out
        )

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    def _peer(self) -> str:
        peer = None if self.transport is None else self.transport.get_extra_info("peername")
        return str(peer[0]) if isinstance(peer, tuple) and peer else "-"

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        self._warnings.warning(
            "header-timeout",
            "closed a connection from %s: no complete request headers within %gs "
            "(server.header_timeout_seconds)",
            self._peer(),
            self._limits.header_timeout,
        )
        self.force_close()

    def _body_timed_out(self, request: web.BaseRequest) -> None:
        self._body_timer = None
        if request.content.is_eof() or self.transport is None:
            return
        self._warnings.warning(
            "body-timeout",
            "closed a connection from %s: the body of %s %s was not complete within %gs "
            "(server.body_timeout_seconds)",
            self._peer(),
            request.method,
            request.raw_path.split("?", 1)[0][:200],
            self._limits.body_timeout,
        )
        request.content.set_exception(BodyTimeout("the request body timed out"))
        self.force_close()

    # -- parser errors --------------------------------------------------------------------------
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The answer to a message the parser refused (or, a bug, to an exception that escaped
        every middleware): management-shaped JSON, and no traceback for the former."""
        if request.writer.output_size > 0:  # as aiohttp: the response has started
            raise ConnectionError("the response has started; cannot send an error instead")
        err: e.EntrepotError
        if status >= 500:
            log.error("unhandled error while serving %s", self._peer(), exc_info=exc)
            err = e.InternalError("The server failed to handle the request.")
        else:
            request[PARSER_ERROR] = True
            err = e.BadRequest(_describe(exc))
            self._warnings.warning(
                "parser-error",
                "refused a request from %s: %s (%s)",
                self._peer(),
                err.message,
                type(exc).__name__,
            )
        response = management_error(err)
        response.headers["x-ms-request-id"] = str(uuid.uuid4())
        response.headers["Server"] = SERVER_HEADER
        response.force_close()
        return response


class _Server(web.Server):
    """aiohttp's server, making :class:`_Protocol` connections and telling them when a
    request's headers are complete and when it has been answered."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        request_factory: Any,
        handler_cancellation: bool,
        limits: ServingLimits,
        warnings: RateLimitedLog,
        **kwargs: Any,
    ) -> None:
        async def answer(request: web.BaseRequest) -> web.StreamResponse:
            try:
                return await handler(request)
            finally:
                if isinstance(request.protocol, _Protocol):
                    request.protocol.request_done()

        def make_request(message: Any, payload: Any, protocol: Any, *args: Any) -> Any:
            request = request_factory(message, payload, protocol, *args)
            if isinstance(protocol, _Protocol):
                protocol.headers_complete(request)
            return request

        super().__init__(
            answer,
            request_factory=make_request,
            handler_cancellation=handler_cancellation,
            **kwargs,
        )
        self._serving_loop = asyncio.get_running_loop()
        self._protocol_kwargs = kwargs
        self._limits = limits
        self._warnings = warnings

    def __call__(self) -> web.RequestHandler:
        return _Protocol(
            self,
            loop=self._serving_loop,
            limits=self._limits,
            warnings=self._warnings,
            **self._protocol_kwargs,
        )


class _Runner(web.AppRunner):
    """aiohttp's application runner, serving through :class:`_Server`."""

    def __init__(
        self,
        app: web.Application,
        *,
        limits: ServingLimits,
        warnings: RateLimitedLog,
        shutdown_timeout: float,
        **protocol_kwargs: Any,
    ) -> None:
        super().__init__(app, shutdown_timeout=shutdown_timeout, **protocol_kwargs)
        self._serving = (limits, warnings, protocol_kwargs)

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()  # runs the application's startup
        limits, warnings, protocol_kwargs = self._serving
        return _Server(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            limits=limits,
            warnings=warnings,
            **protocol_kwargs,
        )


async def _server_header(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_HEADER


def serve_app(
    app: web.Application,
    server: ServerConfig,
    *,
    ssl_context: ssl.SSLContext | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve ``app`` on ``server.listen`` until SIGINT or SIGTERM (see the module docstring).

    ``on_listening`` is called with ``http(s)://<listen address>`` once the listener is open.

    :raises OSError: when the address cannot be bound.
    """
    app.on_response_prepare.append(_server_header)
    asyncio.run(_serve(app, server, ssl_context, on_listening))


async def _serve(
    app: web.Application,
    server: ServerConfig,
    ssl_context: ssl.SSLContext | None,
    on_listening: Callable[[str], None] | None,
) -> None:
    access: dict[str, Any] = {"access_log": None}
    if server.access_log != "off":
        access_logger = logging.getLogger(ACCESS_LOGGER)
        access = {
            "access_log": access_logger,
            "access_log_class": AccessLogger,
            "access_log_format": server.access_log,
        }
    runner = _Runner(
        app,
        limits=ServingLimits.of(server),
        warnings=RateLimitedLog(log),
        shutdown_timeout=server.shutdown_timeout_seconds,
        keepalive_timeout=75.0,
        **access,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, server.host, server.port, ssl_context=ssl_context)
        await site.start()
        if on_listening is not None:
            on_listening(f"{'https' if ssl_context else 'http'}://{server.listen}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info(
            "stopping: requests in progress get %gs (server.shutdown_timeout_seconds)",
            server.shutdown_timeout_seconds,
        )
    finally:
        await runner.cleanup()
