"""The upstream credentials of a cache rule: its credential set's secrets, read as the set's
principal (as :mod:`entrepot.credential_health` reads them).

What callers may rely on:

* :meth:`RuleCredentials.get` returns ``(username, password)`` of the first complete credential
  of the set, resolved through the configured secret resolvers as the set's ``principal_id``;
  resolved values are kept in memory for ``ttl`` seconds (a rotated secret applies after that,
  or at once after an upstream 401, see :meth:`RuleCredentials.unauthorized`).
* Failures raise :class:`CredentialsUnusable`: its ``detail`` (for the operator's log) names
  the set, the secret identifier and the principal, never a secret value; the caller shows
  clients only the set's name (:meth:`CachingEngine.request
  <entrepot.proxy.cache.CachingEngine.request>`).
* :meth:`RuleCredentials.unauthorized` (an upstream 401) forgets the cached values and has the
  set's health measured again by ``remeasure``, at most once per ``ttl`` per set, in the
  background.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from entrepot import errors as e
from entrepot.metadata.records import CredentialSetRecord, ResourceKind
from entrepot.metadata.resources import SqlResourceStore
from entrepot.secrets import Resolvers
from entrepot.upstream.client import Credentials

__all__ = ["CredentialsUnusable", "RuleCredentials"]

log = logging.getLogger("entrepot.proxy")


class CredentialsUnusable(Exception):
    """The credentials of a set cannot be had (gone, incomplete, a secret unreadable).

    Not a domain error: its ``detail`` names vaults, secret identifiers and the set's
    principal, which are for the operator's log, never for a client.

    :ivar set_name: the credential set's name (``None`` when the set is gone).
    :ivar detail: what failed, for the log; no secret value.
    """

    def __init__(self, set_name: str | None, detail: str) -> None:
        super().__init__(detail)
        self.set_name = set_name
        self.detail = detail


class RuleCredentials:
    """Credentials of credential sets for upstream pulls (see the module doc).

    :param resources: where credential sets are read.
    :param resolvers: the secret resolvers.
    :param remeasure: measures and stores a set's health, by row id (``None``: never).
    :param ttl: seconds resolved credentials are reused.
    """

    def __init__(
        self,
        resources: SqlResourceStore,
        resolvers: Resolvers,
        remeasure: Callable[[int], Awaitable[None]] | None = None,
        *,
        ttl: float = 60.0,
    ) -> None:
        self.resources = resources
        self.resolvers = resolvers
        self.remeasure = remeasure
        self.ttl = ttl
        self._cache: dict[int, tuple[float, Credentials]] = {}
        self._measured: dict[int, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, set_id: int) -> Credentials:
        """The credentials of credential set ``set_id``.

        :raises CredentialsUnusable: the set is gone, has no complete credential, or a secret
            cannot be read as its principal.
        """
        now = time.monotonic()
        found = self._cache.get(set_id)
        if found is not None and now - found[0] < self.ttl:
            return found[1]
        async with self.resources.read() as tx:
            row: CredentialSetRecord | None = await tx.by_id(ResourceKind.CREDENTIAL_SET, set_id)
        if row is None:
            raise CredentialsUnusable(None, f"the credential set (row {set_id}) does not exist")
        item = _first_complete(row.auth_credentials)
        if item is None:
            raise CredentialsUnusable(
                row.name,
                f"the credential set '{row.name}' has no credential with both secret identifiers",
            )
        values: list[str] = []
        for key, what in (
            ("usernameSecretIdentifier", "username"),
            ("passwordSecretIdentifier", "password"),
        ):
            identifier = item[key]
            try:
                secret = await self.resolvers.resolve(identifier, row.principal_id)
            except e.EntrepotError as err:
                raise CredentialsUnusable(
                    row.name,
                    f"reading the {what} secret '{identifier}' of credential set '{row.name}' "
                    f"as principal '{row.principal_id}' failed: {err.message}",
                ) from None
            values.append(secret.reveal())
        credentials = (values[0], values[1])
        self._cache[set_id] = (now, credentials)
        return credentials

    def unauthorized(self, set_id: int) -> None:
        """The upstream refused the set's credentials: forget them, and re-measure the set's
        health in the background (at most once per ``ttl``)."""
        self._cache.pop(set_id, None)
        if self.remeasure is None:
            return
        now = time.monotonic()
        last = self._measured.get(set_id)
        if last is not None and now - last < self.ttl:
            return
        self._measured[set_id] = now
        task = asyncio.create_task(self._remeasure(set_id), name=f"remeasure set {set_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _remeasure(self, set_id: int) -> None:
        assert self.remeasure is not None
        try:
            await self.remeasure(set_id)
        except Exception:
            log.exception("re-measuring the health of credential set %d failed", set_id)

    async def close(self) -> None:
        """Cancel the running re-measurements."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _first_complete(items: list[dict[str, Any]]) -> dict[str, str] | None:
    for item in items:
        if not isinstance(item, dict):
            continue
        user = item.get("usernameSecretIdentifier")
        password = item.get("passwordSecretIdentifier")
        if isinstance(user, str) and isinstance(password, str):
            return {"usernameSecretIdentifier": user, "passwordSecretIdentifier": password}
    return None
