"""The paths every management resource shares: find, list, upsert, patch, delete, accept.

Registries, cache rules and credential sets differ only in how a body becomes a row and in the
checks before a write; :class:`ResourcePaths` holds everything else once, and
:class:`StateHandler` is the operation that settles a resource's ``provisioningState``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from entrepot import errors as e
from entrepot.management.operations import OperationRunner
from entrepot.management.types import Accepted, Actor, Page, RegistryRef
from entrepot.management.validation import validate_name, validate_registry_ref
from entrepot.management.views import Views, registry_id_of
from entrepot.metadata.database import utcnow
from entrepot.metadata.protocols import ResourceStore, ResourceTx
from entrepot.metadata.records import (
    Action,
    Changes,
    ChildRecord,
    OperationRecord,
    OperationState,
    RegistryRecord,
    ResourceKind,
    State,
)
from entrepot.models import CACHE_RULES, CREDENTIAL_SETS, child_resource_id

__all__ = ["ResourcePaths", "StateHandler", "check_idle", "what"]

COLLECTIONS = {ResourceKind.CACHE_RULE: CACHE_RULES, ResourceKind.CREDENTIAL_SET: CREDENTIAL_SETS}
_WHAT = {
    ResourceKind.REGISTRY: ("registry", "registry"),
    ResourceKind.CACHE_RULE: ("cache rule", "cacheRule"),
    ResourceKind.CREDENTIAL_SET: ("credential set", "credentialSet"),
}
# Creates a child in the transaction and returns its row id.
Create = Callable[[ResourceTx, RegistryRecord], Awaitable[int]]
# Checks and writes the changes to an existing child in the transaction.
Update = Callable[[ResourceTx, RegistryRecord, Any], Awaitable[None]]


def what(kind: ResourceKind) -> str:
    """``cache rule``, ``credential set`` or ``registry``, for messages."""
    return _WHAT[kind][0]


def check_idle(row: RegistryRecord | ChildRecord) -> None:
    """:raises OperationInProgress: when an operation is running on ``row``."""
    if not row.state.terminal:
        raise e.OperationInProgress(
            f"'{row.name}' is {row.state.value}; wait for that operation to finish and try again."
        )


def child_id(registry: RegistryRecord, kind: ResourceKind, name: str) -> str:
    return child_resource_id(registry_id_of(registry), COLLECTIONS[kind], name)


class ResourcePaths:
    """Find, list, upsert, patch and delete resources; every write is one transaction that
    also accepts the operation carrying it out."""

    def __init__(
        self, store: ResourceStore, runner: OperationRunner, views: Views, page_size: int
    ) -> None:
        self.store = store
        self.runner = runner
        self.views = views
        self.page_size = page_size

    # -- reads ----------------------------------------------------------------------------------
    async def registry(self, tx: ResourceTx, ref: RegistryRef, *, parent: bool = True) -> Any:
        """The registry of ``ref``; a registry being deleted is no parent.

        :raises ParentResourceNotFound: (``parent``) or ResourceNotFound.
        """
        row = await tx.registry(ref)
        return self.require_registry(ref, row, parent=parent)

    @staticmethod
    def require_registry(
        ref: RegistryRef, row: RegistryRecord | None, *, parent: bool = True
    ) -> RegistryRecord:
        if row is None or (parent and row.state is State.DELETING):
            message = (
                f"The registry '{ref.name}' was not found in resource group '{ref.resource_group}'."
            )
            if parent:
                raise e.ParentResourceNotFound(message, target="registryName")
            raise e.ResourceNotFound(message, target="registryName")
        return row

    @staticmethod
    def require_child(
        kind: ResourceKind, registry: RegistryRecord, row: ChildRecord | None, name: str
    ) -> Any:
        if row is None:
            raise e.ResourceNotFound(
                f"The {what(kind)} '{name}' was not found in registry '{registry.name}'.",
                target=name,
            )
        return row

    async def get_child(self, kind: ResourceKind, ref: RegistryRef, name: str) -> Any:
        """The model of child ``name``, read with one point query."""
        validate_registry_ref(ref)
        validate_name(name, _WHAT[kind][1])
        registry, row = await self.store.get_with_child(kind, ref, name)
        registry = self.require_registry(ref, registry)
        return self.model(kind, registry, self.require_child(kind, registry, row, name))

    async def list_children(self, kind: ResourceKind, ref: RegistryRef, after: str) -> Page[Any]:
        validate_registry_ref(ref)
        async with self.store.read() as tx:
            registry = await self.registry(tx, ref)
            rows = await tx.children(kind, registry.id, after, self.page_size + 1)
        return self.page([self.model(kind, registry, r) for r in rows], [r.name for r in rows])

    def page(self, items: list[Any], names: list[str]) -> Page[Any]:
        if len(items) > self.page_size:
            return Page(items[: self.page_size], names[self.page_size - 1].lower())
        return Page(items, None)

    def model(self, kind: ResourceKind, registry: RegistryRecord, row: Any) -> Any:
        if kind is ResourceKind.REGISTRY:
            return self.views.registry(row)
        if kind is ResourceKind.CACHE_RULE:
            return self.views.cache_rule(registry, row)
        return self.views.credential_set(registry, row)

    # -- writes ---------------------------------------------------------------------------------
    async def upsert_child(
        self,
        kind: ResourceKind,
        ref: RegistryRef,
        name: str,
        create: Create,
        update: Update,
        actor: Actor,
    ) -> Accepted[Any]:
        """Create child ``name`` (``create``) or change it (``update``), then run the operation."""
        async with self.store.write() as tx:
            registry = await self.registry(tx, ref)
            row = await tx.child(kind, registry.id, name)
            if row is None:
                row_id, created, display = await create(tx, registry), True, name
            else:
                check_idle(row)
                await update(tx, registry, row)
                await tx.update(
                    kind, row.id, Changes(state=State.UPDATING, actor=actor.name, now=utcnow())
                )
                row_id, created, display = row.id, False, row.name
            resource_id = child_id(registry, kind, display)
            op_id = await self.runner.accept(
                tx,
                kind,
                resource_id,
                registry.id,
                row_id,
                Action.CREATE if created else Action.UPDATE,
            )
        return await self.accepted(kind, row_id, resource_id, op_id, created)

    async def patch_child(
        self, kind: ResourceKind, ref: RegistryRef, name: str, update: Update, actor: Actor
    ) -> Accepted[Any]:
        """Change the existing child ``name`` (``update``), then run the operation."""
        async with self.store.write() as tx:
            registry = await self.registry(tx, ref)
            row = self.require_child(kind, registry, await tx.child(kind, registry.id, name), name)
            check_idle(row)
            await update(tx, registry, row)
            await tx.update(
                kind, row.id, Changes(state=State.UPDATING, actor=actor.name, now=utcnow())
            )
            resource_id = child_id(registry, kind, row.name)
            op_id = await self.runner.accept(
                tx, kind, resource_id, registry.id, row.id, Action.UPDATE
            )
        return await self.accepted(kind, row.id, resource_id, op_id, False)

    async def delete_child(
        self,
        kind: ResourceKind,
        ref: RegistryRef,
        name: str,
        actor: Actor,
        before: Callable[[ResourceTx, Any], Awaitable[None]] | None = None,
    ) -> Accepted[Any]:
        """Mark child ``name`` Deleting and run its delete; nothing to do if it does not exist."""
        validate_registry_ref(ref)
        validate_name(name, _WHAT[kind][1])
        async with self.store.write() as tx:
            registry = await self.registry(tx, ref)
            row = await tx.child(kind, registry.id, name)
            resource_id = child_id(registry, kind, name if row is None else row.name)
            if row is None:
                return Accepted(None, False, None, resource_id)
            check_idle(row)
            if before is not None:
                await before(tx, row)
            await tx.update(
                kind, row.id, Changes(state=State.DELETING, actor=actor.name, now=utcnow())
            )
            op_id = await self.runner.accept(
                tx, kind, resource_id, registry.id, row.id, Action.DELETE
            )
        return await self.accepted(kind, row.id, resource_id, op_id, False)

    async def accepted(
        self, kind: ResourceKind, row_id: int, resource_id: str, op_id: str, created: bool
    ) -> Accepted[Any]:
        """Wait briefly for the operation, then describe the resource as it stands."""
        await self.runner.wait_briefly(op_id, 0.5)
        async with self.store.read() as tx:
            row = await tx.by_id(kind, row_id)
            if row is None:
                return Accepted(None, created, op_id, resource_id)
            registry = (
                row if kind is ResourceKind.REGISTRY else (await tx.registry_by_id(row.registry_id))
            )
        assert registry is not None, "a child outlived its registry"
        return Accepted(self.model(kind, registry, row), created, op_id, resource_id)


class StateHandler:
    """The operation of registries and cache rules: settle the state, or delete the row."""

    def __init__(self, kind: ResourceKind) -> None:
        self.kind = kind

    async def prepare(self, op: OperationRecord) -> Any:
        return None

    async def apply(
        self, tx: ResourceTx, op: OperationRecord, prepared: Any
    ) -> tuple[OperationState, e.EntrepotError | None]:
        row = await tx.by_id(self.kind, op.row_id)
        if op.action is Action.DELETE:
            if row is not None:
                await tx.delete(self.kind, op.row_id)
            return OperationState.SUCCEEDED, None
        if row is None:
            return OperationState.CANCELED, e.ResourceNotFound(
                "The resource was deleted meanwhile."
            )
        await tx.update(self.kind, op.row_id, self.settled(row, prepared))
        return OperationState.SUCCEEDED, None

    def settled(self, row: Any, prepared: Any) -> Changes:
        """The changes that end a successful create or update."""
        return Changes(state=State.SUCCEEDED)

    async def failed(self, tx: ResourceTx, op: OperationRecord) -> None:
        await tx.update(self.kind, op.row_id, Changes(state=State.FAILED))
