"""The operation groups: ``cache_rules``, ``credential_sets`` and ``registries``.

Each method builds its request with :mod:`entrepot.mgmt._requests`, sends it through the
client's azure-core pipeline and returns what the genuine ``azure-mgmt-containerregistry`` SDK
returns: a model, an :class:`~azure.core.polling.LROPoller` or an
:class:`~azure.core.paging.ItemPaged`.

What every operation guarantees:

* A response status outside the operation's accepted set raises
  :class:`~azure.core.exceptions.HttpResponseError`: 401
  :class:`~azure.core.exceptions.ClientAuthenticationError`, 404
  :class:`~azure.core.exceptions.ResourceNotFoundError`, 409
  :class:`~azure.core.exceptions.ResourceExistsError`, 304
  :class:`~azure.core.exceptions.ResourceNotModifiedError` (``error_map=`` adds or overrides
  entries), anything else a plain ``HttpResponseError`` parsed with ``ARMErrorFormat``, so
  ``e.error.code`` and ``e.error.message`` carry the ARM error body.
* ``begin_*`` sends the initial request before returning. The poller follows azure-mgmt-core's
  ``ARMPolling`` (``Azure-AsyncOperation``, then ``Location``, then ``provisioningState``),
  with ``final-state-via: azure-async-operation`` for PUT/PATCH and ``location`` for DELETE.
  Keywords: ``polling_interval`` (seconds, when the server sends no ``Retry-After``),
  ``polling=False`` (no polling: ``result()`` is the initial response), ``polling=<a
  PollingMethod>``, ``continuation_token=`` (resume a poller from
  ``poller.continuation_token()``; nothing is sent up front, the body argument is ignored).
* ``list*`` returns a lazy ``ItemPaged``; nothing is sent until it is iterated. Pages follow
  ``nextLink`` with the client's ``api-version``.
* ``cls=`` (a callable ``(pipeline_response, deserialized, headers)``; for lists, called with the
  page's items) replaces the return value, ``headers=`` and ``params=`` add to the request, other
  keywords reach the azure-core pipeline (e.g. ``enforce_https``, ``retry_total``), as in the
  generated Azure SDKs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, TypeVar

from azure.core.exceptions import (
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ResourceNotModifiedError,
    map_error,
)
from azure.core.paging import ItemPaged
from azure.core.pipeline import PipelineResponse
from azure.core.polling import LROPoller, NoPolling, PollingMethod
from azure.core.rest import HttpRequest, HttpResponse
from azure.core.tracing.decorator import distributed_trace
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.core.exceptions import ARMErrorFormat
from azure.mgmt.core.polling.arm_polling import ARMPolling

from entrepot.mgmt import _requests as rb
from entrepot.mgmt._configuration import ContainerRegistryManagementClientConfiguration
from entrepot.mgmt._serialization import Body
from entrepot.models import (
    CacheRule,
    CacheRuleUpdateParameters,
    CredentialSet,
    CredentialSetUpdateParameters,
    Model,
    Registry,
)

__all__ = ["CacheRulesOperations", "CredentialSetsOperations", "RegistriesOperations"]

M = TypeVar("M", bound=Model)
T = TypeVar("T")

Response = PipelineResponse[HttpRequest, HttpResponse]
RequestFactory = Callable[..., HttpRequest]
"""A request builder with everything bound but ``headers`` and ``params``."""

_ERROR_MAP: dict[int, type[HttpResponseError]] = {
    401: ClientAuthenticationError,
    404: ResourceNotFoundError,
    409: ResourceExistsError,
    304: ResourceNotModifiedError,
}
_CREATED = (200, 201)
_ACCEPTED = (202, 204)
_FINAL_VIA_ASYNC = "azure-async-operation"
_FINAL_VIA_LOCATION = "location"


def _pop_error_map(kwargs: dict[str, Any]) -> dict[int, type[HttpResponseError]]:
    error_map = dict(_ERROR_MAP)
    error_map.update(kwargs.pop("error_map", None) or {})
    return error_map


class _OperationGroup:
    """Machinery shared by the groups: send, check, poll, page."""

    def __init__(
        self,
        client: ARMPipelineClient[HttpRequest, HttpResponse],
        config: ContainerRegistryManagementClientConfiguration,
    ) -> None:
        self._client = client
        self._config = config

    @property
    def _path_format_arguments(self) -> dict[str, str]:
        return {"endpoint": self._config.base_url}

    def _send(
        self,
        request: HttpRequest,
        accepted: Collection[int],
        error_map: Mapping[int, type[HttpResponseError]],
        **kwargs: Any,
    ) -> Response:
        """Send ``request`` (its URL relative to ``base_url``) and check the status."""
        request.url = self._client.format_url(request.url, **self._path_format_arguments)
        pipeline_response: Response = self._client._pipeline.run(request, stream=False, **kwargs)
        response = pipeline_response.http_response
        if response.status_code not in accepted:
            map_error(status_code=response.status_code, response=response, error_map=error_map)
            raise HttpResponseError(response=response, error_format=ARMErrorFormat)
        return pipeline_response

    def _get(self, factory: RequestFactory, model: type[M], kwargs: dict[str, Any]) -> M:
        error_map = _pop_error_map(kwargs)
        cls = kwargs.pop("cls", None)
        request = factory(headers=kwargs.pop("headers", None), params=kwargs.pop("params", None))
        pipeline_response = self._send(request, (200,), error_map, **kwargs)
        deserialized = model.from_arm(pipeline_response.http_response.json())
        if cls:
            return cls(pipeline_response, deserialized, {})  # type: ignore[no-any-return]
        return deserialized

    def _begin(
        self,
        factory: RequestFactory,
        accepted: Collection[int],
        final_state_via: str,
        output: Callable[[Response], T],
        kwargs: dict[str, Any],
    ) -> LROPoller[T]:
        error_map = _pop_error_map(kwargs)
        headers = kwargs.pop("headers", None)
        params = kwargs.pop("params", None)
        polling: bool | PollingMethod[T] = kwargs.pop("polling", True)
        delay = kwargs.pop("polling_interval", self._config.polling_interval)
        token: str | None = kwargs.pop("continuation_token", None)

        polling_method: PollingMethod[T]
        if polling is True:
            polling_method = ARMPolling(
                delay,
                lro_options={"final-state-via": final_state_via},
                path_format_arguments=self._path_format_arguments,
                **kwargs,
            )
        elif polling is False:
            polling_method = NoPolling()  # type: ignore[no-untyped-call]
        else:
            polling_method = polling

        if token:
            return LROPoller.from_continuation_token(
                polling_method=polling_method,
                continuation_token=token,
                client=self._client,
                deserialization_callback=output,
            )
        initial = self._send(factory(headers=headers, params=params), accepted, error_map, **kwargs)
        return LROPoller(self._client, initial, output, polling_method)

    def _begin_resource(
        self,
        factory: RequestFactory,
        model: type[M],
        kwargs: dict[str, Any],
        accepted: Collection[int] = _CREATED,
    ) -> LROPoller[M]:
        cls = kwargs.pop("cls", None)

        def output(pipeline_response: Response) -> M:
            deserialized = model.from_arm(pipeline_response.http_response.json())
            if cls:
                return cls(pipeline_response, deserialized, {})  # type: ignore[no-any-return]
            return deserialized

        return self._begin(factory, accepted, _FINAL_VIA_ASYNC, output, kwargs)

    def _begin_delete(
        self,
        factory: RequestFactory,
        kwargs: dict[str, Any],
        accepted: Collection[int] = _ACCEPTED,
    ) -> LROPoller[None]:
        cls = kwargs.pop("cls", None)

        def output(pipeline_response: Response) -> None:
            if cls:
                cls(pipeline_response, None, {})

        return self._begin(factory, accepted, _FINAL_VIA_LOCATION, output, kwargs)

    def _list(
        self, factory: RequestFactory, model: type[M], kwargs: dict[str, Any]
    ) -> ItemPaged[M]:
        error_map = _pop_error_map(kwargs)
        cls = kwargs.pop("cls", None)
        headers = kwargs.pop("headers", None)
        params = kwargs.pop("params", None)
        api_version = self._config.api_version

        def get_next(next_link: str | None = None) -> Response:
            if next_link:
                request = rb.build_next_link_request(
                    next_link, api_version=api_version, headers=headers
                )
            else:
                request = factory(headers=headers, params=params)
            return self._send(request, (200,), error_map, **kwargs)

        def extract_data(pipeline_response: Response) -> tuple[str | None, Iterator[M]]:
            response = pipeline_response.http_response
            body = response.json()
            if not isinstance(body, dict):
                raise DecodeError(
                    message="A list page must be a JSON object with 'value' and 'nextLink'.",
                    response=response,
                )
            values = body.get("value") or []
            next_link = body.get("nextLink") or None
            if not isinstance(values, list) or not isinstance(next_link, str | None):
                raise DecodeError(
                    message="A list page's 'value' must be an array and 'nextLink' a string.",
                    response=response,
                )
            items: Any = [model.from_arm(value) for value in values]
            if cls:
                items = cls(items)
            return next_link, iter(items)

        return ItemPaged(get_next, extract_data)


class CacheRulesOperations(_OperationGroup):
    """``client.cache_rules``: cache rules of a registry.

    Do not instantiate; use :attr:`ContainerRegistryManagementClient.cache_rules`.
    """

    @distributed_trace
    def get(
        self, resource_group_name: str, registry_name: str, cache_rule_name: str, **kwargs: Any
    ) -> CacheRule:
        """Get a cache rule.

        :param resource_group_name: the resource group.
        :param registry_name: the registry.
        :param cache_rule_name: the cache rule.
        :return: the cache rule as the server reports it.
        :raises ~azure.core.exceptions.ResourceNotFoundError: when the rule or registry does not
            exist.
        :raises ~azure.core.exceptions.HttpResponseError: on any other non-200 response.
        """
        factory = functools.partial(
            rb.build_cache_rules_get_request,
            subscription_id=self._config.subscription_id,
            resource_group_name=resource_group_name,
            registry_name=registry_name,
            cache_rule_name=cache_rule_name,
            api_version=self._config.api_version,
        )
        return self._get(factory, CacheRule, kwargs)

    @distributed_trace
    def begin_create(
        self,
        resource_group_name: str,
        registry_name: str,
        cache_rule_name: str,
        cache_rule_create_parameters: CacheRule | Body,
        **kwargs: Any,
    ) -> LROPoller[CacheRule]:
        """Create (or replace) a cache rule: ``PUT``, accepted with 200 or 201.

        :param resource_group_name: the resource group.
        :param registry_name: the registry.
        :param cache_rule_name: the cache rule.
        :param cache_rule_create_parameters: a :class:`~entrepot.models.CacheRule` (read-only
            fields and ``None`` attributes are not sent) or a JSON object sent as is.
        :return: a poller whose ``result()`` is the rule once provisioning has finished.
        :raises ~azure.core.exceptions.HttpResponseError: when the server refuses the request
            (before returning) or the operation fails (from ``result()``).
        """
        factory = functools.partial(
            rb.build_cache_rules_create_request,
            subscription_id=self._config.subscription_id,
            resource_group_name=resource_group_name,
            registry_name=registry_name,
            cache_rule_name=cache_rule_name,
            body=cache_rule_create_parameters,
            api_version=self._config.api_version,
        )
        return self._begin_resource(factory, CacheRule, kwargs)

    @distributed_trace
    def begin_update(
        self,
        resource_group_name: str,
        registry_name: str,
        cache_rule_name: str,
        cache_rule_update_parameters: CacheRuleUpdateParameters | Body,
        **kwargs: Any,
    ) -> LROPoller[CacheRule]:
        """Update a cache rule: ``PATCH``, accepted with 200 or 201.

        ``CacheRuleUpdateParameters(credential_set_resource_id=None)`` sends
        ``{"properties": {}}``; to remove the credential set pass the dict
        ``{"properties": {"credentialSetResourceId": None}}``, which sends an explicit ``null``.

        :param resource_group_name: the resource group.
        :param registry_name: the registry.
        :param cache_rule_name: the cache rule.
        :param cache_rule_update_parameters: the changes, a model or a JSON object sent as is.
        :return: a poller whose ``result()`` is the updated rule.
        :raises ~azure.core.exceptions.HttpResponseError: as for :meth:`begin_create`.
        """
        factory = functools.partial(
            rb.build_cache_rules_update_request,
            subscription_id=self._config.subscription_id,
            resource_group_name=resource_group_name,
            registry_name=registry_name,
            cache_rule_name=cache_rule_name,
            body=cache_rule_update_parameters,
            api_version=self._config.api_version,
        )
        return self._begin_resource(factory, CacheRule, kwargs)

    @distributed_trace
    def begin_delete(
        self, resource_group_name: str, registry_name: str, cache_rule_name: str, **kwargs: Any
    ) -> LROPoller[None]:
        """Delete a cache rule: ``DELETE``, accepted with 202 or 204.

        :param resource_group_name: the resource group.
        :param registry_name: the registry.
        :param cache_rule_name: the cache rule.
        :return: a poller whose ``result()`` is ``None`` once the rule is gone.
        :raises ~azure.core.exceptions.ResourceNotFoundError: when the rule does not exist.
        :raises ~azure.core.exceptions.HttpResponseError: on any other refusal or failure.
        """
        factory = functools.partial(
            rb.build_cache_rules_delete_request,
            subscription_id=self._config.subscription_id,
            resource_group_name=resource_group_name,
            registry_name=registry_name,
            cache_rule_name=cache_rule_name,
            api_version=self._config.api_version,
        )
        return self._begin_delete(factory, kwargs)

    @distributed_trace
    def list(
        self, resource_group_name: str, registry_name: str, **kwargs: Any
    ) -> ItemPaged[CacheRule]:
        """List the cache rules of a registry, following ``nextLink`` page by page.

        :param resource_group_name: the resource group.
        :param registry_name: the registry.
        :return: a lazy iterator over every rule; requests are sent as it is consumed.
        :raises ~azure.core.exceptions.HttpResponseError: while iterating, on a non-200 page.
        """
        factory = functools.partial(
            rb.build_cache_rules_list_request,
            subscription_id=self._config.subscription_id,
            resource_group_name=resource_group_name,
            registry_name=registry_name,
            api_version=self._config.api_version,
        )
        return self._list(factory, CacheRule, kwargs)


class CredentialSetsOperations(_OperationGroup):
    """``client.credential_sets``: credential sets of a registry.

    Do not instantiate; use :attr:`ContainerRegistryManagementClient.credential_sets`.
    """

    @distributed_trace
    def get(
        self,
        resource_group_name: str,
        registry_name: str,
        credential_set_name: str,
        **kwargs: Any,
    ) -> CredentialSet:
        """Get a credential set.

        :param resource_group_name: the resource group.
        :param registry_name: the registry.
        :param credential_set_name: the credential set.
        :return: the credential set, with each credential's health as last measured.
        :raises ~azure.core.exceptions.ResourceNotFoundError: when it does not exist.
        :raises ~azure.core.exceptions.HttpResponseError: on any other non-200 response.
        """
        factory = functools.partial(
            rb.build_credential_sets_get_request,
            subscription_id=self._config.subscription_id,
            resource_group_name=resource_group_name,
            registry_name=registry_name,
            credential_set_name=credential_set_name,
            api_version=self._config.api_version,
        )
        return self._get(factory, CredentialSet, kwargs)

    @distributed_trace
    def begin_create(
        self,
        resource_group_name: str,
        registry_name: str,
        credential_set_name: str,
        credential_set_create_parameters: CredentialSet | Body,
        **kwargs: Any,
    ) -> LROPoller[CredentialSet]:
        """Create (or replace) a credential set: ``PUT``, accepted with 200 or 201.

        :param resource_group_name: the resource group.
        :param registry_name: the registry.
        :param credential_set_name: the credential set.
        :param credential_set_create_parameters: a :class:`~entrepot.models.CredentialSet`
            (read-only fields such as ``identity.principal_id`` and ``credential_health`` are not
            sent) or a JSON object sent as is.
        :return: a poller whose ``result()`` is the credential set once provisioned.
        :raises ~azure.core.exceptions.HttpResponseError: when the server refuses the request
            (before returning) or the operation fails (from ``result()``).
        """
        factory = functools.partial(
            rb.build_credential_sets_create_request,
            subscription_id=self._config.subscription_id,
            resource_group_name=resource_group_name,
            registry_name=registry_name,
            credential_set_name=credential_set_name,
            body=credential_set_create_parameters,
            api_version=self._config.api_version,
        )
        return self._begin_resource(factory, CredentialSet, kwargs)

    @distributed_trace
    def begin_update(
        self,
        resource_group_name: str,
        registry_name: str,
        credential_set_name: str,
        credential_set_update_parameters: CredentialSetUpdateParameters | Body,
        **kwargs: Any,
    ) -> LROPoller[CredentialSet]:
        """Update a credential set: ``PATCH``, accepted with 200 or 201.

        :param resource_group_name: the resource group.
        :param registry_name: the registry.
        :param credential_set_name: the credential set.
        :param credential_set_update_parameters: the changes (``identity``,
            ``auth_credentials``), a model or a JSON object sent as is.
        :return: a poller whose ``result()`` is the updated credential set.
        :raises ~azure.core.exceptions.HttpResponseError: as for :meth:`begin_create`.
        """
        factory = functools.partial(
            rb.build_credential_sets_update_request,
            subscription_id=self._config.subscription_id,
            resource_group_name=resource_group_name,
            registry_name=registry_name,
            credential_set_name=credential_set_name,
            body=credential_set_update_parameters,
            api_version=self._config.api_version,
        )
        return self._begin_resource(factory, CredentialSet, kwargs)

    @distributed_trace
    def begin_delete(
        self,
        resource_group_name: str,
        registry_name: str,
        credential_set_name: str,
        **kwargs: Any,
    ) -> LROPoller[None]:
        """Delete a credential set: ``DELETE``, accepted with 202 or 204.

        :param resource_group_name: the resource group.
        :param registry_name: the registry.
        :param credential_set_name: the credential set.
        :return: a poller whose ``result()`` is ``None`` once the credential set is gone.
        :raises ~azure.core.exceptions.ResourceNotFoundError: when it does not exist.
        :raises ~azure.core.exceptions.HttpResponseError: on any other refusal (e.g. 409 while a
            cache rule still uses it) or failure.
        """
        factory = functools.partial(
            rb.build_credential_sets_delete_request,
            subscription_id=self._config.subscription_id,
            resource_group_name=resource_group_name,
            registry_name=registry_name,
            credential_set_name=credential_set_name,
            api_version=self._config.api_version,
        )
        return self._begin_delete(factory, kwargs)

    @distributed_trace
    def list(
        self, resource_group_name: str, registry_name: str, **kwargs: Any
    ) -> ItemPaged[CredentialSet]:
        """List the credential sets of a registry, following ``nextLink`` page by page.

        :param resource_group_name: the resource group.
        :param registry_name: the registry.
        :return: a lazy iterator over every credential set.
        :raises ~azure.core.exceptions.HttpResponseError: while iterating, on a non-200 page.
        """
        factory = functools.partial(
            rb.build_credential_sets_list_request,
            subscription_id=self._config.subscription_id,
            resource_group_name=resource_group_name,
            registry_name=registry_name,
            api_version=self._config.api_version,
        )
        return self._list(factory, CredentialSet, kwargs)

    @distributed_trace
    def validate(
        self,
        resource_group_name: str,
        registry_name: str,
        credential_set_name: str,
        **kwargs: Any,
    ) -> CredentialSet:
        """Measure the health of a credential set's credentials now (an entrepot extension).

        The server resolves the secrets as the set's identity and logs in to its login server;
        the returned set carries the fresh ``credential_health`` of each credential, which is
        also what later reads show.

        :param resource_group_name: the resource group.
        :param registry_name: the registry.
        :param credential_set_name: the credential set.
        :return: the credential set with its health just measured.
        :raises ~azure.core.exceptions.ResourceNotFoundError: when it does not exist.
        :raises ~azure.core.exceptions.HttpResponseError: on any other non-200 response.
        """
        factory = functools.partial(
            rb.build_credential_sets_validate_request,
            subscription_id=self._config.subscription_id,
            resource_group_name=resource_group_name,
            registry_name=registry_name,
            credential_set_name=credential_set_name,
            api_version=self._config.api_version,
        )
        return self._get(factory, CredentialSet, kwargs)


class RegistriesOperations(_OperationGroup):
    """``client.registries``: the registries that own cache rules and credential sets.

    Do not instantiate; use :attr:`ContainerRegistryManagementClient.registries`.
    """

    @distributed_trace
    def get(self, resource_group_name: str, registry_name: str, **kwargs: Any) -> Registry:
        """Get a registry.

        :param resource_group_name: the resource group.
        :param registry_name: the registry.
        :return: the registry.
        :raises ~azure.core.exceptions.ResourceNotFoundError: when it does not exist.
        :raises ~azure.core.exceptions.HttpResponseError: on any other non-200 response.
        """
        factory = functools.partial(
            rb.build_registries_get_request,
            subscription_id=self._config.subscription_id,
            resource_group_name=resource_group_name,
            registry_name=registry_name,
            api_version=self._config.api_version,
        )
        return self._get(factory, Registry, kwargs)

    @distributed_trace
    def begin_create(
        self,
        resource_group_name: str,
        registry_name: str,
        registry: Registry | Body,
        **kwargs: Any,
    ) -> LROPoller[Registry]:
        """Create (or replace) a registry: ``PUT``, accepted with 200 or 201.

        :param resource_group_name: the resource group.
        :param registry_name: the registry.
        :param registry: a :class:`~entrepot.models.Registry` (``location``, ``sku``, ``tags``)
            or a JSON object sent as is.
        :return: a poller whose ``result()`` is the registry once provisioned.
        :raises ~azure.core.exceptions.HttpResponseError: when the server refuses the request
            (before returning) or the operation fails (from ``result()``).
        """
        factory = functools.partial(
            rb.build_registries_create_request,
            subscription_id=self._config.subscription_id,
            resource_group_name=resource_group_name,
            registry_name=registry_name,
            body=registry,
            api_version=self._config.api_version,
        )
        return self._begin_resource(factory, Registry, kwargs)

    @distributed_trace
    def begin_delete(
        self, resource_group_name: str, registry_name: str, **kwargs: Any
    ) -> LROPoller[None]:
        """Delete a registry: ``DELETE``, accepted with 200, 202 or 204 (as the genuine SDK).

        :param resource_group_name: the resource group.
        :param registry_name: the registry.
        :return: a poller whose ``result()`` is ``None`` once the registry is gone.
        :raises ~azure.core.exceptions.ResourceNotFoundError: when it does not exist.
        :raises ~azure.core.exceptions.HttpResponseError: on any other refusal or failure.
        """
        factory = functools.partial(
            rb.build_registries_delete_request,
            subscription_id=self._config.subscription_id,
            resource_group_name=resource_group_name,
            registry_name=registry_name,
            api_version=self._config.api_version,
        )
        return self._begin_delete(factory, kwargs, accepted=(200, 202, 204))

    @distributed_trace
    def list_by_resource_group(
        self, resource_group_name: str, **kwargs: Any
    ) -> ItemPaged[Registry]:
        """List the registries of a resource group, following ``nextLink`` page by page.

        :param resource_group_name: the resource group.
        :return: a lazy iterator over every registry.
        :raises ~azure.core.exceptions.HttpResponseError: while iterating, on a non-200 page.
        """
        factory = functools.partial(
            rb.build_registries_list_by_resource_group_request,
            subscription_id=self._config.subscription_id,
            resource_group_name=resource_group_name,
            api_version=self._config.api_version,
        )
        return self._list(factory, Registry, kwargs)
