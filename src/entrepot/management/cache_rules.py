"""Cache rules: validation, conflicts and quota, and their create/update/delete operations."""

from __future__ import annotations

from typing import Any

from entrepot import errors as e
from entrepot.management.children import ResourcePaths
from entrepot.management.types import Accepted, Actor, Page, RegistryRef
from entrepot.management.validation import (
    UpstreamPolicy,
    require_object,
    required_str,
    validate_name,
    validate_registry_ref,
)
from entrepot.management.views import registry_id_of
from entrepot.metadata.database import utcnow
from entrepot.metadata.protocols import ResourceTx
from entrepot.metadata.records import (
    CacheRuleRecord,
    Changes,
    NewCacheRule,
    RegistryRecord,
    ResourceKind,
    State,
)
from entrepot.models import CacheRule, CacheRuleUpdateParameters
from entrepot.rules import RulePattern, overlaps, parse_rule, target_ancestors

__all__ = ["CacheRuleService"]

KIND = ResourceKind.CACHE_RULE
SET_REF = "properties.credentialSetResourceId"


class CacheRuleService:
    """The cache-rule resource of the management API."""

    def __init__(self, paths: ResourcePaths, policy: UpstreamPolicy, max_rules: int) -> None:
        self.paths = paths
        self.policy = policy
        self.max_rules = max_rules

    async def get(self, ref: RegistryRef, name: str) -> CacheRule:
        rule: CacheRule = await self.paths.get_child(KIND, ref, name)
        return rule

    async def list(self, ref: RegistryRef, after: str) -> Page[CacheRule]:
        return await self.paths.list_children(KIND, ref, after)

    async def put(
        self, ref: RegistryRef, name: str, body: Any, actor: Actor
    ) -> Accepted[CacheRule]:
        validate_registry_ref(ref)
        validate_name(name, "cacheRule")
        model = CacheRule.from_arm(require_object(body), strict=True)
        source = required_str(model.source_repository, "properties.sourceRepository")
        target = required_str(model.target_repository, "properties.targetRepository")
        pattern = parse_rule(source, target)
        self.policy.check_allowed(pattern.source_login_server, "properties.sourceRepository")
        set_ref = model.credential_set_resource_id

        async def create(tx: ResourceTx, registry: RegistryRecord) -> int:
            set_id = await self._credential_set(tx, registry, set_ref, pattern)
            await self._check_capacity(tx, registry.id, name, pattern)
            return await tx.insert_cache_rule(
                NewCacheRule(
                    registry_id=registry.id,
                    name=name,
                    source_repository=pattern.source_repository,
                    target_repository=pattern.target_repository,
                    target_path=pattern.target_path,
                    wildcard=pattern.wildcard,
                    credential_set_id=set_id,
                    actor=actor.name,
                    now=utcnow(),
                )
            )

        async def update(tx: ResourceTx, registry: RegistryRecord, row: CacheRuleRecord) -> None:
            set_id = await self._credential_set(tx, registry, set_ref, pattern)
            for label, old, new in (
                ("sourceRepository", row.source_repository, pattern.source_repository),
                ("targetRepository", row.target_repository, pattern.target_repository),
            ):
                if old != new:
                    raise e.PropertyChangeNotAllowed(
                        f"The {label} of cache rule '{row.name}' is {old!r}; it cannot be "
                        f"changed to {new!r}. Delete the rule and create a new one.",
                        target=f"properties.{label}",
                    )
            await tx.update(
                KIND, row.id, Changes(set_credential_set=True, credential_set_id=set_id)
            )

        return await self.paths.upsert_child(KIND, ref, name, create, update, actor)

    async def patch(
        self, ref: RegistryRef, name: str, body: Any, actor: Actor
    ) -> Accepted[CacheRule]:
        validate_registry_ref(ref)
        validate_name(name, "cacheRule")
        data = require_object(body)
        params = CacheRuleUpdateParameters.from_arm(data, strict=True)
        props = data.get("properties") or {}

        async def update(tx: ResourceTx, registry: RegistryRecord, row: CacheRuleRecord) -> None:
            for key, current in (
                ("sourceRepository", row.source_repository),
                ("targetRepository", row.target_repository),
            ):
                if key in props and props[key] != current:
                    raise e.PropertyChangeNotAllowed(
                        f"The {key} of a cache rule cannot be changed; only "
                        "credentialSetResourceId can be updated.",
                        target=f"properties.{key}",
                    )
            if "credential_set_resource_id" in params.fields_set:
                pattern = parse_rule(row.source_repository, row.target_repository)
                set_id = await self._credential_set(
                    tx, registry, params.credential_set_resource_id, pattern
                )
                await tx.update(
                    KIND, row.id, Changes(set_credential_set=True, credential_set_id=set_id)
                )

        return await self.paths.patch_child(KIND, ref, name, update, actor)

    async def delete(self, ref: RegistryRef, name: str, actor: Actor) -> Accepted[CacheRule]:
        return await self.paths.delete_child(KIND, ref, name, actor)

    # -- checks ---------------------------------------------------------------------------------
    async def _credential_set(
        self, tx: ResourceTx, registry: RegistryRecord, set_ref: Any, pattern: RulePattern
    ) -> int | None:
        """The row id of the credential set ``set_ref`` names (``None`` for none), checked."""
        set_id = await _resolve_set_reference(tx, registry, set_ref)
        self.policy.check_docker_hub_credentials(pattern, set_id is not None)
        return set_id

    async def _check_capacity(
        self, tx: ResourceTx, registry_id: int, name: str, pattern: RulePattern
    ) -> None:
        if pattern.wildcard:
            clashes = await tx.rules_with_targets(
                registry_id, target_ancestors(pattern.target_path), True
            )
            clashes += await tx.wildcard_rules_under(registry_id, pattern.target_path)
        else:
            clashes = await tx.rules_with_targets(registry_id, [pattern.target_path], False)
        for other in clashes:
            existing = parse_rule(other.source_repository, other.target_repository)
            if overlaps(pattern, existing):
                raise e.TargetConflict(
                    f"The target repository '{pattern.target_repository}' of cache rule '{name}' "
                    f"overlaps the target '{existing.target_repository}' of cache rule "
                    f"'{other.name}'. Wildcard rules may not share or nest targets and static "
                    "rules may not share a target.",
                    target="properties.targetRepository",
                )
        count = await tx.count_children(KIND, registry_id)
        if count >= self.max_rules:
            raise e.QuotaExceeded(
                f"The registry already has {count} cache rules, the maximum "
                f"({self.max_rules}). Delete a rule before creating another."
            )


async def _resolve_set_reference(
    tx: ResourceTx, registry: RegistryRecord, set_ref: Any
) -> int | None:
    if set_ref is None:
        return None
    if not isinstance(set_ref, str):  # pragma: no cover - strict parse
        raise e.InvalidPropertyValue("must be a string", target=SET_REF)
    own_id = registry_id_of(registry)
    own = own_id.lower() + "/credentialsets/"
    if not set_ref.lower().startswith(own) or "/" in set_ref[len(own) :]:
        raise e.InvalidCredentialSetReference(
            f"'credentialSetResourceId' must be the id of a credential set of registry "
            f"'{registry.name}', of the form {own_id}/credentialSets/<name>; got {set_ref!r}.",
            target=SET_REF,
        )
    set_name = set_ref[len(own) :]
    row = await tx.child(ResourceKind.CREDENTIAL_SET, registry.id, set_name)
    if row is None or row.state is State.DELETING:
        raise e.CredentialSetNotFound(
            f"The credential set '{set_name}' does not exist in registry '{registry.name}'. "
            "Create it before the rule that uses it.",
            target=SET_REF,
        )
    return row.id
