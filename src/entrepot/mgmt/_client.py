"""The management client: the entry point of :mod:`entrepot.mgmt`."""

from __future__ import annotations

from copy import deepcopy
from types import TracebackType
from typing import Any, Self

from azure.core.credentials import SupportsTokenInfo, TokenCredential
from azure.core.rest import HttpRequest, HttpResponse
from azure.mgmt.core import ARMPipelineClient

from entrepot.mgmt._configuration import (
    DEFAULT_BASE_URL,
    ContainerRegistryManagementClientConfiguration,
)
from entrepot.mgmt._operations import (
    CacheRulesOperations,
    CredentialSetsOperations,
    RegistriesOperations,
)

__all__ = ["ContainerRegistryManagementClient"]


class ContainerRegistryManagementClient:
    """Client for entrepot's ARM API: registries, cache rules and credential sets.

    Call for call a drop-in for ``azure.mgmt.containerregistry.ContainerRegistryManagementClient``
    as far as these three groups go: same method names, argument names, return types
    (:class:`~azure.core.polling.LROPoller`, :class:`~azure.core.paging.ItemPaged`) and
    exceptions (:class:`~azure.core.exceptions.HttpResponseError` and subclasses).

    Requests go through an azure-core pipeline: request id, headers, ``User-Agent``
    (``entrepot-mgmt/<version> Python/...``), proxy, redirect, retry (``retry_total``,
    ``retry_backoff_factor``), ARM bearer authentication, logging with secrets redacted.

    Bearer tokens are sent over plain ``http://`` only to loopback hosts (``127.0.0.0/8``,
    ``::1``, ``localhost``); any other host needs ``https://`` (with ``connection_verify=`` for a
    private CA), or ``authentication_policy=SansIOHTTPPolicy()`` to send no token at all.

    :ivar cache_rules: cache rule operations.
    :vartype cache_rules: ~entrepot.mgmt._operations.CacheRulesOperations
    :ivar credential_sets: credential set operations.
    :vartype credential_sets: ~entrepot.mgmt._operations.CredentialSetsOperations
    :ivar registries: registry operations.
    :vartype registries: ~entrepot.mgmt._operations.RegistriesOperations
    :param credential: any azure-core token credential, e.g.
        :class:`~entrepot.mgmt.StaticTokenCredential`.
    :param subscription_id: the subscription every request is addressed to; readable as
        ``client._config.subscription_id``, as in the Azure SDK.
    :param base_url: the service root, ``http(s)://host[:port][/prefix]`` (default
        ``http://127.0.0.1:5000``).
    :keyword api_version: the ``api-version`` sent on every request (default ``2025-11-01``).
    :keyword polling_interval: seconds between LRO polls when the server sends no
        ``Retry-After`` (default 30); can also be given per ``begin_*`` call.
    :keyword credential_scopes: token scopes (default ``["https://management.azure.com/.default"]``).
    :keyword authentication_policy: replaces the loopback-aware ARM bearer policy.
    :keyword retry_total: how many times a retriable failure is retried (azure default 10).
    :keyword retry_backoff_factor: exponential back-off factor in seconds (azure default 0.8).
    :keyword connection_verify: ``False`` or a CA bundle path, for ``https://`` endpoints.
    :keyword transport: an azure-core ``HttpTransport`` (default: requests).
    :raises ValueError: when ``credential`` is ``None``, ``subscription_id`` is empty or
        ``base_url`` is not an absolute http(s) URL.

    Any other keyword azure-core's ``PipelineClient`` or its policies accept is passed on.
    """

    def __init__(
        self,
        credential: TokenCredential | SupportsTokenInfo,
        subscription_id: str,
        base_url: str = DEFAULT_BASE_URL,
        **kwargs: Any,
    ) -> None:
        self._config = ContainerRegistryManagementClientConfiguration(
            credential, subscription_id, base_url, **kwargs
        )
        policies = kwargs.pop("policies", None) or self._config.build_policies(**kwargs)
        self._client: ARMPipelineClient[HttpRequest, HttpResponse] = ARMPipelineClient(
            base_url="{endpoint}", policies=policies, **kwargs
        )
        self.cache_rules = CacheRulesOperations(self._client, self._config)
        self.credential_sets = CredentialSetsOperations(self._client, self._config)
        self.registries = RegistriesOperations(self._client, self._config)

    def send_request(
        self, request: HttpRequest, *, stream: bool = False, **kwargs: Any
    ) -> HttpResponse:
        """Send a hand-built request through the client's pipeline (auth, retry, logging).

        A relative URL is joined to ``base_url``; the request passed in is not modified. No
        status check is made: the response is returned whatever its status.

        :param request: the request, e.g. ``HttpRequest("GET", "/subscriptions/...")``.
        :keyword stream: do not read the body before returning.
        :return: the response.
        """
        request_copy = deepcopy(request)
        request_copy.url = self._client.format_url(request_copy.url, endpoint=self._config.base_url)
        return self._client.send_request(request_copy, stream=stream, **kwargs)

    def close(self) -> None:
        """Close the transport's connections; the client must not be used afterwards."""
        self._client.close()

    def __enter__(self) -> Self:
        self._client.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._client.__exit__(exc_type, exc_value, traceback)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(subscription_id={self._config.subscription_id!r}, "
            f"base_url={self._config.base_url!r})"
        )
