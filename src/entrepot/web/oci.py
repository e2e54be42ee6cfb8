"""The registry face: the OCI distribution API under ``/v2/``, mounted there by ``app.py``.

For now it answers only the API version check: ``GET /v2/`` (and ``HEAD``) is 200 with body
``{}``. Every response carries ``Docker-Distribution-API-Version: registry/2.0`` and an
``X-Request-Id`` of its own (never ``x-ms-request-id``: this is not the management API).

Every request is first addressed to one registry by its ``Host`` header
(:mod:`entrepot.addressing`); the registry's name is in ``request[REGISTRY]`` for the handlers.
A host that names no registry, the server's own host when no registry is the default, a
registry that does not exist and a name held by several registries are all 404
``NAME_UNKNOWN`` whose message says which: a request never reaches another registry.

Errors are OCI JSON, ``{"errors": [{"code", "message", "detail"}]}``, with the status and the
OCI code of the domain error's row in the error table (:mod:`entrepot.errors`); ``detail`` is
``{"target": ...}`` when the error names one, else ``null``. A path under ``/v2/`` with no route
is 404 ``UNSUPPORTED`` (distribution's own router answers an unformatted 404 there; the OCI
spec's ``UNSUPPORTED`` says best that this registry has no such API, and ``NAME_UNKNOWN`` stays
reserved for registries and repositories that do not exist); a method a route does not allow is
405 ``UNSUPPORTED``; anything unexpected is 500 ``UNKNOWN`` with a message that says nothing
about it (the traceback goes to the log only).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Protocol

from aiohttp import web

from entrepot import errors as e
from entrepot.addressing import DEFAULT, RegistryAddressing
from entrepot.web.responses import Handler, domain_error, json_response

__all__ = [
    "API_VERSION",
    "API_VERSION_HEADER",
    "MOUNT",
    "REGISTRY",
    "REQUEST_ID_HEADER",
    "RegistryFace",
    "RegistryLookup",
    "build_oci_app",
    "oci_error",
]

log = logging.getLogger("entrepot.web.oci")

MOUNT = "/v2"
API_VERSION_HEADER = "Docker-Distribution-API-Version"
API_VERSION = "registry/2.0"
REQUEST_ID_HEADER = "X-Request-Id"
REGISTRY = web.RequestKey("registry", str)
"""The (lower-case) name of the registry a request is addressed to."""


class RegistryLookup(Protocol):
    """What the face needs to know about the registries that exist (I/O; ``app.py`` provides)."""

    async def count_named(self, name: str) -> int:
        """How many registries, of any subscription and resource group, are named ``name``
        (case-insensitive); any number above 1 may be reported as 2."""

    async def sole_registry(self) -> str | None:
        """The name of the server's only registry; ``None`` when it has none or several."""


def oci_error(err: e.EntrepotError) -> web.Response:
    """``err`` as OCI error JSON with the error table's status and OCI code."""
    detail: dict[str, Any] | None = {"target": err.target} if err.target else None
    body = {"errors": [{"code": err.kind.oci_code, "message": err.message, "detail": detail}]}
    return json_response(err.status, body)


class RegistryFace:
    """The middleware and handlers of the face."""

    def __init__(self, addressing: RegistryAddressing, lookup: RegistryLookup) -> None:
        self.addressing = addressing
        self.lookup = lookup

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = str(uuid.uuid4())
        try:
            request[REGISTRY] = await self.registry_for(request.headers.get("Host", ""))
            response = await handler(request)
        except web.HTTPNotFound:
            response = oci_error(
                e.RouteNotFound(f"This registry has no API at {request.method} {request.path}.")
            )
        except web.HTTPMethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.allowed_methods))
            response = oci_error(
                e.MethodNotAllowed(
                    f"The method {request.method} is not allowed at {request.path}; "
                    f"allowed: {allowed}."
                )
            )
        except Exception as exc:
            response = oci_error(domain_error(exc, request, log))
        response.headers[API_VERSION_HEADER] = API_VERSION
        response.headers[REQUEST_ID_HEADER] = request_id
        return response

    async def registry_for(self, host: str) -> str:
        """The name of the one registry that ``Host: host`` addresses.

        :raises ResourceNotFound: (``NAME_UNKNOWN``) when it addresses none, a registry that does
            not exist, or a name that several registries hold.
        """
        target = self.addressing.registry_name_for_host(host)
        shown = host[:255]
        domain = self.addressing.domain
        if target is None:
            raise e.ResourceNotFound(
                f"No registry answers at host '{shown}': registries of this server are "
                f"addressed as <registry name>.{domain}.",
                target="Host",
            )
        if target is DEFAULT:
            name = self.addressing.default_registry
            if name is None:
                name = await self.lookup.sole_registry()
                if name is None:
                    how = (
                        f"address a registry by its login server, <registry name>.{domain}"
                        if domain
                        else "set [server] registry_domain to address each registry by name"
                    )
                    raise e.ResourceNotFound(
                        f"No registry answers at the server's own host '{shown}': the server "
                        "holds no registry or several, and [server] default_registry is not "
                        f"set; {how}.",
                        target="Host",
                    )
                return name.lower()
            what = f"The default registry '{name}' ([server] default_registry)"
        else:
            name = target
            what = f"The registry '{name}'"
        count = await self.lookup.count_named(name)
        if count == 0:
            raise e.ResourceNotFound(f"{what} does not exist.", target="Host")
        if count > 1:
            raise e.ResourceNotFound(
                f"{what} is ambiguous: registries of that name exist in several resource groups.",
                target="Host",
            )
        return name

    async def version_check(self, _request: web.Request) -> web.Response:
        """``GET /v2/``: the registry speaks the distribution API (no authentication yet)."""
        return json_response(200, {})


def build_oci_app(addressing: RegistryAddressing, lookup: RegistryLookup) -> web.Application:
    """The registry face, to be mounted at :data:`MOUNT`."""
    face = RegistryFace(addressing, lookup)
    app = web.Application(middlewares=[face.middleware])
    app.router.add_get("/", face.version_check)
    app.router.add_get("", face.version_check)  # /v2 (no trailing slash) answers the same
    return app
