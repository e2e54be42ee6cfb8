"""The models and enums of the management API, for users of :mod:`entrepot.mgmt`.

This module re-exports :mod:`entrepot.models` unchanged, so ``from entrepot.mgmt.models import
CacheRule`` mirrors ``from azure.mgmt.containerregistry.models import CacheRule``. The server
renders responses with the very same classes, so client and server cannot disagree on the wire
form.

Models are built with the seed's keyword names (``CacheRule(source_repository=...)``); every
attribute defaults to ``None``, and ``None`` attributes are left out of request bodies.
"""

from __future__ import annotations

from entrepot.models import (
    AuthCredential,
    CacheRule,
    CacheRuleUpdateParameters,
    CreatedByType,
    CredentialHealth,
    CredentialHealthStatus,
    CredentialName,
    CredentialSet,
    CredentialSetUpdateParameters,
    IdentityProperties,
    Model,
    ProvisioningState,
    Registry,
    ResourceIdentityType,
    Sku,
    SkuName,
    SystemData,
    UserIdentityProperties,
    format_datetime,
    parse_datetime,
)

__all__ = [
    "AuthCredential",
    "CacheRule",
    "CacheRuleUpdateParameters",
    "CreatedByType",
    "CredentialHealth",
    "CredentialHealthStatus",
    "CredentialName",
    "CredentialSet",
    "CredentialSetUpdateParameters",
    "IdentityProperties",
    "Model",
    "ProvisioningState",
    "Registry",
    "ResourceIdentityType",
    "Sku",
    "SkuName",
    "SystemData",
    "UserIdentityProperties",
    "format_datetime",
    "parse_datetime",
]
