"""Credential health: measured on create and update, on demand, and on a timer.

What callers may rely on:

* A measurement reads the set's secrets as its identity and logs in upstream
  (:class:`entrepot.credential_health.CredentialProbe`); it runs outside any transaction.
* A stored measurement applies only to credentials whose secret identifiers did not change while
  it ran (:func:`entrepot.management.validation.with_health`).
* The timer measures every settled credential set each ``interval`` seconds, each on its own: an
  error measuring one set is logged and never stops the round or the timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from entrepot import errors as e
from entrepot.credential_health import CredentialProbe
from entrepot.management.validation import identifiers, with_health
from entrepot.metadata.protocols import ResourceStore
from entrepot.metadata.records import Changes, CredentialSetRecord, ResourceKind
from entrepot.secrets import Resolvers

__all__ = ["CredentialHealth", "Health"]

log = logging.getLogger("entrepot.management.health")
Health = dict[str, dict[str, str]]  # credential name -> credentialHealth (+ the identifiers)
KIND = ResourceKind.CREDENTIAL_SET


class CredentialHealth:
    """Measures and stores the health of credential sets."""

    def __init__(
        self,
        store: ResourceStore,
        resolvers: Resolvers | None,
        probe: CredentialProbe | None,
        interval: float,
    ) -> None:
        self.store = store
        self.resolvers = resolvers
        self.probe = probe
        self.interval = interval
        self._timer: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.probe is not None:
            self._timer = asyncio.create_task(self._forever(), name="health-timer")

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer

    def check_identifier(self, value: str, target: str) -> None:
        """Refuse a secret identifier no configured resolver can read (no I/O)."""
        if self.resolvers is None:
            return
        try:
            self.resolvers.check_identifier(value)
        except e.InvalidSecretIdentifier as exc:
            raise e.InvalidSecretIdentifier(f"'{target}': {exc.message}", target=target) from None

    async def measure(self, row: CredentialSetRecord) -> Health | None:
        """The health of each credential of ``row``, by credential name (``None``: no probe).

        Stored items that are not credentials (data damaged outside entrepot) are skipped with a
        warning: they have no name to record a health on, and they never fail the others.
        """
        if self.probe is None:
            return None
        probe = self.probe
        items = [
            item
            for item in row.auth_credentials
            if isinstance(item, dict) and isinstance(item.get("name"), str)
        ]
        if len(items) < len(row.auth_credentials):
            log.warning(
                "credential set %s holds %d malformed credential(s); recreate its credentials",
                row.name,
                len(row.auth_credentials) - len(items),
            )
        results = await asyncio.gather(
            *(probe.measure(row.login_server, item, row.principal_id) for item in items)
        )
        return {
            item["name"]: dict(result) | {"_identifiers": identifiers(item)}
            for item, result in zip(items, results, strict=True)
        }

    async def measure_id(self, row_id: int) -> Health | None:
        async with self.store.read() as tx:
            row = await tx.by_id(KIND, row_id)
        return None if row is None else await self.measure(row)

    async def store_health(self, row_id: int, health: Health) -> None:
        async with self.store.write() as tx:
            row = await tx.by_id(KIND, row_id)
            if row is not None:
                merged = with_health(row.auth_credentials, health)
                await tx.update(KIND, row_id, Changes(auth_credentials=merged))

    async def measure_and_store(self, row: CredentialSetRecord) -> None:
        health = await self.measure(row)
        if health is not None:
            await self.store_health(row.id, health)

    async def refresh(self) -> int:
        """Measure every settled credential set once; return how many were measured."""
        count = 0
        async with self.store.read() as tx:
            ids = await tx.credential_set_ids()
        for row_id in ids:
            try:
                async with self.store.read() as tx:
                    row = await tx.by_id(KIND, row_id)
                if row is None or not row.state.terminal:
                    continue
                await self.measure_and_store(row)
                count += 1
            except asyncio.CancelledError:
                raise
            except Exception:  # one set's failure is that set's, never the round's
                log.exception("measuring the health of credential set %s failed", row_id)
        return count

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # one failed round must not stop the timer
                log.exception("credential health refresh failed")
