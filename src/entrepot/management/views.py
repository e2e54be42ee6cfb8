"""Records as the seed's models: the one place that turns stored resources into ARM resources."""

from __future__ import annotations

from collections.abc import Callable

from entrepot.metadata.records import (
    Audit,
    CacheRuleRecord,
    CredentialSetRecord,
    RegistryRecord,
)
from entrepot.models import (
    CACHE_RULE_TYPE,
    CACHE_RULES,
    CREDENTIAL_SET_TYPE,
    CREDENTIAL_SETS,
    REGISTRY_TYPE,
    AuthCredential,
    CacheRule,
    CreatedByType,
    CredentialSet,
    IdentityProperties,
    ProvisioningState,
    Registry,
    ResourceIdentityType,
    Sku,
    SkuName,
    SystemData,
    child_resource_id,
    registry_resource_id,
)

__all__ = ["Views", "registry_id_of"]


def registry_id_of(registry: RegistryRecord) -> str:
    return registry_resource_id(registry.subscription, registry.resource_group, registry.name)


def system_data(audit: Audit) -> SystemData:
    return SystemData(
        created_by=audit.created_by,
        created_by_type=CreatedByType.KEY,
        created_at=audit.created_at,
        last_modified_by=audit.modified_by,
        last_modified_by_type=CreatedByType.KEY,
        last_modified_at=audit.modified_at,
    )


class Views:
    """Builds models; ``login_server`` maps a registry name to its address (registry
    addressing), ``tenant_id`` is the installation's tenant for identities."""

    def __init__(self, login_server: Callable[[str], str]) -> None:
        self.login_server = login_server
        self.tenant_id = ""

    def registry(self, row: RegistryRecord) -> Registry:
        return Registry(
            id=registry_id_of(row),
            name=row.name,
            type=REGISTRY_TYPE,
            system_data=system_data(row.audit),
            location=row.location,
            tags=dict(row.tags),
            sku=Sku(name=SkuName(row.sku), tier=row.sku),
            login_server=self.login_server(row.name),
            creation_date=row.audit.created_at,
            provisioning_state=ProvisioningState(row.state.value),
        )

    def cache_rule(self, registry: RegistryRecord, row: CacheRuleRecord) -> CacheRule:
        set_id = row.credential_set_id
        set_name = row.credential_set_name or str(set_id)
        return CacheRule(
            id=child_resource_id(registry_id_of(registry), CACHE_RULES, row.name),
            name=row.name,
            type=CACHE_RULE_TYPE,
            system_data=system_data(row.audit),
            source_repository=row.source_repository,
            target_repository=row.target_repository,
            credential_set_resource_id=(
                None
                if set_id is None
                else child_resource_id(registry_id_of(registry), CREDENTIAL_SETS, set_name)
            ),
            creation_date=row.audit.created_at,
            provisioning_state=ProvisioningState(row.state.value),
        )

    def credential_set(self, registry: RegistryRecord, row: CredentialSetRecord) -> CredentialSet:
        return CredentialSet(
            id=child_resource_id(registry_id_of(registry), CREDENTIAL_SETS, row.name),
            name=row.name,
            type=CREDENTIAL_SET_TYPE,
            system_data=system_data(row.audit),
            identity=IdentityProperties(
                type=ResourceIdentityType(row.identity_type),
                principal_id=row.principal_id,
                tenant_id=self.tenant_id,
            ),
            login_server=row.login_server,
            auth_credentials=[AuthCredential.from_arm(item) for item in row.auth_credentials],
            creation_date=row.audit.created_at,
            provisioning_state=ProvisioningState(row.state.value),
        )
