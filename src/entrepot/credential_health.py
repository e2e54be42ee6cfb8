"""Credential health, measured: resolve a credential's secrets as its set's identity, then log in.

:meth:`CredentialProbe.measure` never raises for a failure of the credential itself; it returns
the ``credentialHealth`` JSON object of the ARM wire format:

* ``{"status": "Healthy"}`` when both secrets resolve and the upstream accepts them;
* ``{"status": "Unhealthy", "errorCode": CODE, "errorMessage": TEXT}`` otherwise, where CODE is
  the stable code of the domain error met first: ``SecretNotFound``, ``SecretAccessDenied``,
  ``InvalidSecretIdentifier``, ``SecretStoreUnavailable``, ``UpstreamAuthenticationFailed``,
  ``UpstreamUnreachable``, ``UpstreamTlsError``, ``UpstreamTooManyRequests`` or ``UpstreamError``
  (also for a stored login server that is not ``host[:port]``, and for any unexpected failure).

TEXT helps the operator (which identifier, which principal, which login server) and never holds
a secret value: the resolved username and password are scrubbed from it whatever produced it.
An upstream that cannot be reached gives the same TEXT, but for its name, whether the connection
was refused, not allowed by the address guard, or not answered in time
(:func:`entrepot.upstream.guard.unreachable`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from entrepot import errors as e
from entrepot.secrets import Resolvers
from entrepot.upstream.client import UpstreamClient
from entrepot.upstream.endpoints import normalize_login_server
from entrepot.upstream.guard import unreachable
from entrepot.upstream.response import hostport

log = logging.getLogger("entrepot.credential_health")

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
        """The ``credentialHealth`` of ``credential`` (its ARM JSON) read as ``principal_id``.

        Never raises but for cancellation: every failure is an Unhealthy result.
        """
        try:
            return await self._measure(login_server, credential, principal_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a surprise: this credential's health, not a 500
            log.exception("measuring a credential of login server %r failed", login_server)
            return unhealthy(
                "UpstreamError",
                f"Measuring the credential failed unexpectedly ({type(exc).__name__}).",
            )

    async def _measure(
        self, login_server: str, credential: dict[str, Any], principal_id: str
    ) -> dict[str, str]:
        try:
            normalize_login_server(login_server)
        except e.InvalidLoginServer as err:  # stored by an older version that accepted it
            return unhealthy(
                "UpstreamError",
                f"The login server of the credential set is invalid: {err.message} Recreate the "
                "credential set with a valid login server.",
            )
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
            except TimeoutError:  # the same words as a refused connection: no port scanner
                quiet = unreachable(hostport(self.upstream.endpoint(login_server)), self.timeout)
                return unhealthy(
                    quiet.code, f"Logging in to '{login_server}' failed: {quiet.message}"
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
