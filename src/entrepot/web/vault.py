"""The built-in vault's management routes: an entrepot extension under ``/entrepot/vaults``.

Every route needs the admin bearer token (:class:`~entrepot.web.auth.TokenAuthenticator`);
errors are domain exceptions rendered by the face's middleware
(:func:`~entrepot.web.responses.management_errors`) as ``{"error": {code, message, target}}``,
with ``x-ms-request-id``, like the ARM face's. :func:`build_vault_app` makes the face: a
sub-application that ``app.py`` mounts at ``/entrepot/vaults``.

======  ==========================================================  =========================
GET     /entrepot/vaults                                            ``{"value": [vault...]}``
PUT     /entrepot/vaults/{vault}                                    201 new / 200 existing
GET     /entrepot/vaults/{vault}                                    vault
DELETE  /entrepot/vaults/{vault}                                    204 (404 if missing)
GET     /entrepot/vaults/{vault}/secrets                            newest version of each
PUT     /entrepot/vaults/{vault}/secrets/{name}                     body ``{"value": "...",
                                                                    "contentType": "..."}``;
                                                                    201 + the new version
GET     /entrepot/vaults/{vault}/secrets/{name}                     newest version
GET     /entrepot/vaults/{vault}/secrets/{name}/versions            every version, newest first
GET     /entrepot/vaults/{vault}/secrets/{name}/{version}           one version
DELETE  /entrepot/vaults/{vault}/secrets/{name}                     204, all versions
GET     /entrepot/vaults/{vault}/grants                             ``{"value": [grant...]}``
PUT     /entrepot/vaults/{vault}/grants                             body ``{"principalId": "...",
                                                                    "permission": "get"}``;
                                                                    201 new / 200 existing
DELETE  /entrepot/vaults/{vault}/grants/{principalId}/{permission}  204 (404 if missing)
======  ==========================================================  =========================

A secret value is only ever accepted in a request body. No response carries one: secrets are
described by metadata (``id``, ``name``, ``version``, ``created``, ``enabled``...) only.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from entrepot import errors as e
from entrepot.secrets.vault import BuiltinVault, check_secret_name, check_vault_name
from entrepot.web.auth import TokenAuthenticator
from entrepot.web.responses import json_object_body, json_response, management_errors

__all__ = ["MOUNT", "VAULT_KEY", "VaultRoutes", "build_vault_app"]

log = logging.getLogger("entrepot.web.vault")
MOUNT = "/entrepot/vaults"  # where app.py mounts the face
PREFIX = ""  # the face's routes are relative to MOUNT
VAULT_KEY = web.AppKey("vault", BuiltinVault)


class VaultRoutes:
    """The handlers; each authenticates first, then validates, then acts."""

    def __init__(self, authenticator: TokenAuthenticator, vault: BuiltinVault) -> None:
        self.authenticator = authenticator
        self.vault = vault

    # -- vaults -----------------------------------------------------------------------------
    async def list_vaults(self, request: web.Request) -> web.Response:
        await self.authenticator.authenticate(request)
        return _list([v.to_dict() for v in await self.vault.list_vaults()])

    async def put_vault(self, request: web.Request) -> web.Response:
        await self.authenticator.authenticate(request)
        check_vault_name(request.match_info["vault"])
        await json_object_body(request, allowed=(), required=False)
        info, created = await self.vault.create_vault(request.match_info["vault"])
        return json_response(201 if created else 200, info.to_dict())

    async def get_vault(self, request: web.Request) -> web.Response:
        await self.authenticator.authenticate(request)
        return json_response(
            200, (await self.vault.get_vault(request.match_info["vault"])).to_dict()
        )

    async def delete_vault(self, request: web.Request) -> web.Response:
        await self.authenticator.authenticate(request)
        await self.vault.delete_vault(request.match_info["vault"])
        return web.Response(status=204)

    # -- secrets ----------------------------------------------------------------------------
    async def list_secrets(self, request: web.Request) -> web.Response:
        await self.authenticator.authenticate(request)
        items = await self.vault.list_secrets(request.match_info["vault"])
        return _list([s.to_dict() for s in items])

    async def put_secret(self, request: web.Request) -> web.Response:
        await self.authenticator.authenticate(request)
        check_vault_name(request.match_info["vault"])
        check_secret_name(request.match_info["name"])
        body = await json_object_body(request, allowed=("value", "contentType"))
        if "value" not in body:
            raise e.MissingProperty("'value' is required.", target="value")
        value = body["value"]
        if not isinstance(value, str):
            raise e.InvalidPropertyValue("'value' must be a string.", target="value")
        content_type = body.get("contentType")
        if content_type is not None and not isinstance(content_type, str):
            raise e.InvalidPropertyValue("'contentType' must be a string.", target="contentType")
        info = await self.vault.set_secret(
            request.match_info["vault"], request.match_info["name"], value, content_type
        )
        return json_response(201, info.to_dict())

    async def get_secret(self, request: web.Request) -> web.Response:
        await self.authenticator.authenticate(request)
        info = await self.vault.show_secret(
            request.match_info["vault"],
            request.match_info["name"],
            request.match_info.get("version"),
        )
        return json_response(200, info.to_dict())

    async def list_versions(self, request: web.Request) -> web.Response:
        await self.authenticator.authenticate(request)
        items = await self.vault.list_secret_versions(
            request.match_info["vault"], request.match_info["name"]
        )
        return _list([s.to_dict() for s in items])

    async def delete_secret(self, request: web.Request) -> web.Response:
        await self.authenticator.authenticate(request)
        await self.vault.delete_secret(request.match_info["vault"], request.match_info["name"])
        return web.Response(status=204)

    # -- grants -----------------------------------------------------------------------------
    async def list_grants(self, request: web.Request) -> web.Response:
        await self.authenticator.authenticate(request)
        return _list(
            [g.to_dict() for g in await self.vault.list_grants(request.match_info["vault"])]
        )

    async def put_grant(self, request: web.Request) -> web.Response:
        await self.authenticator.authenticate(request)
        check_vault_name(request.match_info["vault"])
        body = await json_object_body(request, allowed=("principalId", "permission"))
        principal = body.get("principalId")
        if principal is None:
            raise e.MissingProperty("'principalId' is required.", target="principalId")
        if not isinstance(principal, str):
            raise e.InvalidPropertyValue("'principalId' must be a string.", target="principalId")
        permission = body.get("permission", "get")
        if not isinstance(permission, str):
            raise e.InvalidPropertyValue("'permission' must be a string.", target="permission")
        info, created = await self.vault.grant(request.match_info["vault"], principal, permission)
        return json_response(201 if created else 200, info.to_dict())

    async def delete_grant(self, request: web.Request) -> web.Response:
        await self.authenticator.authenticate(request)
        await self.vault.revoke(
            request.match_info["vault"],
            request.match_info["principal"],
            request.match_info["permission"],
        )
        return web.Response(status=204)


def _list(items: list[dict[str, Any]]) -> web.Response:
    return json_response(200, {"value": items})


def build_vault_app(authenticator: TokenAuthenticator, vault: BuiltinVault) -> web.Application:
    """The vault face, to be mounted at :data:`MOUNT` (``app[VAULT_KEY]`` is ``vault``)."""
    routes = VaultRoutes(authenticator, vault)
    app = web.Application(middlewares=[management_errors(log)])
    app[VAULT_KEY] = vault
    r = app.router
    r.add_get(PREFIX, routes.list_vaults, allow_head=False)
    r.add_get(PREFIX + "/", routes.list_vaults, allow_head=False)
    r.add_put(PREFIX + "/{vault}", routes.put_vault)
    r.add_get(PREFIX + "/{vault}", routes.get_vault, allow_head=False)
    r.add_delete(PREFIX + "/{vault}", routes.delete_vault)
    r.add_get(PREFIX + "/{vault}/secrets", routes.list_secrets, allow_head=False)
    r.add_put(PREFIX + "/{vault}/secrets/{name}", routes.put_secret)
    r.add_get(PREFIX + "/{vault}/secrets/{name}", routes.get_secret, allow_head=False)
    r.add_delete(PREFIX + "/{vault}/secrets/{name}", routes.delete_secret)
    r.add_get(PREFIX + "/{vault}/secrets/{name}/versions", routes.list_versions, allow_head=False)
    r.add_get(PREFIX + "/{vault}/secrets/{name}/{version}", routes.get_secret, allow_head=False)
    r.add_get(PREFIX + "/{vault}/grants", routes.list_grants, allow_head=False)
    r.add_put(PREFIX + "/{vault}/grants", routes.put_grant)
    r.add_delete(PREFIX + "/{vault}/grants/{principal}/{permission}", routes.delete_grant)
    return app
