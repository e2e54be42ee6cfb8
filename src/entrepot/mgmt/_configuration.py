"""The client's configuration: identity, endpoint, API version and the azure-core policies."""

from __future__ import annotations

import platform
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import SupportsTokenInfo, TokenCredential
from azure.core.pipeline import policies
from azure.mgmt.core.policies import ARMAutoResourceProviderRegistrationPolicy, ARMHttpLoggingPolicy

from entrepot.mgmt._credentials import LoopbackARMChallengeAuthenticationPolicy
from entrepot.mgmt._requests import DEFAULT_API_VERSION
from entrepot.mgmt._version import SDK_MONIKER

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_CREDENTIAL_SCOPES",
    "DEFAULT_POLLING_INTERVAL",
    "ContainerRegistryManagementClientConfiguration",
]

DEFAULT_BASE_URL = "http://127.0.0.1:5000"
DEFAULT_CREDENTIAL_SCOPES = ("https://management.azure.com/.default",)
DEFAULT_POLLING_INTERVAL = 30
"""Seconds between LRO polls when the server sends no ``Retry-After`` (azure's default)."""


class ContainerRegistryManagementClientConfiguration:
    """Everything a :class:`ContainerRegistryManagementClient` was configured with.

    Attributes the caller may read: ``credential``, ``subscription_id``, ``base_url``,
    ``api_version``, ``credential_scopes``, ``polling_interval`` and the policy attributes
    (``authentication_policy``, ``retry_policy`` ...), each the one the pipeline uses.

    :param credential: an azure-core token credential.
    :param subscription_id: the subscription every request is addressed to.
    :keyword base_url: the service root, ``http(s)://host[:port][/prefix]``.
    :keyword api_version: sent as ``api-version`` on every request (default ``2025-11-01``).
    :keyword credential_scopes: token scopes (default ``https://management.azure.com/.default``).
    :keyword polling_interval: default LRO poll delay in seconds (default 30).
    :keyword authentication_policy: replaces the default
        :class:`~entrepot.mgmt.LoopbackARMChallengeAuthenticationPolicy`; e.g. azure-core's
        ``SansIOHTTPPolicy()`` sends no ``Authorization`` header at all.
    :keyword user_agent: an application id put in front of the ``User-Agent``.
    :raises ValueError: when ``credential`` is ``None``, ``subscription_id`` is empty or
        ``base_url`` is not an absolute http(s) URL.

    Other keywords (``retry_total``, ``retry_backoff_factor``, ``logging_enable``, any
    ``*_policy`` ...) are passed to azure-core's policies as in the generated Azure SDKs.
    """

    def __init__(
        self,
        credential: TokenCredential | SupportsTokenInfo,
        subscription_id: str,
        base_url: str = DEFAULT_BASE_URL,
        **kwargs: Any,
    ) -> None:
        if credential is None:
            raise ValueError("Parameter 'credential' must not be None.")
        if not isinstance(subscription_id, str) or not subscription_id:
            raise ValueError("Parameter 'subscription_id' must be a non-empty string.")
        parts = urlsplit(base_url) if isinstance(base_url, str) else None
        if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise ValueError(f"base_url must be an absolute http(s) URL, got {base_url!r}.")
        if parts.query or parts.fragment:
            raise ValueError("base_url must not have a query string or fragment.")

        self.credential = credential
        self.subscription_id = subscription_id
        self.base_url = base_url.rstrip("/")
        self.api_version: str = kwargs.pop("api_version", DEFAULT_API_VERSION)
        self.credential_scopes: list[str] = list(
            kwargs.pop("credential_scopes", None) or DEFAULT_CREDENTIAL_SCOPES
        )
        self.polling_interval: float = kwargs.get("polling_interval", DEFAULT_POLLING_INTERVAL)
        self._configure(**kwargs)

    def _configure(self, **kwargs: Any) -> None:
        user_agent = f"{SDK_MONIKER} Python/{platform.python_version()} ({platform.platform()})"
        self.user_agent_policy = kwargs.get("user_agent_policy") or policies.UserAgentPolicy(
            user_agent, **kwargs
        )
        self.headers_policy = kwargs.get("headers_policy") or policies.HeadersPolicy(**kwargs)
        self.proxy_policy = kwargs.get("proxy_policy") or policies.ProxyPolicy(**kwargs)
        self.logging_policy = kwargs.get("logging_policy") or policies.NetworkTraceLoggingPolicy(
            **kwargs
        )
        self.http_logging_policy = kwargs.get("http_logging_policy") or ARMHttpLoggingPolicy(
            **kwargs
        )
        self.custom_hook_policy = kwargs.get("custom_hook_policy") or policies.CustomHookPolicy(
            **kwargs
        )
        self.redirect_policy = kwargs.get("redirect_policy") or policies.RedirectPolicy(**kwargs)
        self.retry_policy = kwargs.get("retry_policy") or policies.RetryPolicy(**kwargs)
        self.authentication_policy = kwargs.get(
            "authentication_policy"
        ) or LoopbackARMChallengeAuthenticationPolicy(
            self.credential, *self.credential_scopes, **kwargs
        )

    def build_policies(self, **kwargs: Any) -> list[Any]:
        """The pipeline's policies, in azure-core's order for ARM clients.

        Request id, headers, user agent, proxy, content decoding, ARM provider registration,
        redirect, retry, authentication, custom hook, network trace logging, distributed
        tracing, sensitive-header cleanup on redirect, then ARM HTTP logging (secrets redacted).

        :return: a new list of policies.
        """
        return [
            policies.RequestIdPolicy(**kwargs),
            self.headers_policy,
            self.user_agent_policy,
            self.proxy_policy,
            policies.ContentDecodePolicy(**kwargs),
            ARMAutoResourceProviderRegistrationPolicy(),
            self.redirect_policy,
            self.retry_policy,
            self.authentication_policy,
            self.custom_hook_policy,
            self.logging_policy,
            policies.DistributedTracingPolicy(**kwargs),
            policies.SensitiveHeaderCleanupPolicy(**kwargs),
            self.http_logging_policy,
        ]
