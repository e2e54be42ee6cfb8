"""Registries: the minimal ``registries`` resource that cache rules and credential sets live in.

A registry name is unique on the server, whatever its subscription and resource group, as ACR's
are globally: each registry has its own login server (``docs/adr/0003``).
"""

from __future__ import annotations

from typing import Any

from entrepot import errors as e
from entrepot.management.children import ResourcePaths, check_idle
from entrepot.management.types import Accepted, Actor, Page, RegistryRef
from entrepot.management.validation import (
    require_object,
    validate_registry_ref,
    validate_resource_group,
)
from entrepot.metadata.database import utcnow
from entrepot.metadata.protocols import ResourceTx
from entrepot.metadata.records import (
    Action,
    Changes,
    NewRegistry,
    RegistryRecord,
    ResourceKind,
    State,
)
from entrepot.models import Registry, SkuName

__all__ = ["RegistryService"]

KIND = ResourceKind.REGISTRY


class RegistryService:
    """The registry resource of the management API."""

    def __init__(self, paths: ResourcePaths, default_location: str) -> None:
        self.paths = paths
        self.default_location = default_location

    async def ensure(self, ref: RegistryRef, location: str, actor: Actor) -> None:
        """Create ``ref`` if it does not exist (registries named in the configuration)."""
        validate_registry_ref(ref)
        async with self.paths.store.write() as tx:
            if await tx.registry(ref) is not None:
                return
            await self._check_name_free(tx, ref)
            await tx.insert_registry(
                NewRegistry(
                    ref, location, SkuName.BASIC.value, {}, State.SUCCEEDED, actor.name, utcnow()
                )
            )

    async def get(self, ref: RegistryRef) -> Registry:
        validate_registry_ref(ref)
        row = self.paths.require_registry(
            ref, await self.paths.store.get_registry(ref), parent=False
        )
        return self.paths.views.registry(row)

    async def list(self, subscription: str, resource_group: str, after: str) -> Page[Registry]:
        validate_resource_group(subscription, resource_group)
        async with self.paths.store.read() as tx:
            rows = await tx.registries(
                subscription, resource_group, after, self.paths.page_size + 1
            )
        return self.paths.page([self.paths.views.registry(r) for r in rows], [r.name for r in rows])

    async def put(self, ref: RegistryRef, body: Any, actor: Actor) -> Accepted[Registry]:
        validate_registry_ref(ref)
        model = Registry.from_arm(require_object(body), strict=True)
        location = model.location if model.location is not None else self.default_location
        if not isinstance(location, str) or not location.strip() or len(location) > 100:
            raise e.InvalidPropertyValue(
                "'location' must be a non-empty string.", target="location"
            )
        sku = SkuName.BASIC.value
        if model.sku is not None:
            if model.sku.name is None:
                raise e.MissingProperty("'sku.name' is required.", target="sku.name")
            if not isinstance(model.sku.name, SkuName):  # pragma: no cover - strict parse
                raise e.InvalidPropertyValue("'sku.name' is not a known SKU.", target="sku.name")
            sku = model.sku.name.value
        tags = model.tags or {}
        if len(tags) > 50 or any(len(k) > 512 or len(v) > 256 for k, v in tags.items()):
            raise e.InvalidPropertyValue("At most 50 tags of 512/256 characters.", target="tags")
        async with self.paths.store.write() as tx:
            row = await tx.registry(ref)
            if row is None:
                await self._check_name_free(tx, ref)
                row_id = await tx.insert_registry(
                    NewRegistry(ref, location, sku, tags, State.CREATING, actor.name, utcnow())
                )
                created, resource_id = True, ref.resource_id
            else:
                check_idle(row)
                if row.location.lower() != location.lower():
                    raise e.PropertyChangeNotAllowed(
                        f"The location of registry '{row.name}' is {row.location!r} and "
                        "cannot be changed.",
                        target="location",
                    )
                await tx.update(
                    KIND,
                    row.id,
                    Changes(
                        state=State.UPDATING, actor=actor.name, now=utcnow(), sku=sku, tags=tags
                    ),
                )
                row_id, created = row.id, False
                resource_id = RegistryRef(*_key(row)).resource_id
            op_id = await self.paths.runner.accept(
                tx, KIND, resource_id, None, row_id, Action.CREATE if created else Action.UPDATE
            )
        return await self.paths.accepted(KIND, row_id, resource_id, op_id, created)

    async def delete(self, ref: RegistryRef, actor: Actor) -> Accepted[Registry]:
        validate_registry_ref(ref)
        async with self.paths.store.write() as tx:
            row = await tx.registry(ref)
            if row is None:
                return Accepted(None, False, None, ref.resource_id)
            check_idle(row)
            await tx.update(
                KIND, row.id, Changes(state=State.DELETING, actor=actor.name, now=utcnow())
            )
            resource_id = RegistryRef(*_key(row)).resource_id
            op_id = await self.paths.runner.accept(
                tx, KIND, resource_id, row.id, row.id, Action.DELETE
            )
        return await self.paths.accepted(KIND, row.id, resource_id, op_id, False)

    @staticmethod
    async def _check_name_free(tx: ResourceTx, ref: RegistryRef) -> None:
        for other in await tx.registries_named(ref.name):
            raise e.ResourceExists(
                f"The registry name '{ref.name}' is already in use by registry '{other.name}' of "
                f"resource group '{other.resource_group}'. Registry names are unique on this "
                "server: /v2/ finds a registry by its name (docs/adr/0003).",
                target="registryName",
            )


def _key(row: RegistryRecord) -> tuple[str, str, str]:
    return row.subscription, row.resource_group, row.name
