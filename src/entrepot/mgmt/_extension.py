"""The base of the clients of entrepot's own routes (``/entrepot/...``), for the command line.

Requests go through an existing azure-core pipeline, in practice the ``send_request`` of
:class:`entrepot.mgmt.ContainerRegistryManagementClient`, so they share that client's bearer
authentication, retries, proxies and TLS settings. Errors are raised as azure-core's
``HttpResponseError`` (401 ``ClientAuthenticationError``, 404 ``ResourceNotFoundError``, 409
``ResourceExistsError``) with the ARM error parsed (``exc.error.code``), like the management
client's own.
"""

from __future__ import annotations

from typing import Any, Protocol


class Sender(Protocol):
    def send_request(self, request: Any, **kwargs: Any) -> Any: ...


class ExtensionClient:
    """:param sender: anything with ``send_request(azure.core.rest.HttpRequest)``, such as the
    management client."""

    def __init__(self, sender: Sender) -> None:
        self._sender = sender

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The JSON answer of ``method path`` (``None`` for an empty one); raises for >= 400."""
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceExistsError,
            ResourceNotFoundError,
        )
        from azure.core.rest import HttpRequest
        from azure.mgmt.core.exceptions import ARMErrorFormat

        response = self._sender.send_request(HttpRequest(method, path, json=body))
        if response.status_code >= 400:
            error_type = {
                401: ClientAuthenticationError,
                404: ResourceNotFoundError,
                409: ResourceExistsError,
            }.get(response.status_code, HttpResponseError)
            raise error_type(response=response, error_format=ARMErrorFormat)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()
