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

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import typedefs, web

from entrepot import errors as e

__all__ = [
    "Handler",
    "Middleware",
    "domain_error",
    "json_response",
    "management_error",
    "management_errors",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
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


def domain_error(exc: Exception, request: web.Request, log: logging.Logger) -> e.EntrepotError:
    """The domain error that ``exc``, raised while handling ``request``, is answered with.

    Domain errors are returned as they are. aiohttp's HTTP exceptions map by status: 413 is
    :class:`~entrepot.errors.PayloadTooLarge`, 405 :class:`~entrepot.errors.MethodNotAllowed`,
    404 :class:`~entrepot.errors.RouteNotFound`, any other below 500
    :class:`~entrepot.errors.BadRequest` with aiohttp's reason. Anything else is a bug: it is
    logged with its traceback on ``log`` and becomes an :class:`~entrepot.errors.InternalError`
    whose message says nothing about it.
    """
    if isinstance(exc, e.EntrepotError):
        return exc
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
