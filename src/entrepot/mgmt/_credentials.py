"""Credentials and the bearer-token policy for self-hosted management endpoints.

* :class:`StaticTokenCredential` hands out one fixed bearer token; it satisfies azure-core's
  ``TokenCredential`` and ``SupportsTokenInfo`` protocols, so any azure-core client accepts it.
* :class:`LoopbackARMChallengeAuthenticationPolicy` is azure-mgmt-core's own ARM bearer policy
  (token cache, CAE claims challenge) that additionally allows plain ``http://`` when, and only
  when, the request goes to a loopback host (``127.0.0.0/8``, ``::1``, ``localhost``). Every
  other ``http://`` URL keeps azure-core's refusal to send a token in clear text.
* :func:`loopback_policy` builds that policy with ARM's scope, for the genuine
  ``azure-mgmt-containerregistry`` client's ``authentication_policy=``.
"""

from __future__ import annotations

import ipaddress
import time
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import (
    AccessToken,
    AccessTokenInfo,
    SupportsTokenInfo,
    TokenCredential,
    TokenRequestOptions,
)
from azure.core.pipeline import PipelineRequest
from azure.core.rest import HttpRequest
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy

__all__ = [
    "ARM_SCOPE",
    "LoopbackARMChallengeAuthenticationPolicy",
    "StaticTokenCredential",
    "is_loopback_url",
    "loopback_policy",
]

ARM_SCOPE = "https://management.azure.com/.default"
"""The token scope ARM clients ask for (azure-mgmt-containerregistry's default)."""

DEFAULT_TOKEN_LIFETIME = 3600
"""Seconds for which a token handed out by :class:`StaticTokenCredential` is declared valid."""

# Set in the pipeline context when this policy, not the caller, relaxed ``enforce_https``.
_RELAXED_MARK = "entrepot_loopback_relaxed_https"


class StaticTokenCredential:
    """A credential that always returns the same bearer token.

    Meant for self-hosted entrepot servers whose tokens are issued out of band. Every call returns
    the token with an expiry ``lifetime`` seconds from the moment of the call, so azure-core's
    bearer policies never consider it stale; scopes, claims and tenant are ignored.

    :param token: the bearer token, sent as ``Authorization: Bearer <token>``.
    :keyword lifetime: seconds of validity declared for each token handed out (default 3600).
    :raises TypeError: when ``token`` is not a string.
    :raises ValueError: when ``token`` is empty, contains whitespace or control characters (it
        could not be sent in a header unchanged), or ``lifetime`` is not positive.
    """

    def __init__(self, token: str, *, lifetime: int = DEFAULT_TOKEN_LIFETIME) -> None:
        if not isinstance(token, str):
            raise TypeError("token must be a string.")
        if not token or any(ch.isspace() or not ch.isprintable() for ch in token):
            raise ValueError("token must be a non-empty string without whitespace.")
        if lifetime <= 0:
            raise ValueError("lifetime must be a positive number of seconds.")
        self._token = token
        self._lifetime = int(lifetime)

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """Return the token, valid for ``lifetime`` seconds from now.

        :param scopes: ignored.
        :keyword claims: ignored.
        :keyword tenant_id: ignored.
        :keyword enable_cae: ignored.
        :return: the token and its expiry in Unix time.
        """
        return AccessToken(self._token, int(time.time()) + self._lifetime)

    def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        """Return the token as an ``AccessTokenInfo`` of type ``Bearer``.

        :param scopes: ignored.
        :keyword options: ignored.
        :return: the token, ``token_type="Bearer"`` and its expiry ``lifetime`` seconds from now.
        """
        return AccessTokenInfo(self._token, int(time.time()) + self._lifetime, token_type="Bearer")

    def close(self) -> None:
        """Nothing to release; present for azure-core's ``SupportsTokenInfo`` protocol."""

    def __enter__(self) -> StaticTokenCredential:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(token=<redacted>, lifetime={self._lifetime})"


def is_loopback_url(url: str) -> bool:
    """Whether ``url``'s host is a loopback address: ``127.0.0.0/8``, ``::1`` or ``localhost``.

    IPv4-mapped IPv6 loopback (``::ffff:127.0.0.1``) counts; anything unparsable does not.

    :param url: an absolute URL.
    :return: ``True`` only for loopback hosts.
    """
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    if not host:
        return False
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class LoopbackARMChallengeAuthenticationPolicy(ARMChallengeAuthenticationPolicy):
    """azure-mgmt-core's ARM bearer policy, allowing plain ``http://`` to loopback hosts only.

    For a request to a loopback host the policy sets ``request.context["enforce_https"] = False``
    before delegating to :class:`~azure.mgmt.core.policies.ARMChallengeAuthenticationPolicy`, so
    the token is sent over ``http://127.0.0.1:5000`` and the like. For any other host nothing is
    relaxed: an ``http://`` URL raises :class:`~azure.core.exceptions.ServiceRequestError`
    before anything is sent, also when a loopback server redirects there. A caller's explicit
    per-call ``enforce_https=`` keyword is left to azure-core and always wins.

    :param credential: the token credential.
    :param scopes: the scopes to request (``https://management.azure.com/.default`` for ARM).
    :keyword enable_cae: as for azure-core's ``BearerTokenCredentialPolicy``.
    """

    def on_request(self, request: PipelineRequest[HttpRequest]) -> None:  # type: ignore[override]
        """Authorize ``request``; relax the https requirement only for loopback hosts.

        :param request: the pipeline request.
        :raises ~azure.core.exceptions.ServiceRequestError: for a non-https, non-loopback URL.
        """
        context = request.context
        if "enforce_https" not in context.options:
            if is_loopback_url(request.http_request.url):
                if context.get("enforce_https", True):
                    context["enforce_https"] = False
                    context[_RELAXED_MARK] = True
            elif context.pop(_RELAXED_MARK, False):
                # Same pipeline run, new host (a redirect): restore azure-core's default.
                context.pop("enforce_https", None)
        super().on_request(request)


def loopback_policy(
    credential: TokenCredential | SupportsTokenInfo, *scopes: str, **kwargs: Any
) -> LoopbackARMChallengeAuthenticationPolicy:
    """The authentication policy for the genuine ``azure-mgmt-containerregistry`` client
    talking to an entrepot server over plain ``http://`` on loopback.

    The genuine client's default ARM bearer policy refuses to send a token over ``http://``;
    pass this one instead::

        credential = StaticTokenCredential(token)
        client = azure.mgmt.containerregistry.ContainerRegistryManagementClient(
            credential, subscription_id, base_url="http://127.0.0.1:5000",
            authentication_policy=loopback_policy(credential),
        )

    Over ``https://`` no special policy is needed.

    :param credential: any azure-core token credential, e.g. :class:`StaticTokenCredential`.
    :param scopes: the scopes to request (default: :data:`ARM_SCOPE`).
    :keyword enable_cae: as for azure-core's ``BearerTokenCredentialPolicy``.
    :return: a new :class:`LoopbackARMChallengeAuthenticationPolicy`.
    """
    return LoopbackARMChallengeAuthenticationPolicy(credential, *(scopes or (ARM_SCOPE,)), **kwargs)
