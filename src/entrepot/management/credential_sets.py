"""Credential sets: validation, quota, and their operations (which measure health)."""

from __future__ import annotations

import uuid
from typing import Any

from entrepot import errors as e
from entrepot.management.children import ResourcePaths, StateHandler
from entrepot.management.health import CredentialHealth, Health
from entrepot.management.types import Accepted, Actor, Page, RegistryRef
from entrepot.management.validation import (
    UpstreamPolicy,
    identity_type,
    in_use,
    login_server,
    merge_credentials,
    require_object,
    validate_name,
    validate_registry_ref,
    with_health,
)
from entrepot.metadata.database import utcnow
from entrepot.metadata.protocols import ResourceTx
from entrepot.metadata.records import (
    Action,
    Changes,
    CredentialSetRecord,
    NewCredentialSet,
    OperationRecord,
    OperationState,
    RegistryRecord,
    ResourceKind,
    State,
)
from entrepot.models import CredentialSet, CredentialSetUpdateParameters

__all__ = ["CredentialSetHandler", "CredentialSetService"]

KIND = ResourceKind.CREDENTIAL_SET


class CredentialSetService:
    """The credential-set resource of the management API."""

    def __init__(
        self,
        paths: ResourcePaths,
        policy: UpstreamPolicy,
        health: CredentialHealth,
        max_sets: int,
    ) -> None:
        self.paths = paths
        self.policy = policy
        self.health = health
        self.max_sets = max_sets

    async def get(self, ref: RegistryRef, name: str) -> CredentialSet:
        found: CredentialSet = await self.paths.get_child(KIND, ref, name)
        return found

    async def list(self, ref: RegistryRef, after: str) -> Page[CredentialSet]:
        return await self.paths.list_children(KIND, ref, after)

    async def put(
        self, ref: RegistryRef, name: str, body: Any, actor: Actor
    ) -> Accepted[CredentialSet]:
        validate_registry_ref(ref)
        validate_name(name, "credentialSet")
        model = CredentialSet.from_arm(require_object(body), strict=True)
        identity = identity_type(model.identity)
        server = login_server(model.login_server, "properties.loginServer")
        self.policy.check_allowed(server.lower(), "properties.loginServer")
        if model.auth_credentials is None:
            raise e.MissingProperty(
                "'properties.authCredentials' is required.", target="properties.authCredentials"
            )
        credentials = merge_credentials(
            [], model.auth_credentials, require_complete=True, check=self.health.check_identifier
        )

        async def create(tx: ResourceTx, registry: RegistryRecord) -> int:
            count = await tx.count_children(KIND, registry.id)
            if count >= self.max_sets:
                raise e.CredentialSetQuotaExceeded(
                    f"Registry '{registry.name}' already has {count} credential sets, the "
                    f"maximum ({self.max_sets}).",
                )
            return await tx.insert_credential_set(
                NewCredentialSet(
                    registry_id=registry.id,
                    name=name,
                    login_server=server,
                    identity_type=identity,
                    principal_id=str(uuid.uuid4()),
                    auth_credentials=credentials,
                    actor=actor.name,
                    now=utcnow(),
                )
            )

        async def update(
            tx: ResourceTx, registry: RegistryRecord, row: CredentialSetRecord
        ) -> None:
            if row.login_server.lower() != server.lower():
                raise e.PropertyChangeNotAllowed(
                    f"The loginServer of credential set '{row.name}' is {row.login_server!r} "
                    "and cannot be changed.",
                    target="properties.loginServer",
                )
            await tx.update(
                KIND, row.id, Changes(identity_type=identity, auth_credentials=credentials)
            )

        return await self.paths.upsert_child(KIND, ref, name, create, update, actor)

    async def patch(
        self, ref: RegistryRef, name: str, body: Any, actor: Actor
    ) -> Accepted[CredentialSet]:
        validate_registry_ref(ref)
        validate_name(name, "credentialSet")
        data = require_object(body)
        params = CredentialSetUpdateParameters.from_arm(data, strict=True)
        props = data.get("properties") or {}

        async def update(
            tx: ResourceTx, registry: RegistryRecord, row: CredentialSetRecord
        ) -> None:
            if "loginServer" in props and str(props["loginServer"]).lower() != (
                row.login_server.lower()
            ):
                raise e.PropertyChangeNotAllowed(
                    "The loginServer of a credential set cannot be changed.",
                    target="properties.loginServer",
                )
            changes = Changes(
                identity_type=None if params.identity is None else identity_type(params.identity),
                auth_credentials=(
                    None
                    if params.auth_credentials is None
                    else merge_credentials(
                        row.auth_credentials,
                        params.auth_credentials,
                        require_complete=False,
                        check=self.health.check_identifier,
                    )
                ),
            )
            await tx.update(KIND, row.id, changes)

        return await self.paths.patch_child(KIND, ref, name, update, actor)

    async def delete(self, ref: RegistryRef, name: str, actor: Actor) -> Accepted[CredentialSet]:
        async def refuse_if_used(tx: ResourceTx, row: CredentialSetRecord) -> None:
            users = await tx.rules_using_credential_set(row.id)
            if users:
                raise in_use(row.name, users)

        return await self.paths.delete_child(KIND, ref, name, actor, refuse_if_used)

    async def validate(self, ref: RegistryRef, name: str) -> CredentialSet:
        """Measure the health of every credential of a set now, store it and return the set.

        :raises ResourceNotFound: no such credential set.
        """
        validate_registry_ref(ref)
        validate_name(name, "credentialSet")
        registry, row = await self.paths.store.get_with_child(KIND, ref, name)
        registry = self.paths.require_registry(ref, registry)
        row = self.paths.require_child(KIND, registry, row, name)
        await self.health.measure_and_store(row)
        return await self.get(ref, name)


class CredentialSetHandler(StateHandler):
    """Operations of credential sets: health is measured on create and update (outside the
    transaction), and a set still used by a rule is not deleted."""

    def __init__(self, health: CredentialHealth) -> None:
        super().__init__(KIND)
        self.health = health

    async def prepare(self, op: OperationRecord) -> Health | None:
        if op.action is Action.DELETE:
            return None
        return await self.health.measure_id(op.row_id)

    async def apply(
        self, tx: ResourceTx, op: OperationRecord, prepared: Any
    ) -> tuple[OperationState, e.EntrepotError | None]:
        if op.action is Action.DELETE:
            users = await tx.rules_using_credential_set(op.row_id)
            row = await tx.by_id(KIND, op.row_id)
            if users and row is not None:
                await tx.update(KIND, op.row_id, Changes(state=State.SUCCEEDED))
                return OperationState.FAILED, in_use(row.name, users)
        return await super().apply(tx, op, prepared)

    def settled(self, row: Any, prepared: Any) -> Changes:
        if prepared is None:
            return Changes(state=State.SUCCEEDED)
        return Changes(
            state=State.SUCCEEDED, auth_credentials=with_health(row.auth_credentials, prepared)
        )
