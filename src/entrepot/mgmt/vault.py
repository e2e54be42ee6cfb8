"""A synchronous client of the vault routes (``/entrepot/vaults``), for the command line.

It sends its requests through an existing azure-core pipeline, in practice the
``send_request`` of :class:`entrepot.mgmt.ContainerRegistryManagementClient`, so that it shares
that client's bearer authentication, retries, proxies and TLS settings. Errors are raised as
azure-core's ``HttpResponseError`` with the ARM error parsed (``exc.error.code``,
``exc.error.message``), exactly like the management client's own, so the CLI's error handling
applies unchanged.

Secret values go out in request bodies only and never come back.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from entrepot.mgmt._extension import ExtensionClient

__all__ = ["VaultClient"]


def _seg(value: str) -> str:
    return quote(value, safe="")


class VaultClient(ExtensionClient):
    """The vault operations of a remote entrepot server.

    :param sender: anything with ``send_request(azure.core.rest.HttpRequest)``, such as the
        management client.
    """

    # -- vaults -----------------------------------------------------------------------------
    def create_vault(self, vault: str) -> dict[str, Any]:
        return dict(self._call("PUT", f"/entrepot/vaults/{_seg(vault)}"))

    def show_vault(self, vault: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/entrepot/vaults/{_seg(vault)}"))

    def list_vaults(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/entrepot/vaults")["value"])

    def delete_vault(self, vault: str) -> None:
        self._call("DELETE", f"/entrepot/vaults/{_seg(vault)}")

    # -- secrets ----------------------------------------------------------------------------
    def set_secret(
        self, vault: str, name: str, value: str, content_type: str | None = None
    ) -> dict[str, Any]:
        """Store a new version; returns its metadata (never the value)."""
        body: dict[str, Any] = {"value": value}
        if content_type is not None:
            body["contentType"] = content_type
        return dict(self._call("PUT", f"/entrepot/vaults/{_seg(vault)}/secrets/{_seg(name)}", body))

    def list_secrets(self, vault: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/entrepot/vaults/{_seg(vault)}/secrets")["value"])

    def show_secret(self, vault: str, name: str, version: str | None = None) -> dict[str, Any]:
        path = f"/entrepot/vaults/{_seg(vault)}/secrets/{_seg(name)}"
        if version:
            path += f"/{_seg(version)}"
        return dict(self._call("GET", path))

    def list_secret_versions(self, vault: str, name: str) -> list[dict[str, Any]]:
        path = f"/entrepot/vaults/{_seg(vault)}/secrets/{_seg(name)}/versions"
        return list(self._call("GET", path)["value"])

    def delete_secret(self, vault: str, name: str) -> None:
        self._call("DELETE", f"/entrepot/vaults/{_seg(vault)}/secrets/{_seg(name)}")

    # -- grants -----------------------------------------------------------------------------
    def grant(self, vault: str, principal_id: str, permission: str = "get") -> dict[str, Any]:
        body = {"principalId": principal_id, "permission": permission}
        return dict(self._call("PUT", f"/entrepot/vaults/{_seg(vault)}/grants", body))

    def revoke(self, vault: str, principal_id: str, permission: str = "get") -> None:
        path = f"/entrepot/vaults/{_seg(vault)}/grants/{_seg(principal_id)}/{_seg(permission)}"
        self._call("DELETE", path)

    def list_grants(self, vault: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/entrepot/vaults/{_seg(vault)}/grants")["value"])
