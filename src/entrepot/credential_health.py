"""Credential health, measured: resolve a credential's secrets as its set's identity, then log in.

:meth:`CredentialProbe.measure` never raises for a failure of the credential itself; it returns
the ``credentialHealth`` JSON object of the ARM wire format:

* ``{"status": "Healthy"}`` when both secrets resolve and the upstream accepts them;
* ``{"status": "Unhealthy", "errorCode": CODE, "errorMessage": TEXT}`` otherwise, where CODE is
  the stable code of the domain error met first: ``SecretNotFound``, ``SecretAccessDenied``,
  ``InvalidSecretIdentifier``, ``SecretStoreUnavailable``, ``UpstreamAuthenticationFailed``,
  ``UpstreamUnreachable``, ``UpstreamTlsError``, ``UpstreamTooManyRequests`` or ``UpstreamError``.

TEXT helps the operator (which identifier, which principal, which login server) and never holds
a secret value: the resolved username and password are scrubbed from it whatever produced it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from entrepot import errors as e
from entrepot.secrets import Resolvers
from entrepot.upstream.client import UpstreamClient

HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"


def unhealthy(code: str, message: str) -> dict[str, str]:
    return {"status": UNHEALTHY, "errorCode": code, "errorMessage": message}


class CredentialProbe:
    """Measures the health of one credential of a credential set."""

    def __init__(self, resolvers: Resolvers, upstream: UpstreamClient, *, timeout: float) -> None:
        self.resolvers = resolvers
        self.upstream = upstream
        self.timeout = timeout

    async def measure(
        self, login_server: str, credential: dict[str, Any], principal_id: str
    ) -> dict[str, str]:
        """The ``credentialHealth`` of ``credential`` (its ARM JSON) read as ``principal_id``."""
        values: list[str] = []
        try:
            for key, what in (
                ("usernameSecretIdentifier", "username"),
                ("passwordSecretIdentifier", "password"),
            ):
                identifier = credential.get(key)
                if not isinstance(identifier, str):
                    return unhealthy("SecretNotFound", f"The {what} secret identifier is missing.")
                try:
                    secret = await self.resolvers.resolve(identifier, principal_id)
                except e.EntrepotError as err:
                    return unhealthy(
                        err.code,
                        f"Reading the {what} secret '{identifier}' as principal "
                        f"'{principal_id}' failed: {err.message}",
                    )
                values.append(secret.reveal())
            username, password = values
            try:
                await asyncio.wait_for(
                    self.upstream.login(login_server, (username, password), fresh=True),
                    timeout=self.timeout,
                )
            except TimeoutError:
                return unhealthy(
                    "UpstreamUnreachable",
                    f"No answer from '{login_server}' within {self.timeout:g} s.",
                )
            except e.EntrepotError as err:
                return unhealthy(
                    err.code,
                    _scrub(f"Logging in to '{login_server}' failed: {err.message}", values),
                )
            return {"status": HEALTHY}
        finally:
            values.clear()


def _scrub(text: str, values: list[str]) -> str:
    for value in values:
        if value:
            text = text.replace(value, "***")
    return text
