"""Request builders: one pure function per operation, returning an unsent ``HttpRequest``.

URLs are relative to the client's ``base_url`` (the client joins them before sending), every
path segment is percent-encoded with ``safe=""`` and every request carries ``api-version`` in its
query string. ``Accept: application/json`` is set on everything but DELETE; a request with a body
has ``Content-Type: application/json``. Caller ``headers``/``params`` are merged in, except that
``api-version`` is always the builder's ``api_version``.

Paths (``P`` = ``/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry``)::

    P/registries                               GET (list by resource group)
    P/registries/{registry}                    GET, PUT, DELETE
    P/registries/{registry}/cacheRules         GET (list)
    P/registries/{registry}/cacheRules/{name}  GET, PUT, PATCH, DELETE
    P/registries/{registry}/credentialSets[/{name}]   likewise
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, quote, urljoin, urlparse

from azure.core.rest import HttpRequest
from azure.core.utils import case_insensitive_dict

from entrepot.mgmt._serialization import Body, path_segment, serialize_body

__all__ = [
    "CACHE_RULES",
    "CREDENTIAL_SETS",
    "DEFAULT_API_VERSION",
    "build_cache_rules_create_request",
    "build_cache_rules_delete_request",
    "build_cache_rules_get_request",
    "build_cache_rules_list_request",
    "build_cache_rules_update_request",
    "build_child_request",
    "build_credential_sets_create_request",
    "build_credential_sets_delete_request",
    "build_credential_sets_get_request",
    "build_credential_sets_list_request",
    "build_credential_sets_update_request",
    "build_next_link_request",
    "build_registries_create_request",
    "build_registries_delete_request",
    "build_registries_get_request",
    "build_registries_list_by_resource_group_request",
    "registries_path",
    "registry_path",
]

DEFAULT_API_VERSION = "2025-11-01"
"""The API version the client speaks unless told otherwise (``api_version=``)."""

CACHE_RULES = "cacheRules"
CREDENTIAL_SETS = "credentialSets"

_PROVIDER = "Microsoft.ContainerRegistry"
_JSON = "application/json"


def registries_path(subscription_id: str, resource_group_name: str) -> str:
    """The path of a resource group's registry collection.

    :raises TypeError: when a segment is not a string.
    :raises ValueError: when a segment is empty, ``.`` or ``..``.
    """
    return (
        f"/subscriptions/{path_segment('subscription_id', subscription_id)}"
        f"/resourceGroups/{path_segment('resource_group_name', resource_group_name)}"
        f"/providers/{_PROVIDER}/registries"
    )


def registry_path(subscription_id: str, resource_group_name: str, registry_name: str) -> str:
    """The path of one registry.

    :raises TypeError: when a segment is not a string.
    :raises ValueError: when a segment is empty, ``.`` or ``..``.
    """
    registries = registries_path(subscription_id, resource_group_name)
    return f"{registries}/{path_segment('registry_name', registry_name)}"


def _build(
    method: str,
    url: str,
    *,
    api_version: str,
    body: Body | None = None,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> HttpRequest:
    _headers = case_insensitive_dict(headers or {})
    _params = case_insensitive_dict(params or {})
    _params["api-version"] = api_version
    content = None
    if body is not None:
        content = serialize_body(body)
        _headers.setdefault("Content-Type", _JSON)
    if method != "DELETE":
        _headers.setdefault("Accept", _JSON)
    return HttpRequest(method, url, params=_params, headers=_headers, content=content)


def build_child_request(
    method: str,
    collection: str,
    *,
    subscription_id: str,
    resource_group_name: str,
    registry_name: str,
    name: str | None = None,
    body: Body | None = None,
    api_version: str = DEFAULT_API_VERSION,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> HttpRequest:
    """A request on a registry's child collection (``cacheRules``, ``credentialSets``).

    :param method: the HTTP method.
    :param collection: the collection segment, e.g. :data:`CACHE_RULES`.
    :keyword name: the child resource name; ``None`` addresses the collection.
    :keyword body: the request body (see :func:`~entrepot.mgmt._serialization.serialize_body`).
    :return: the unsent request, URL relative to the service root.
    """
    url = f"{registry_path(subscription_id, resource_group_name, registry_name)}/{collection}"
    if name is not None:
        url += "/" + path_segment("name", name)
    return _build(method, url, api_version=api_version, body=body, headers=headers, params=params)


# -- cache rules --------------------------------------------------------------------------------
def build_cache_rules_get_request(
    *,
    subscription_id: str,
    resource_group_name: str,
    registry_name: str,
    cache_rule_name: str,
    api_version: str = DEFAULT_API_VERSION,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> HttpRequest:
    """``GET P/registries/{registry}/cacheRules/{cache_rule_name}``."""
    return build_child_request(
        "GET",
        CACHE_RULES,
        subscription_id=subscription_id,
        resource_group_name=resource_group_name,
        registry_name=registry_name,
        name=cache_rule_name,
        api_version=api_version,
        headers=headers,
        params=params,
    )


def build_cache_rules_create_request(
    *,
    subscription_id: str,
    resource_group_name: str,
    registry_name: str,
    cache_rule_name: str,
    body: Body,
    api_version: str = DEFAULT_API_VERSION,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> HttpRequest:
    """``PUT P/registries/{registry}/cacheRules/{cache_rule_name}`` with a ``CacheRule`` body."""
    return build_child_request(
        "PUT",
        CACHE_RULES,
        subscription_id=subscription_id,
        resource_group_name=resource_group_name,
        registry_name=registry_name,
        name=cache_rule_name,
        body=body,
        api_version=api_version,
        headers=headers,
        params=params,
    )


def build_cache_rules_update_request(
    *,
    subscription_id: str,
    resource_group_name: str,
    registry_name: str,
    cache_rule_name: str,
    body: Body,
    api_version: str = DEFAULT_API_VERSION,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> HttpRequest:
    """``PATCH P/registries/{registry}/cacheRules/{cache_rule_name}``, update-parameters body."""
    return build_child_request(
        "PATCH",
        CACHE_RULES,
        subscription_id=subscription_id,
        resource_group_name=resource_group_name,
        registry_name=registry_name,
        name=cache_rule_name,
        body=body,
        api_version=api_version,
        headers=headers,
        params=params,
    )


def build_cache_rules_delete_request(
    *,
    subscription_id: str,
    resource_group_name: str,
    registry_name: str,
    cache_rule_name: str,
    api_version: str = DEFAULT_API_VERSION,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> HttpRequest:
    """``DELETE P/registries/{registry}/cacheRules/{cache_rule_name}``, no body."""
    return build_child_request(
        "DELETE",
        CACHE_RULES,
        subscription_id=subscription_id,
        resource_group_name=resource_group_name,
        registry_name=registry_name,
        name=cache_rule_name,
        api_version=api_version,
        headers=headers,
        params=params,
    )


def build_cache_rules_list_request(
    *,
    subscription_id: str,
    resource_group_name: str,
    registry_name: str,
    api_version: str = DEFAULT_API_VERSION,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> HttpRequest:
    """``GET P/registries/{registry}/cacheRules`` (first page)."""
    return build_child_request(
        "GET",
        CACHE_RULES,
        subscription_id=subscription_id,
        resource_group_name=resource_group_name,
        registry_name=registry_name,
        api_version=api_version,
        headers=headers,
        params=params,
    )


# -- credential sets ----------------------------------------------------------------------------
def build_credential_sets_get_request(
    *,
    subscription_id: str,
    resource_group_name: str,
    registry_name: str,
    credential_set_name: str,
    api_version: str = DEFAULT_API_VERSION,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> HttpRequest:
    """``GET P/registries/{registry}/credentialSets/{credential_set_name}``."""
    return build_child_request(
        "GET",
        CREDENTIAL_SETS,
        subscription_id=subscription_id,
        resource_group_name=resource_group_name,
        registry_name=registry_name,
        name=credential_set_name,
        api_version=api_version,
        headers=headers,
        params=params,
    )


def build_credential_sets_validate_request(
    *,
    subscription_id: str,
    resource_group_name: str,
    registry_name: str,
    credential_set_name: str,
    api_version: str = DEFAULT_API_VERSION,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> HttpRequest:
    """``POST P/registries/{registry}/credentialSets/{credential_set_name}/validate``."""
    request = build_child_request(
        "POST",
        CREDENTIAL_SETS,
        subscription_id=subscription_id,
        resource_group_name=resource_group_name,
        registry_name=registry_name,
        name=credential_set_name,
        api_version=api_version,
        headers=headers,
        params=params,
    )
    head, sep, query = request.url.partition("?")
    request.url = f"{head}/validate{sep}{query}"
    return request


def build_credential_sets_create_request(
    *,
    subscription_id: str,
    resource_group_name: str,
    registry_name: str,
    credential_set_name: str,
    body: Body,
    api_version: str = DEFAULT_API_VERSION,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> HttpRequest:
    """``PUT P/registries/{registry}/credentialSets/{credential_set_name}``, credential-set body."""
    return build_child_request(
        "PUT",
        CREDENTIAL_SETS,
        subscription_id=subscription_id,
        resource_group_name=resource_group_name,
        registry_name=registry_name,
        name=credential_set_name,
        body=body,
        api_version=api_version,
        headers=headers,
        params=params,
    )


def build_credential_sets_update_request(
    *,
    subscription_id: str,
    resource_group_name: str,
    registry_name: str,
    credential_set_name: str,
    body: Body,
    api_version: str = DEFAULT_API_VERSION,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> HttpRequest:
    """``PATCH P/registries/{registry}/credentialSets/{credential_set_name}``."""
    return build_child_request(
        "PATCH",
        CREDENTIAL_SETS,
        subscription_id=subscription_id,
        resource_group_name=resource_group_name,
        registry_name=registry_name,
        name=credential_set_name,
        body=body,
        api_version=api_version,
        headers=headers,
        params=params,
    )


def build_credential_sets_delete_request(
    *,
    subscription_id: str,
    resource_group_name: str,
    registry_name: str,
    credential_set_name: str,
    api_version: str = DEFAULT_API_VERSION,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> HttpRequest:
    """``DELETE P/registries/{registry}/credentialSets/{credential_set_name}``, no body."""
    return build_child_request(
        "DELETE",
        CREDENTIAL_SETS,
        subscription_id=subscription_id,
        resource_group_name=resource_group_name,
        registry_name=registry_name,
        name=credential_set_name,
        api_version=api_version,
        headers=headers,
        params=params,
    )


def build_credential_sets_list_request(
    *,
    subscription_id: str,
    resource_group_name: str,
    registry_name: str,
    api_version: str = DEFAULT_API_VERSION,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> HttpRequest:
    """``GET P/registries/{registry}/credentialSets`` (first page)."""
    return build_child_request(
        "GET",
        CREDENTIAL_SETS,
        subscription_id=subscription_id,
        resource_group_name=resource_group_name,
        registry_name=registry_name,
        api_version=api_version,
        headers=headers,
        params=params,
    )


# -- registries ---------------------------------------------------------------------------------
def build_registries_get_request(
    *,
    subscription_id: str,
    resource_group_name: str,
    registry_name: str,
    api_version: str = DEFAULT_API_VERSION,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> HttpRequest:
    """``GET P/registries/{registry_name}``."""
    url = registry_path(subscription_id, resource_group_name, registry_name)
    return _build("GET", url, api_version=api_version, headers=headers, params=params)


def build_registries_create_request(
    *,
    subscription_id: str,
    resource_group_name: str,
    registry_name: str,
    body: Body,
    api_version: str = DEFAULT_API_VERSION,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> HttpRequest:
    """``PUT P/registries/{registry_name}`` with a ``Registry`` body."""
    url = registry_path(subscription_id, resource_group_name, registry_name)
    return _build("PUT", url, api_version=api_version, body=body, headers=headers, params=params)


def build_registries_delete_request(
    *,
    subscription_id: str,
    resource_group_name: str,
    registry_name: str,
    api_version: str = DEFAULT_API_VERSION,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> HttpRequest:
    """``DELETE P/registries/{registry_name}``, no body."""
    url = registry_path(subscription_id, resource_group_name, registry_name)
    return _build("DELETE", url, api_version=api_version, headers=headers, params=params)


def build_registries_list_by_resource_group_request(
    *,
    subscription_id: str,
    resource_group_name: str,
    api_version: str = DEFAULT_API_VERSION,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> HttpRequest:
    """``GET P/registries`` (first page)."""
    url = registries_path(subscription_id, resource_group_name)
    return _build("GET", url, api_version=api_version, headers=headers, params=params)


# -- paging -------------------------------------------------------------------------------------
def build_next_link_request(
    next_link: str,
    *,
    api_version: str = DEFAULT_API_VERSION,
    headers: Mapping[str, str] | None = None,
) -> HttpRequest:
    """``GET`` of a list page's ``nextLink``, as the genuine SDK fetches it.

    The link's scheme, host and path are kept (a relative link stays relative and is joined to
    the client's ``base_url``). Its query parameters are kept, each value re-quoted with
    ``quote(v)``, except ``api-version``, which becomes ``api_version``; parameters with an empty
    value are dropped (``parse_qs``).

    :param next_link: the ``nextLink`` of the previous page.
    :keyword api_version: the client's API version.
    :keyword headers: extra headers.
    :return: the unsent request.
    """
    parsed = urlparse(next_link)
    _params = case_insensitive_dict(
        {key: [quote(v) for v in values] for key, values in parse_qs(parsed.query).items()}
    )
    _params["api-version"] = api_version
    _headers = case_insensitive_dict(headers or {})
    _headers.setdefault("Accept", _JSON)
    return HttpRequest("GET", urljoin(next_link, parsed.path), params=_params, headers=_headers)
