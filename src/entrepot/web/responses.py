"""What the faces share: JSON responses, which domain error an exception stands for, and the
management API's error middleware.

Each face is a sub-application with its own middleware (``app.py`` mounts them). This module
decides *which* domain error an exception stands for (:func:`domain_error`), so a 404 from the
router, an oversized body or a bug become the same error on every face; each face renders it in
its own wire shape. The management shape (ARM's ``{"error": {code, message, target}}`` with
``x-ms-request-id``) is used by the ARM face, the vault extension (``/entrepot/vaults``, whose
clients are ARM-style too) and the root application for paths no face claims; the registry
face (``web/oci.py``) renders OCI errors instead.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import typedefs, web

from entrepot import errors as e
from entrepot.config import ServerConfig
from entrepot.web.access_log import RateLimitedLog

__all__ = [
    "BaseUrl",
    "BodyTimeout",
    "Handler",
    "Middleware",
    "domain_error",
    "json_object_body",
    "json_response",
    "management_error",
    "management_errors",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_quiet = RateLimitedLog(logging.getLogger("entrepot.http"))
Middleware = typedefs.Middleware


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    """``body`` serialised with orjson, ``Content-Type: application/json``.

    Text that is not valid Unicode (a request's undecodable bytes echoed into a message) is
    written with U+FFFD in their place: rendering never fails.
    """
    try:
        data = orjson.dumps(body)
    except TypeError:
        data = orjson.dumps(_valid_text(body))
    return web.Response(status=status, body=data, content_type="application/json", headers=headers)


def _valid_text(value: Any) -> Any:
    """``value`` with every string's lone surrogates replaced by U+FFFD."""
    if isinstance(value, str):
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value)
    if isinstance(value, dict):
        return {_valid_text(k): _valid_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_valid_text(v) for v in value]
    return value


_FORWARDED_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?\Z"
)
_FORWARDED_PAIR = re.compile(r'\s*([A-Za-z]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)\s*')


class BaseUrl:
    """Where absolute URLs in responses (``Azure-AsyncOperation``, ``Location``, ``nextLink``)
    point: never at the request's ``Host``.

    It is ``[server] public_url`` when set, else ``X-Forwarded-Proto``/``X-Forwarded-Host``
    (or ``Forwarded``'s ``proto``/``host``) when the request comes straight from an address in
    ``[server] trusted_proxies`` and the values are a plain scheme and ``host[:port]``, else
    :attr:`entrepot.config.ServerConfig.base_url` (the listen address). Of a list, the *last*
    value counts: the one the trusted proxy itself added, not one its client sent along. No
    trailing slash.
    """

    def __init__(self, server: ServerConfig) -> None:
        self.configured = server.base_url
        self.fixed = bool(server.public_url)
        self.trusted = tuple(
            ipaddress.ip_network(p.strip(), strict=False) for p in server.trusted_proxies
        )

    def of(self, request: web.BaseRequest) -> str:
        """The base URL for absolute URLs in the answer to ``request``."""
        if self.fixed or not self.trusted or not self._from_trusted_proxy(request.remote):
            return self.configured
        proto, host = _forwarded(request)
        scheme, _, configured_host = self.configured.partition("://")
        if proto is not None and proto.lower() in ("http", "https"):
            scheme = proto.lower()
        if host is not None and _FORWARDED_HOST.match(host):
            configured_host = host
        return f"{scheme}://{configured_host}"

    def _from_trusted_proxy(self, remote: str | None) -> bool:
        try:
            address = ipaddress.ip_address(remote or "")
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.trusted)


def _forwarded(request: web.BaseRequest) -> tuple[str | None, str | None]:
    """``(proto, host)`` the proxy forwarded: ``Forwarded``'s last element, else the last
    values of ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` (the last header of each).

    A request carrying both kinds is trusted for neither (``(None, None)``): a proxy sets one
    kind and may pass the other through from its client unchanged, so which one the proxy wrote
    cannot be told.
    """
    forwarded = request.headers.getall("Forwarded", [])
    x_forwarded = "X-Forwarded-Host" in request.headers or "X-Forwarded-Proto" in request.headers
    if forwarded and x_forwarded:
        return None, None
    if forwarded:
        last = forwarded[-1].rsplit(",", 1)[-1]
        pairs = {m.group(1).lower(): m.group(2).strip('"') for m in _FORWARDED_PAIR.finditer(last)}
        return pairs.get("proto"), pairs.get("host")

    def final(name: str) -> str | None:
        values = request.headers.getall(name, [])
        return values[-1].rsplit(",", 1)[-1].strip() if values else None

    return final("X-Forwarded-Proto"), final("X-Forwarded-Host")


class BodyTimeout(ConnectionError):
    """What reading a request body raises once the server's body timeout cut it off."""


def domain_error(exc: Exception, request: web.Request, log: logging.Logger) -> e.EntrepotError:
    """The domain error that ``exc``, raised while handling ``request``, is answered with.

    Domain errors are returned as they are. aiohttp's HTTP exceptions map by status: 413 is
    :class:`~entrepot.errors.PayloadTooLarge`, 405 :class:`~entrepot.errors.MethodNotAllowed`,
    404 :class:`~entrepot.errors.RouteNotFound`, any other below 500
    :class:`~entrepot.errors.BadRequest` with aiohttp's reason. A body that cannot be read
    because the client hung up is logged as one warning line without a traceback, at most once
    per interval; one cut off by the body timeout (:class:`BodyTimeout`) is a
    :class:`~entrepot.errors.RequestTimeout`; a body the parser refused is a
    :class:`~entrepot.errors.BadRequest`. Anything else is a bug: it is logged with its
    traceback on ``log`` and becomes an :class:`~entrepot.errors.InternalError` whose message
    says nothing about it.
    """
    if isinstance(exc, e.EntrepotError):
        return exc
    if isinstance(exc, BodyTimeout):  # the server cut the connection, and said so in the log
        return e.RequestTimeout("The request body did not arrive in time.")
    if isinstance(exc, ConnectionError):
        _quiet.warning(
            "hang-up",
            "the client %s hung up during %s %s (%s)",
            request.remote,
            request.method,
            request.raw_path.split("?", 1)[0][:200],
            type(exc).__name__,
        )
        return e.BadRequest("The connection was closed before the request was complete.")
    if isinstance(exc, web.RequestPayloadError):
        return e.BadRequest("The request body could not be read: it is not valid HTTP/1.1.")
    if isinstance(exc, web.HTTPException):
        if exc.status == 413:
            return e.PayloadTooLarge("The request body is too large.")
        if exc.status == 405:
            return e.MethodNotAllowed(f"The method is not allowed here ({exc.reason}).")
        if exc.status == 404:
            return e.RouteNotFound("No such resource.")
        if exc.status < 500:
            return e.BadRequest(exc.reason or "Bad request.")
        return e.InternalError("The server failed to handle the request.")
    log.error("unhandled error in %s %s", request.method, request.path, exc_info=exc)
    return e.InternalError("The server failed to handle the request.")


def management_error(err: e.EntrepotError) -> web.Response:
    """``err`` in the management API's shape: ``{"error": {"code", "message"[, "target"]}}``.

    The status is the error table's; a 401 carries ``WWW-Authenticate: Bearer realm="entrepot"``.
    """
    error: dict[str, Any] = {"code": err.code, "message": err.message}
    if err.target:
        error["target"] = err.target
    headers = {}
    if isinstance(err, e.Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="entrepot"'
    return json_response(err.status, {"error": error}, headers)


def management_errors(log: logging.Logger) -> Middleware:
    """The middleware of the management-shaped faces.

    Every response gets a fresh ``x-ms-request-id`` and echoes ``x-ms-client-request-id`` (when
    at most 200 characters); every exception is answered by :func:`management_error` of
    :func:`domain_error` (unexpected ones logged on ``log``).
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = str(uuid.uuid4())
        try:
            response = await handler(request)
        except Exception as exc:
            response = management_error(domain_error(exc, request, log))
        response.headers["x-ms-request-id"] = request_id
        client_id = request.headers.get("x-ms-client-request-id")
        if client_id and len(client_id) <= 200:
            response.headers["x-ms-client-request-id"] = client_id
        return response

    return middleware


async def json_object_body(
    request: web.Request, allowed: tuple[str, ...], *, required: bool = True
) -> dict[str, Any]:
    """The request's JSON object body with only the ``allowed`` keys (``{}`` for an empty body
    unless ``required``). Errors never quote the body: it may hold a secret value.

    :raises InvalidRequestContent: empty (when required), not JSON, or not an object.
    :raises InvalidPropertyValue: a key outside ``allowed`` (named in ``target``).
    """
    raw = await request.read()
    if not raw.strip():
        if required:
            raise e.InvalidRequestContent("The request body is empty; a JSON object is required.")
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise e.InvalidRequestContent("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise e.InvalidRequestContent("The request body must be a JSON object.")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise e.InvalidPropertyValue(
            f"Unknown propert{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(repr(k[:100]) for k in unknown)}; allowed: "
            f"{', '.join(allowed) or 'none'}.",
            target=unknown[0][:100],
        )
    return body
