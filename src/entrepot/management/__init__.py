"""The management face without HTTP: registries, cache rules and credential sets.

The ARM routes (``web/arm.py``) parse the path and the JSON, call one method of
:class:`Management` and render what comes back. Everything here raises domain errors from
:mod:`entrepot.errors`; nothing chooses a status code.

What callers may rely on:

* Validation happens before anything is written: a method that raises changed nothing.
* A mutating call commits the accepted change together with an operation record in one
  transaction, then runs the operation (:mod:`.operations`). The returned :class:`Accepted`
  carries the resource as it stands when the call returns and the operation id. Operations are
  stored: one in progress when a process died is finished by another process.
* When an operation reports ``Succeeded``, a read of the resource already shows the final state.
* Names are case-insensitive for lookup and keep the caller's spelling for display.
* Lists are keyset-paged: ``after`` is the lower-cased name the previous page ended with
  (``""`` for the first page); :attr:`Page.next_after` continues.

Rooms: :mod:`.types` (values), :mod:`.validation` (pure checks, upstream policy),
:mod:`.views` (records as models), :mod:`.children` (the paths all resources share),
:mod:`.registries`, :mod:`.cache_rules`, :mod:`.credential_sets`, :mod:`.operations` (the
runner) and :mod:`.health` (credential health and its timer).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from entrepot import errors as e
from entrepot.config import ArmConfig, PolicyConfig
from entrepot.credential_health import CredentialProbe
from entrepot.management.cache_rules import CacheRuleService
from entrepot.management.children import ResourcePaths, StateHandler
from entrepot.management.credential_sets import CredentialSetHandler, CredentialSetService
from entrepot.management.health import CredentialHealth
from entrepot.management.operations import OperationRunner
from entrepot.management.registries import RegistryService
from entrepot.management.types import (
    Accepted,
    Actor,
    OperationState,
    OperationStatus,
    Page,
    RegistryRef,
)
from entrepot.management.validation import UpstreamPolicy
from entrepot.management.views import Views
from entrepot.metadata.protocols import Leases, OperationStore, ResourceStore
from entrepot.metadata.records import ResourceKind
from entrepot.secrets import Resolvers

__all__ = [
    "Accepted",
    "Actor",
    "Management",
    "OperationState",
    "OperationStatus",
    "Page",
    "RegistryRef",
]


class Management:
    """The management services of one process; :meth:`start` it, :meth:`stop` it."""

    def __init__(
        self,
        resources: ResourceStore,
        operations: OperationStore,
        leases: Leases,
        arm: ArmConfig,
        policy: PolicyConfig,
        login_server: Callable[[str], str],
        *,
        lease_seconds: float = 10.0,
        sweep_seconds: float | None = None,
        resolvers: Resolvers | None = None,
        probe: CredentialProbe | None = None,
        health_interval: float = 600.0,
    ) -> None:
        self.resources = resources
        self.operations = operations
        self.views = Views(login_server)
        self.runner = OperationRunner(
            resources,
            operations,
            leases,
            lease_seconds=lease_seconds,
            sweep_seconds=sweep_seconds
            if sweep_seconds is not None
            else max(0.2, lease_seconds / 3),
            min_seconds=arm.operation_min_seconds,
        )
        self.paths = ResourcePaths(resources, self.runner, self.views, arm.page_size)
        self.health = CredentialHealth(resources, resolvers, probe, health_interval)
        upstream_policy = UpstreamPolicy(policy)
        self.registries = RegistryService(self.paths, arm.default_location)
        self.cache_rules = CacheRuleService(self.paths, upstream_policy, arm.max_rules_per_registry)
        self.credential_sets = CredentialSetService(
            self.paths, upstream_policy, self.health, arm.max_credential_sets_per_registry
        )
        self.runner.handlers = {
            ResourceKind.REGISTRY: StateHandler(ResourceKind.REGISTRY),
            ResourceKind.CACHE_RULE: StateHandler(ResourceKind.CACHE_RULE),
            ResourceKind.CREDENTIAL_SET: CredentialSetHandler(self.health),
        }

    @property
    def tenant_id(self) -> str:
        return self.views.tenant_id

    async def start(self) -> None:
        """Load installation settings, resume operations left in progress, start the timers."""
        async with self.resources.write() as tx:
            tenant = await tx.setting("tenant_id")
            if tenant is None:
                tenant = str(uuid.uuid4())
                await tx.put_setting("tenant_id", tenant)
        self.views.tenant_id = tenant
        self.runner.start()
        self.health.start()

    async def stop(self) -> None:
        await self.health.stop()
        await self.runner.stop()

    async def get_operation(self, resource_id: str, op_id: str) -> OperationStatus:
        """The operation ``op_id`` of the resource ``resource_id`` (compared case-insensitively).

        :raises ResourceNotFound: if there is no such operation on that resource.
        """
        op = await self.operations.get(op_id)
        if op is None or op.resource_id.lower() != resource_id.lower():
            raise e.ResourceNotFound(f"Operation '{op_id}' was not found.", target="operationId")
        return OperationStatus(
            id=op.id,
            resource_id=op.resource_id,
            action=op.action.value,
            status=op.status,
            start_time=op.started_at,
            end_time=op.ended_at,
            error_code=op.error_code,
            error_message=op.error_message,
        )
