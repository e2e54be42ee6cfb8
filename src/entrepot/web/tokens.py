"""The API-token management routes: an entrepot extension under ``/entrepot/tokens``.

Every route needs an **admin** bearer token (:class:`~entrepot.web.auth.TokenAuthenticator`:
no token 401, a ``pull`` token 403 ``AuthorizationFailed``). Errors are domain exceptions
rendered by :func:`~entrepot.web.responses.management_errors` as ARM JSON
``{"error": {code, message, target}}`` with ``x-ms-request-id``, as on the vault face.
:func:`build_tokens_app` makes the face, which ``app.py`` mounts at :data:`MOUNT`.

======  ====================================  ===============================================
GET     /entrepot/tokens                      ``{"value": [token...]}``, by name
GET     /entrepot/tokens/{name}               token (404 ``ResourceNotFound``)
PUT     /entrepot/tokens/{name}               body ``{"role": "admin"|"pull",
                                              "description": "..."}`` (description optional);
                                              201 + token with ``"value"``; 409
                                              ``ResourceExists`` if the name is taken
DELETE  /entrepot/tokens/{name}               204; 404 if missing; 409 ``Conflict`` for the
                                              last admin token
POST    /entrepot/tokens/{name}/rotate        200 + token with a new ``"value"``; the old
                                              secret stops working at once
======  ====================================  ===============================================

A token is ``{"name", "role", "description", "created", "createdBy"}`` (``created``: when its
current secret was issued). ``"value"``, the secret, appears only in the answers to PUT and
rotate (with ``Cache-Control: no-store``): it is stored as a SHA-256 digest and can never be
read back. Names are 1-63 of ``[A-Za-z0-9._-]``, case-insensitive; ``admin`` is the token
``entrepot serve`` created on first start, and rotating it rewrites ``<data_dir>/admin-token``.
"""

from __future__ import annotations

import logging

from aiohttp import web

from entrepot import errors as e
from entrepot.management.tokens import IssuedToken, TokenService, parse_role, token_view
from entrepot.web.auth import TokenAuthenticator
from entrepot.web.responses import json_object_body, json_response, management_errors

__all__ = ["MOUNT", "TOKENS_KEY", "TokenRoutes", "build_tokens_app"]

log = logging.getLogger("entrepot.web.tokens")
MOUNT = "/entrepot/tokens"  # where app.py mounts the face
TOKENS_KEY = web.AppKey("tokens", TokenService)
_NO_STORE = {"Cache-Control": "no-store"}


def _issued(status: int, issued: IssuedToken) -> web.Response:
    return json_response(status, issued.view(), _NO_STORE)


class TokenRoutes:
    """The handlers; each authenticates (admin) first, then validates, then acts."""

    def __init__(self, authenticator: TokenAuthenticator, tokens: TokenService) -> None:
        self.authenticator = authenticator
        self.tokens = tokens

    async def list_tokens(self, request: web.Request) -> web.Response:
        await self.authenticator.authenticate(request)
        return json_response(200, {"value": [token_view(t) for t in await self.tokens.list()]})

    async def get_token(self, request: web.Request) -> web.Response:
        await self.authenticator.authenticate(request)
        return json_response(200, token_view(await self.tokens.get(request.match_info["name"])))

    async def put_token(self, request: web.Request) -> web.Response:
        actor = await self.authenticator.authenticate(request)
        body = await json_object_body(request, allowed=("role", "description"), required=True)
        if "role" not in body:
            raise e.MissingProperty("'role' is required: 'admin' or 'pull'.", target="role")
        description = body.get("description", "")
        if description is None:
            description = ""
        if not isinstance(description, str):
            raise e.InvalidPropertyValue("'description' must be a string.", target="description")
        issued = await self.tokens.create(
            request.match_info["name"], parse_role(body["role"]), actor, description
        )
        log.info("token %r (%s) created by %r", issued.record.name, issued.record.role, actor)
        return _issued(201, issued)

    async def delete_token(self, request: web.Request) -> web.Response:
        actor = await self.authenticator.authenticate(request)
        name = request.match_info["name"]
        await self.tokens.revoke(name)
        log.info("token %r revoked by %r", name[:70], actor)
        return web.Response(status=204)

    async def rotate_token(self, request: web.Request) -> web.Response:
        actor = await self.authenticator.authenticate(request)
        await json_object_body(request, allowed=(), required=False)
        issued = await self.tokens.rotate(request.match_info["name"], actor)
        log.info("token %r rotated by %r", issued.record.name, actor)
        return _issued(200, issued)


def build_tokens_app(authenticator: TokenAuthenticator, tokens: TokenService) -> web.Application:
    """The token face, to be mounted at :data:`MOUNT` (``app[TOKENS_KEY]`` is ``tokens``)."""
    routes = TokenRoutes(authenticator, tokens)
    app = web.Application(middlewares=[management_errors(log)])
    app[TOKENS_KEY] = tokens
    r = app.router
    r.add_get("", routes.list_tokens, allow_head=False)
    r.add_get("/", routes.list_tokens, allow_head=False)
    r.add_get("/{name}", routes.get_token, allow_head=False)
    r.add_put("/{name}", routes.put_token)
    r.add_delete("/{name}", routes.delete_token)
    r.add_post("/{name}/rotate", routes.rotate_token)
    return app
