"""A synchronous client of the token routes (``/entrepot/tokens``), for the command line.

Like :class:`entrepot.mgmt.vault.VaultClient` it sends its requests through an existing
azure-core pipeline (in practice the management client's ``send_request``), so it shares that
client's bearer authentication, retries and TLS settings, and raises azure-core's
``HttpResponseError`` (and subclasses) with the ARM error parsed (``exc.error.code``).

A token's secret (``"value"``) comes back only from :meth:`TokenClient.create` and
:meth:`TokenClient.rotate`; no other call ever returns it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from entrepot.mgmt._extension import ExtensionClient

__all__ = ["TokenClient"]


def _path(name: str | None = None, action: str | None = None) -> str:
    path = "/entrepot/tokens"
    if name is not None:
        path += "/" + quote(name, safe="")
    if action is not None:
        path += "/" + action
    return path


class TokenClient(ExtensionClient):
    """The token operations of a remote entrepot server (they need an admin token).

    :param sender: anything with ``send_request(azure.core.rest.HttpRequest)``, such as the
        management client.
    """

    def create(self, name: str, role: str, description: str = "") -> dict[str, Any]:
        """Create token ``name`` with ``role`` (``admin`` | ``pull``); the answer holds its
        secret, ``"value"``, which is never shown again."""
        body: dict[str, Any] = {"role": role}
        if description:
            body["description"] = description
        return dict(self._call("PUT", _path(name), body))

    def list(self) -> list[dict[str, Any]]:
        """Every token (names, roles, dates; never a secret)."""
        return list(self._call("GET", _path())["value"])

    def show(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", _path(name)))

    def revoke(self, name: str) -> None:
        """Delete token ``name``: it stops working at once."""
        self._call("DELETE", _path(name))

    def rotate(self, name: str) -> dict[str, Any]:
        """Give token ``name`` a new secret (in ``"value"``); the old one stops working."""
        return dict(self._call("POST", _path(name, "rotate")))
