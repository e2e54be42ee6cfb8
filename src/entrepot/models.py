"""The seed's models and enums, and their ARM JSON form. No I/O.

Both faces of the management API use these classes: the server renders responses with
:meth:`Model.to_arm` and the client SDK (``entrepot.mgmt``) serialises requests and
deserialises responses with the same code, so the two cannot drift apart.

Contract for callers:

* Models are built with keyword arguments named as in the seed (``CacheRule(source_repository=...,
  target_repository=..., credential_set_resource_id=...)``); every attribute defaults to ``None``.
* :meth:`Model.to_arm` nests "flattened" properties under ``"properties"`` exactly as the ARM
  wire format does, and omits attributes that are ``None``. ``exclude_readonly=True`` drops the
  fields the server owns (``id``, ``provisioningState`` ...), as a request body must.
* :meth:`Model.from_arm` reads the wire form. Unknown keys are ignored. With ``strict=True`` a
  wrong JSON type raises :class:`~entrepot.errors.InvalidPropertyValue` whose ``target`` is the
  JSON path; otherwise the raw value is kept. :attr:`Model.fields_set` tells which attributes
  were present in the JSON (an explicit ``null`` counts as present), which merge-patch needs.
* Enum values are exact-case strings (``"Succeeded"``); parsing is case-insensitive.
"""

from __future__ import annotations

import datetime as _dt
from enum import Enum
from typing import Any, ClassVar, TypeVar

from entrepot.errors import InvalidPropertyValue

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


class _CaseInsensitiveEnum(str, Enum):  # noqa: UP042 - the seed's enums are (str, Enum)
    """A string enum whose lookup ignores case; ``str()`` and ``format()`` give the value."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, str):
            for member in cls:
                if member.value.lower() == value.lower():
                    return member
        return None

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, format_spec: str) -> str:
        return format(str(self.value), format_spec)


class ProvisioningState(_CaseInsensitiveEnum):
    """Provisioning state of a resource."""

    CREATING = "Creating"
    UPDATING = "Updating"
    DELETING = "Deleting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"


class CredentialName(_CaseInsensitiveEnum):
    """Credential name identifiers."""

    CREDENTIAL1 = "Credential1"


class CredentialHealthStatus(_CaseInsensitiveEnum):
    """Credential health status options."""

    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"


class ResourceIdentityType(_CaseInsensitiveEnum):
    """The type of identity of a credential set."""

    SYSTEM_ASSIGNED = "SystemAssigned"
    USER_ASSIGNED = "UserAssigned"
    SYSTEM_ASSIGNED_USER_ASSIGNED = "SystemAssigned, UserAssigned"
    NONE = "None"


class CreatedByType(_CaseInsensitiveEnum):
    """The type of identity that created or last modified a resource."""

    USER = "User"
    APPLICATION = "Application"
    MANAGED_IDENTITY = "ManagedIdentity"
    KEY = "Key"


class SkuName(_CaseInsensitiveEnum):
    """Registry SKU names; entrepot records and echoes the SKU, it does not meter by it."""

    CLASSIC = "Classic"
    BASIC = "Basic"
    STANDARD = "Standard"
    PREMIUM = "Premium"


def format_datetime(value: _dt.datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix and microseconds, as ARM clients parse it."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    return value.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_datetime(value: str) -> _dt.datetime:
    """Parse RFC 3339 (``Z`` or an offset; more than 6 fractional digits are truncated).

    :raises ValueError: when ``value`` is not an RFC 3339 date-time.
    """
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest}"
    parsed = _dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.UTC)
    return parsed


class _Field:
    """How one attribute maps to the wire: its JSON path, its kind and whether it is read-only."""

    __slots__ = ("attr", "kind", "path", "readonly")

    def __init__(self, attr: str, path: str, kind: Any = str, *, readonly: bool = False) -> None:
        self.attr = attr
        self.path = tuple(path.split("."))
        self.kind = kind
        self.readonly = readonly


M = TypeVar("M", bound="Model")
_MISSING = object()


class Model:
    """Base of all models: keyword construction, ARM (de)serialisation, equality by value."""

    _fields: ClassVar[tuple[_Field, ...]] = ()

    def __init__(self, **kwargs: Any) -> None:
        known = {f.attr for f in self._fields}
        unknown = set(kwargs) - known
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected arguments: {sorted(unknown)}")
        for field in self._fields:
            setattr(self, field.attr, kwargs.get(field.attr))
        self.fields_set: frozenset[str] = frozenset(kwargs)

    # -- wire ---------------------------------------------------------------------------------
    def to_arm(self, *, exclude_readonly: bool = False) -> dict[str, Any]:
        """The ARM JSON object; ``None`` attributes are left out."""
        out: dict[str, Any] = {}
        for field in self._fields:
            if exclude_readonly and field.readonly:
                continue
            value = getattr(self, field.attr)
            if value is None:
                continue
            node = out
            for key in field.path[:-1]:
                node = node.setdefault(key, {})
            node[field.path[-1]] = _dump(value, exclude_readonly)
        return out

    @classmethod
    def from_arm(cls: type[M], data: Any, *, strict: bool = False, where: str = "") -> M:
        """Build a model from its ARM JSON object.

        :raises InvalidPropertyValue: with ``strict=True``, when ``data`` or a field has the
            wrong JSON type; ``target`` is the JSON path of the offending value.
        """
        if not isinstance(data, dict):
            if strict:
                raise InvalidPropertyValue(
                    f"'{where or 'body'}' must be a JSON object.", target=where or None
                )
            data = {}
        kwargs: dict[str, Any] = {}
        for field in cls._fields:
            node: Any = data
            path_where = where
            for key in field.path:
                path_where = f"{path_where}.{key}" if path_where else key
                if not isinstance(node, dict):
                    if strict and node is not None:
                        raise InvalidPropertyValue(
                            f"'{path_where.rsplit('.', 1)[0]}' must be a JSON object.",
                            target=path_where.rsplit(".", 1)[0],
                        )
                    node = _MISSING
                    break
                node = node.get(key, _MISSING)
                if node is _MISSING:
                    break
            if node is _MISSING:
                continue
            kwargs[field.attr] = (
                None if node is None else _load(field.kind, node, strict, path_where)
            )
        return cls(**kwargs)

    # -- python niceties ----------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        """Attribute names to plain values (enums as strings, dates as RFC 3339), for output."""
        return {f.attr: _plain(getattr(self, f.attr)) for f in self._fields}

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f.attr) == getattr(other, f.attr) for f in self._fields)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{f.attr}={getattr(self, f.attr)!r}"
            for f in self._fields
            if getattr(self, f.attr) is not None
        )
        return f"{type(self).__name__}({parts})"


def _dump(value: Any, exclude_readonly: bool) -> Any:
    if isinstance(value, Model):
        return value.to_arm(exclude_readonly=exclude_readonly)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, _dt.datetime):
        return format_datetime(value)
    if isinstance(value, list):
        return [_dump(v, exclude_readonly) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v, exclude_readonly) for k, v in value.items()}
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Model):
        return value.as_dict()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, _dt.datetime):
        return format_datetime(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _type_error(where: str, expected: str) -> InvalidPropertyValue:
    return InvalidPropertyValue(f"'{where}' must be {expected}.", target=where)


def _load(kind: Any, value: Any, strict: bool, where: str) -> Any:
    if isinstance(kind, list):  # [ItemKind]
        if not isinstance(value, list):
            if strict:
                raise _type_error(where, "a JSON array")
            return value
        return [_load(kind[0], v, strict, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(kind, dict):  # {str: ValueKind}
        if not isinstance(value, dict):
            if strict:
                raise _type_error(where, "a JSON object")
            return value
        (vkind,) = kind.values()
        return {k: _load(vkind, v, strict, f"{where}.{k}") for k, v in value.items()}
    if isinstance(kind, type) and issubclass(kind, Model):
        return kind.from_arm(value, strict=strict, where=where)
    if isinstance(kind, type) and issubclass(kind, Enum):
        if not isinstance(value, str):
            if strict:
                raise _type_error(where, "a string")
            return value
        try:
            return kind(value)
        except ValueError:
            if strict:
                allowed = ", ".join(repr(m.value) for m in kind)
                raise InvalidPropertyValue(
                    f"'{where}' must be one of {allowed}; got {value!r}.", target=where
                ) from None
            return value  # extensible enums: keep unknown values as plain strings
    if kind is _dt.datetime:
        if isinstance(value, str):
            try:
                return parse_datetime(value)
            except ValueError:
                pass
        if strict:
            raise _type_error(where, "an RFC 3339 date-time string")
        return value
    if kind is str and strict and not isinstance(value, str):
        raise _type_error(where, "a string")
    return value


# -- the models ---------------------------------------------------------------------------------
_RESOURCE_FIELDS = (
    _Field("id", "id", readonly=True),
    _Field("name", "name", readonly=True),
    _Field("type", "type", readonly=True),
)


class SystemData(Model):
    """Who created and last modified a resource, and when."""

    created_by: str | None
    created_by_type: CreatedByType | str | None
    created_at: _dt.datetime | None
    last_modified_by: str | None
    last_modified_by_type: CreatedByType | str | None
    last_modified_at: _dt.datetime | None

    _fields = (
        _Field("created_by", "createdBy"),
        _Field("created_by_type", "createdByType", CreatedByType),
        _Field("created_at", "createdAt", _dt.datetime),
        _Field("last_modified_by", "lastModifiedBy"),
        _Field("last_modified_by_type", "lastModifiedByType", CreatedByType),
        _Field("last_modified_at", "lastModifiedAt", _dt.datetime),
    )


_SYSTEM_DATA = _Field("system_data", "systemData", SystemData, readonly=True)


class CacheRule(Model):
    """An object that represents a cache rule for a container registry."""

    id: str | None
    name: str | None
    type: str | None
    system_data: SystemData | None
    provisioning_state: ProvisioningState | str | None
    source_repository: str | None
    target_repository: str | None
    credential_set_resource_id: str | None
    creation_date: _dt.datetime | None

    _fields = (
        *_RESOURCE_FIELDS,
        _SYSTEM_DATA,
        _Field("credential_set_resource_id", "properties.credentialSetResourceId"),
        _Field("source_repository", "properties.sourceRepository"),
        _Field("target_repository", "properties.targetRepository"),
        _Field("creation_date", "properties.creationDate", _dt.datetime, readonly=True),
        _Field(
            "provisioning_state",
            "properties.provisioningState",
            ProvisioningState,
            readonly=True,
        ),
    )


class CacheRuleUpdateParameters(Model):
    """Parameters for updating a cache rule."""

    credential_set_resource_id: str | None

    _fields = (_Field("credential_set_resource_id", "properties.credentialSetResourceId"),)


class UserIdentityProperties(Model):
    """A user-assigned identity's principal and client ids."""

    principal_id: str | None
    client_id: str | None

    _fields = (
        _Field("principal_id", "principalId", readonly=True),
        _Field("client_id", "clientId", readonly=True),
    )


class IdentityProperties(Model):
    """Managed identity of a credential set; entrepot mints ``principal_id``/``tenant_id``."""

    principal_id: str | None
    tenant_id: str | None
    type: ResourceIdentityType | str | None
    user_assigned_identities: dict[str, UserIdentityProperties] | None

    _fields = (
        _Field("principal_id", "principalId", readonly=True),
        _Field("tenant_id", "tenantId", readonly=True),
        _Field("type", "type", ResourceIdentityType),
        _Field(
            "user_assigned_identities",
            "userAssignedIdentities",
            {str: UserIdentityProperties},
        ),
    )


class CredentialHealth(Model):
    """Health status of a credential, measured by logging in to the upstream."""

    status: CredentialHealthStatus | str | None
    error_code: str | None
    error_message: str | None

    _fields = (
        _Field("status", "status", CredentialHealthStatus, readonly=True),
        _Field("error_code", "errorCode", readonly=True),
        _Field("error_message", "errorMessage", readonly=True),
    )


class AuthCredential(Model):
    """Authentication credential for external registry access."""

    name: CredentialName | str | None
    username_secret_identifier: str | None
    password_secret_identifier: str | None
    credential_health: CredentialHealth | None

    _fields = (
        _Field("name", "name", CredentialName),
        _Field("username_secret_identifier", "usernameSecretIdentifier"),
        _Field("password_secret_identifier", "passwordSecretIdentifier"),
        _Field("credential_health", "credentialHealth", CredentialHealth, readonly=True),
    )


class CredentialSet(Model):
    """An object that represents a credential set for a container registry."""

    id: str | None
    name: str | None
    type: str | None
    system_data: SystemData | None
    identity: IdentityProperties | None
    provisioning_state: ProvisioningState | str | None
    login_server: str | None
    auth_credentials: list[AuthCredential] | None
    creation_date: _dt.datetime | None

    _fields = (
        *_RESOURCE_FIELDS,
        _SYSTEM_DATA,
        _Field("identity", "identity", IdentityProperties),
        _Field("login_server", "properties.loginServer"),
        _Field("auth_credentials", "properties.authCredentials", [AuthCredential]),
        _Field("creation_date", "properties.creationDate", _dt.datetime, readonly=True),
        _Field(
            "provisioning_state",
            "properties.provisioningState",
            ProvisioningState,
            readonly=True,
        ),
    )


class CredentialSetUpdateParameters(Model):
    """Parameters for updating a credential set."""

    identity: IdentityProperties | None
    auth_credentials: list[AuthCredential] | None

    _fields = (
        _Field("identity", "identity", IdentityProperties),
        _Field("auth_credentials", "properties.authCredentials", [AuthCredential]),
    )


class Sku(Model):
    """The SKU of a registry, recorded and echoed."""

    name: SkuName | str | None
    tier: str | None

    _fields = (_Field("name", "name", SkuName), _Field("tier", "tier", readonly=True))


class Registry(Model):
    """A registry: the parent of cache rules and credential sets."""

    id: str | None
    name: str | None
    type: str | None
    system_data: SystemData | None
    location: str | None
    tags: dict[str, str] | None
    sku: Sku | None
    login_server: str | None
    creation_date: _dt.datetime | None
    provisioning_state: ProvisioningState | str | None

    _fields = (
        *_RESOURCE_FIELDS,
        _SYSTEM_DATA,
        _Field("location", "location"),
        _Field("tags", "tags", {str: str}),
        _Field("sku", "sku", Sku),
        _Field("login_server", "properties.loginServer", readonly=True),
        _Field("creation_date", "properties.creationDate", _dt.datetime, readonly=True),
        _Field(
            "provisioning_state",
            "properties.provisioningState",
            ProvisioningState,
            readonly=True,
        ),
    )


# -- ARM resource ids and types: built here and nowhere else ------------------------------------
PROVIDER = "Microsoft.ContainerRegistry"
REGISTRY_TYPE = f"{PROVIDER}/registries"
CACHE_RULE_TYPE = f"{PROVIDER}/registries/cacheRules"
CREDENTIAL_SET_TYPE = f"{PROVIDER}/registries/credentialSets"
CACHE_RULES = "cacheRules"
CREDENTIAL_SETS = "credentialSets"


def registry_resource_id(subscription: str, resource_group: str, name: str) -> str:
    """``/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/...``."""
    return (
        f"/subscriptions/{subscription}/resourceGroups/{resource_group}"
        f"/providers/{PROVIDER}/registries/{name}"
    )


def child_resource_id(registry_id: str, collection: str, name: str) -> str:
    """The id of cache rule or credential set ``name`` (``collection``) of ``registry_id``."""
    return f"{registry_id}/{collection}/{name}"
