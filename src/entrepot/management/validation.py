"""Validation of management input and the upstream policy: pure functions, no I/O.

Every function raises a domain error from :mod:`entrepot.errors` naming the offending property
in ``target``; none writes anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from entrepot import errors as e
from entrepot.config import (
    NAME_RE,
    RESOURCE_GROUP_RE,
    SUBSCRIPTION_RE,
    PolicyConfig,
    is_private_host,
)
from entrepot.metadata.records import RegistryKey
from entrepot.models import AuthCredential, CredentialName, IdentityProperties, ResourceIdentityType
from entrepot.oci import is_docker_hub, is_login_server
from entrepot.rules import RulePattern

SECRET_ID_MAX = 2048


def validate_name(value: str, what: str) -> None:
    """Names of registries, rules and credential sets: 5-50 of ``[a-zA-Z0-9-]``."""
    if not NAME_RE.match(value):
        raise e.InvalidResourceName(
            f"The {what} name {value!r} is invalid: it must be 5 to 50 characters of letters, "
            "digits and hyphens.",
            target=f"{what}Name",  # the path parameter: registryName, cacheRuleName ...
        )


def validate_resource_group(subscription: str, resource_group: str) -> None:
    """:raises InvalidResourceName: for a malformed subscription id or resource group name."""
    if not SUBSCRIPTION_RE.match(subscription):
        raise e.InvalidResourceName(
            f"The subscription id {subscription!r} is invalid.", target="subscriptionId"
        )
    if not RESOURCE_GROUP_RE.match(resource_group) or resource_group.endswith("."):
        raise e.InvalidResourceName(
            f"The resource group name {resource_group!r} is invalid: 1 to 90 letters, digits, "
            "'-', '_', '.', '(' or ')', not ending in '.'.",
            target="resourceGroupName",
        )


def validate_registry_ref(ref: RegistryKey) -> None:
    """:raises InvalidResourceName: for a malformed subscription, resource group or name."""
    validate_resource_group(ref.subscription, ref.resource_group)
    validate_name(ref.name, "registry")


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise e.InvalidRequestContent("The request body must be a JSON object.")
    return body


def required_str(value: Any, target: str) -> str:
    if value is None:
        raise e.MissingProperty(f"'{target}' is required.", target=target)
    if not isinstance(value, str):  # pragma: no cover - strict parse catches it first
        raise e.InvalidPropertyValue(f"'{target}' must be a string.", target=target)
    return value


def identity_type(identity: IdentityProperties | None) -> str:
    if identity is None or identity.type is None:
        return ResourceIdentityType.SYSTEM_ASSIGNED.value
    if identity.type != ResourceIdentityType.SYSTEM_ASSIGNED:
        raise e.InvalidPropertyValue(
            f"Credential sets support the identity type 'SystemAssigned' only, got "
            f"{getattr(identity.type, 'value', identity.type)!r}.",
            target="identity.type",
        )
    if identity.user_assigned_identities:
        raise e.InvalidPropertyValue(
            "User-assigned identities are not supported.", target="identity.userAssignedIdentities"
        )
    return ResourceIdentityType.SYSTEM_ASSIGNED.value


def check_secret_identifier(value: Any, target: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise e.MissingProperty(f"'{target}' is required.", target=target)
    parts = urlsplit(value)
    if len(value) > SECRET_ID_MAX or not parts.scheme or any(c.isspace() for c in value):
        raise e.InvalidSecretIdentifier(
            f"'{target}' must be a secret URI such as "
            "https://<vault>.vault.azure.net/secrets/<name>.",
            target=target,
        )
    return value


def merge_credentials(
    current: list[dict[str, Any]],
    updates: list[AuthCredential],
    *,
    require_complete: bool,
    check: Callable[[str, str], None],
) -> list[dict[str, Any]]:
    """Merge ``updates`` into ``current`` by credential name (merge-patch of the list items)."""
    merged = {item["name"]: dict(item) for item in current}
    seen: set[str] = set()
    if require_complete and not updates:
        raise e.InvalidPropertyValue(
            "'properties.authCredentials' must hold at least one credential.",
            target="properties.authCredentials",
        )
    for i, cred in enumerate(updates):
        where = f"properties.authCredentials[{i}]"
        if cred.name is None:
            raise e.MissingProperty(f"'{where}.name' is required.", target=f"{where}.name")
        name = CredentialName(cred.name).value
        if name in seen:
            raise e.InvalidPropertyValue(
                f"Credential '{name}' appears twice.", target=f"{where}.name"
            )
        seen.add(name)
        item = merged.get(name, {"name": name}) if not require_complete else {"name": name}
        for attr, key in (
            ("username_secret_identifier", "usernameSecretIdentifier"),
            ("password_secret_identifier", "passwordSecretIdentifier"),
        ):
            value = getattr(cred, attr)
            if value is not None:
                item[key] = check_secret_identifier(value, f"{where}.{key}")
                check(item[key], f"{where}.{key}")
            elif require_complete or key not in item:
                check_secret_identifier(None, f"{where}.{key}")
        item.pop("credentialHealth", None)  # new identifiers: health is measured again
        merged[name] = item
    return list(merged.values())


def identifiers(item: dict[str, Any]) -> str:
    return f"{item.get('usernameSecretIdentifier')}\n{item.get('passwordSecretIdentifier')}"


def with_health(
    stored: list[dict[str, Any]], health: dict[str, dict[str, str]]
) -> list[dict[str, Any]]:
    """``stored`` credentials with ``health`` recorded on the items whose identifiers still match.

    A credential whose identifiers changed while its health was measured keeps no health: the
    measurement was of the old identifiers.
    """
    items = [dict(item) if isinstance(item, dict) else item for item in stored]
    for item in items:
        if not isinstance(item, dict):  # damaged data: left as it is (see CredentialHealth)
            continue
        result = health.get(item.get("name"))  # type: ignore[arg-type]
        if result is not None and result.get("_identifiers") == identifiers(item):
            item["credentialHealth"] = {k: v for k, v in result.items() if k != "_identifiers"}
    return items


def in_use(name: str, users: list[str]) -> e.CredentialSetInUse:
    return e.CredentialSetInUse(
        f"The credential set '{name}' is used by cache rule(s) {', '.join(users)}; update or "
        "delete those rules first.",
        target=name,
    )


def host_matches(host: str, pattern: str) -> bool:
    """``host`` (``name[:port]``) against ``name``, ``name:port`` or ``*.domain`` (any port)."""
    if ":" not in pattern and not host.startswith("["):
        host = host.split(":", 1)[0]
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and host != pattern[2:]
    return host == pattern


def login_server(value: Any, target: str) -> str:
    """``value`` as a login server (``host[:port]``).

    :raises InvalidPropertyValue: for anything else.
    """
    text = required_str(value, target).strip()
    if not is_login_server(text):
        raise e.InvalidPropertyValue(
            f"'{target}' must be a registry host name with an optional port, got {text!r}.",
            target=target,
        )
    return text


class UpstreamPolicy:
    """The ``[policy]`` section applied to login servers of rules and credential sets."""

    def __init__(self, policy: PolicyConfig) -> None:
        self.policy = policy

    def check_allowed(self, login_server: str, target: str) -> None:
        """:raises UpstreamNotAllowed: when the policy refuses ``login_server``."""
        host = login_server.lower()
        allowed = self.policy.allowed_login_servers
        if allowed and not any(host_matches(host, pattern) for pattern in allowed):
            raise e.UpstreamNotAllowed(
                f"Unsupported upstream or login server '{login_server}'. Allowed upstreams: "
                f"{', '.join(allowed)}.",
                target=target,
            )
        bare = urlsplit(f"//{host}").hostname or host
        if (
            self.policy.forbid_private_addresses
            and is_private_host(bare)
            and not self.policy.allow_listed(bare)  # the upstream allow-lists override
        ):
            raise e.UpstreamNotAllowed(
                f"The upstream '{login_server}' is a private or loopback address, which the "
                "upstream policy forbids.",
                target=target,
            )

    def check_docker_hub_credentials(self, pattern: RulePattern, has_credentials: bool) -> None:
        """:raises DockerHubCredentialsRequired: for a Docker Hub rule without credentials when
        the policy requires them."""
        if (
            self.policy.require_docker_hub_credentials
            and not has_credentials
            and is_docker_hub(pattern.source_login_server)
        ):
            raise e.DockerHubCredentialsRequired(
                "Cannot create cache rule pointing to Docker Hub without credentials. Please add "
                "a credential set to the cache rule.",
                target="properties.credentialSetResourceId",
            )
