"""Registries, cache rules, credential sets and their long-running operations.

This is the management face without HTTP: the ARM routes (``web/arm.py``) parse the path and
the JSON, call one method here and render what comes back. Everything here raises domain
errors from :mod:`entrepot.errors`; nothing chooses a status code.

What callers may rely on:

* Validation happens before anything is written: a method that raises changed nothing.
* A mutating call (``put_*``, ``patch_*``, ``delete_*``) commits the accepted change together
  with an operation record in one transaction, then runs the operation. The returned
  :class:`Accepted` carries the resource as it stands when the call returns and the operation
  id. Operations are stored: one that was in progress when a process died is finished by the
  next process that starts (or by any replica, once its lease has expired).
* When an operation reports ``Succeeded``, a read of the resource already shows the final
  state (``Succeeded``, or gone after a delete).
* Names are case-insensitive for lookup and keep the caller's spelling for display.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import re
import socket
import uuid
from base64 import urlsafe_b64decode, urlsafe_b64encode
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from entrepot import errors as e
from entrepot.config import (
    NAME_RE,
    RESOURCE_GROUP_RE,
    SUBSCRIPTION_RE,
    ArmConfig,
    PolicyConfig,
    is_private_host,
)
from entrepot.credential_health import CredentialProbe
from entrepot.metadata import schema as t
from entrepot.metadata.store import MetadataStore, as_utc, utcnow
from entrepot.models import (
    AuthCredential,
    CacheRule,
    CacheRuleUpdateParameters,
    CreatedByType,
    CredentialName,
    CredentialSet,
    CredentialSetUpdateParameters,
    IdentityProperties,
    ProvisioningState,
    Registry,
    ResourceIdentityType,
    Sku,
    SkuName,
    SystemData,
)
from entrepot.rules import RulePattern, is_docker_hub, overlaps, parse_rule, target_ancestors
from entrepot.secrets import Resolvers

log = logging.getLogger("entrepot.management")

PROVIDER = "Microsoft.ContainerRegistry"
REGISTRY_TYPE = f"{PROVIDER}/registries"
CACHE_RULE_TYPE = f"{PROVIDER}/registries/cacheRules"
CREDENTIAL_SET_TYPE = f"{PROVIDER}/registries/credentialSets"
LOGIN_SERVER_RE = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
    r"[A-Za-z0-9])?)*(?::[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?$"
)
SECRET_ID_MAX = 2048
TERMINAL = {"Succeeded", "Failed", "Canceled"}

T = TypeVar("T")


class Kind(StrEnum):
    """The resource types of the management API, by their ARM path segment."""

    REGISTRY = "registries"
    CACHE_RULE = "cacheRules"
    CREDENTIAL_SET = "credentialSets"


@dataclass(frozen=True)
class RegistryRef:
    """Which registry a request is about, as written in its path."""

    subscription: str
    resource_group: str
    name: str

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/{PROVIDER}/registries/{self.name}"
        )


@dataclass(frozen=True)
class Accepted(Generic[T]):
    """The outcome of a mutating call."""

    resource: T | None
    created: bool
    operation_id: str | None
    resource_id: str


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_token: str | None


@dataclass(frozen=True)
class OperationStatus:
    """An operation record as the status endpoints show it."""

    id: str
    resource_id: str
    action: str
    status: str
    start_time: dt.datetime
    end_time: dt.datetime | None
    error_code: str | None
    error_message: str | None


@dataclass(frozen=True)
class Actor:
    """Who makes a change, for ``systemData``."""

    name: str
    type: CreatedByType = CreatedByType.KEY


def encode_token(key: str) -> str:
    """An opaque, URL-safe, never empty page token for the keyset position ``key``."""
    return "k" + urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_token(token: str | None) -> str:
    """The keyset position of a page token; ``""`` for the first page.

    :raises InvalidPropertyValue: for a token this server did not make.
    """
    if not token:
        return ""
    try:
        if not token.startswith("k"):
            raise ValueError
        raw = token[1:]
        return urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise e.InvalidPropertyValue(
            "The $skipToken is not valid; use the nextLink of the previous page.",
            target="$skipToken",
        ) from None


def validate_name(value: str, what: str) -> None:
    """Names of registries, rules and credential sets: 5-50 of ``[a-zA-Z0-9-]``."""
    if not NAME_RE.match(value):
        raise e.InvalidResourceName(
            f"The {what} name {value!r} is invalid: it must be 5 to 50 characters of letters, "
            "digits and hyphens.",
            target=f"{what}Name",  # the path parameter: registryName, cacheRuleName ...
        )


def validate_registry_ref(ref: RegistryRef) -> None:
    if not SUBSCRIPTION_RE.match(ref.subscription):
        raise e.InvalidResourceName(
            f"The subscription id {ref.subscription!r} is invalid.", target="subscriptionId"
        )
    if not RESOURCE_GROUP_RE.match(ref.resource_group) or ref.resource_group.endswith("."):
        raise e.InvalidResourceName(
            f"The resource group name {ref.resource_group!r} is invalid: 1 to 90 letters, digits, "
            "'-', '_', '.', '(' or ')', not ending in '.'.",
            target="resourceGroupName",
        )
    validate_name(ref.name, "registry")


class Management:
    """The management service. Build one per process with :meth:`start`, stop with :meth:`stop`."""

    def __init__(
        self,
        store: MetadataStore,
        arm: ArmConfig,
        policy: PolicyConfig,
        login_server: Callable[[str], str],
        *,
        lease_seconds: float = 10.0,
        resolvers: Resolvers | None = None,
        probe: CredentialProbe | None = None,
        health_interval: float = 600.0,
    ) -> None:
        self.store = store
        self.arm = arm
        self.policy = policy
        self.login_server = login_server
        self.lease_seconds = lease_seconds
        self.resolvers = resolvers
        self.probe = probe
        self.health_interval = health_interval
        self._health_timer: asyncio.Task[None] | None = None
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.tenant_id = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._fresh: dict[str, dict[str, Any]] = {}  # operations accepted here, lease held

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load installation settings and resume operations left in progress."""
        async with self.store.write() as conn:
            tenant = await self.store.get_setting(conn, "tenant_id")
            if tenant is None:
                tenant = str(uuid.uuid4())
                await self.store.put_setting(conn, "tenant_id", tenant)
        self.tenant_id = tenant
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="operation-sweeper")
        if self.probe is not None:
            self._health_timer = asyncio.create_task(self._health_forever(), name="health-timer")

    async def stop(self) -> None:
        for timer in (self._sweeper, self._health_timer):
            if timer is not None:
                timer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await timer
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _sweep_forever(self) -> None:
        while True:
            try:
                async with self.store.read() as conn:
                    ids = await self.store.claimable_operations(conn)
                for op_id in ids:
                    self.run_soon(op_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # a sweep failure must not stop later sweeps
                log.exception("operation sweep failed")
            await asyncio.sleep(max(0.2, self.lease_seconds / 3))

    # -- registries -----------------------------------------------------------------------------
    async def ensure_registry(self, ref: RegistryRef, location: str, actor: Actor) -> None:
        """Create ``ref`` if it does not exist (registries named in the configuration)."""
        validate_registry_ref(ref)
        async with self.store.write() as conn:
            if await self.store.get_registry(conn, ref.subscription, ref.resource_group, ref.name):
                return
            await self.store.insert(
                conn,
                t.registries,
                self._registry_values(ref, location, SkuName.BASIC.value, {}, actor, "Succeeded"),
            )

    async def get_registry(self, ref: RegistryRef) -> Registry:
        validate_registry_ref(ref)
        async with self.store.read() as conn:
            row = await self._registry_row(conn, ref, parent=False)
        return self._registry_model(row)

    async def list_registries(
        self, subscription: str, resource_group: str, token: str | None
    ) -> Page[Registry]:
        validate_registry_ref(RegistryRef(subscription, resource_group, "xxxxx"))
        after = decode_token(token)
        async with self.store.read() as conn:
            rows = await self.store.list_registries(
                conn, subscription, resource_group, after, self.arm.page_size + 1
            )
        return self._page([self._registry_model(r) for r in rows], rows)

    async def put_registry(self, ref: RegistryRef, body: Any, actor: Actor) -> Accepted[Registry]:
        validate_registry_ref(ref)
        model = Registry.from_arm(_require_object(body), strict=True)
        location = model.location if model.location is not None else self.arm.default_location
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
        async with self.store.write() as conn:
            row = await self.store.get_registry(
                conn, ref.subscription, ref.resource_group, ref.name
            )
            if row is None:
                values = self._registry_values(ref, location, sku, tags, actor, "Creating")
                row_id = await self.store.insert(conn, t.registries, values)
                created = True
                resource_id = ref.resource_id
            else:
                self._check_idle(row)
                if row["location"].lower() != location.lower():
                    raise e.PropertyChangeNotAllowed(
                        f"The location of registry '{row['name']}' is {row['location']!r} and "
                        "cannot be changed.",
                        target="location",
                    )
                row_id = int(row["id"])
                await self.store.update(
                    conn,
                    t.registries,
                    row_id,
                    {
                        "sku": sku,
                        "tags": json.dumps(tags),
                        "provisioning_state": "Updating",
                        **_modified(actor),
                    },
                )
                created = False
                resource_id = _registry_id_of(row)
            op_id = await self._new_operation(
                conn, Kind.REGISTRY, resource_id, None, row_id, "create" if created else "update"
            )
        return await self._accepted(Kind.REGISTRY, row_id, resource_id, op_id, created)

    async def delete_registry(self, ref: RegistryRef, actor: Actor) -> Accepted[Registry]:
        validate_registry_ref(ref)
        async with self.store.write() as conn:
            row = await self.store.get_registry(
                conn, ref.subscription, ref.resource_group, ref.name
            )
            if row is None:
                return Accepted(None, False, None, ref.resource_id)
            self._check_idle(row)
            await self.store.update(
                conn,
                t.registries,
                int(row["id"]),
                {"provisioning_state": "Deleting", **_modified(actor)},
            )
            resource_id = _registry_id_of(row)
            op_id = await self._new_operation(
                conn, Kind.REGISTRY, resource_id, int(row["id"]), int(row["id"]), "delete"
            )
        return await self._accepted(Kind.REGISTRY, int(row["id"]), resource_id, op_id, False)

    # -- cache rules ----------------------------------------------------------------------------
    async def get_cache_rule(self, ref: RegistryRef, name: str) -> CacheRule:
        validate_registry_ref(ref)
        validate_name(name, "cacheRule")
        async with self.store.read() as conn:
            registry = await self._registry_row(conn, ref)
            row = await self._child(conn, t.cache_rules, registry, name, "cache rule")
            sets = await self.store.credential_set_names(conn, _set_ids([row]))
        return self._rule_model(registry, row, sets)

    async def list_cache_rules(self, ref: RegistryRef, token: str | None) -> Page[CacheRule]:
        validate_registry_ref(ref)
        after = decode_token(token)
        async with self.store.read() as conn:
            registry = await self._registry_row(conn, ref)
            rows = await self.store.list_children(
                conn, t.cache_rules, int(registry["id"]), after, self.arm.page_size + 1
            )
            sets = await self.store.credential_set_names(conn, _set_ids(rows))
        return self._page([self._rule_model(registry, r, sets) for r in rows], rows)

    async def put_cache_rule(
        self, ref: RegistryRef, name: str, body: Any, actor: Actor
    ) -> Accepted[CacheRule]:
        validate_registry_ref(ref)
        validate_name(name, "cacheRule")
        model = CacheRule.from_arm(_require_object(body), strict=True)
        source = _required_str(model.source_repository, "properties.sourceRepository")
        target = _required_str(model.target_repository, "properties.targetRepository")
        pattern = parse_rule(source, target)
        self._check_upstream_allowed(pattern.source_login_server, "properties.sourceRepository")
        set_ref = model.credential_set_resource_id
        if set_ref is not None and not isinstance(set_ref, str):  # pragma: no cover - strict parse
            raise e.InvalidPropertyValue(
                "must be a string", target="properties.credentialSetResourceId"
            )
        async with self.store.write() as conn:
            registry = await self._registry_row(conn, ref)
            registry_id = int(registry["id"])
            row = await self.store.get_child(conn, t.cache_rules, registry_id, name)
            set_id = await self._resolve_set_reference(conn, registry, set_ref)
            self._check_docker_hub_credentials(pattern, set_id)
            values: dict[str, Any] = {"credential_set_id": set_id, **_modified(actor)}
            if row is None:
                await self._check_rule_capacity(conn, registry_id, name, pattern)
                values.update(
                    registry_id=registry_id,
                    name=name,
                    name_key=name.lower(),
                    source_repository=pattern.source_repository,
                    target_repository=pattern.target_repository,
                    target_path=pattern.target_path,
                    wildcard=pattern.wildcard,
                    provisioning_state="Creating",
                    created_at=values["modified_at"],
                    created_by=actor.name,
                )
                row_id = await self.store.insert(conn, t.cache_rules, values)
                created, display = True, name
            else:
                self._check_idle(row)
                for label, old, new in (
                    ("sourceRepository", row["source_repository"], pattern.source_repository),
                    ("targetRepository", row["target_repository"], pattern.target_repository),
                ):
                    if old != new:
                        raise e.PropertyChangeNotAllowed(
                            f"The {label} of cache rule '{row['name']}' is {old!r}; it cannot be "
                            f"changed to {new!r}. Delete the rule and create a new one.",
                            target=f"properties.{label}",
                        )
                row_id = int(row["id"])
                values["provisioning_state"] = "Updating"
                await self.store.update(conn, t.cache_rules, row_id, values)
                created, display = False, row["name"]
            resource_id = self._child_id(registry, Kind.CACHE_RULE, display)
            op_id = await self._new_operation(
                conn,
                Kind.CACHE_RULE,
                resource_id,
                registry_id,
                row_id,
                "create" if created else "update",
            )
        return await self._accepted(Kind.CACHE_RULE, row_id, resource_id, op_id, created)

    async def patch_cache_rule(
        self, ref: RegistryRef, name: str, body: Any, actor: Actor
    ) -> Accepted[CacheRule]:
        validate_registry_ref(ref)
        validate_name(name, "cacheRule")
        data = _require_object(body)
        update = CacheRuleUpdateParameters.from_arm(data, strict=True)
        props = data.get("properties") or {}
        async with self.store.write() as conn:
            registry = await self._registry_row(conn, ref)
            row = await self._child(conn, t.cache_rules, registry, name, "cache rule")
            self._check_idle(row)
            for key, column in (
                ("sourceRepository", "source_repository"),
                ("targetRepository", "target_repository"),
            ):
                if key in props and props[key] != row[column]:
                    raise e.PropertyChangeNotAllowed(
                        f"The {key} of a cache rule cannot be changed; only "
                        "credentialSetResourceId can be updated.",
                        target=f"properties.{key}",
                    )
            values: dict[str, Any] = {"provisioning_state": "Updating", **_modified(actor)}
            if "credential_set_resource_id" in update.fields_set:
                set_id = await self._resolve_set_reference(
                    conn, registry, update.credential_set_resource_id
                )
                pattern = parse_rule(row["source_repository"], row["target_repository"])
                self._check_docker_hub_credentials(pattern, set_id)
                values["credential_set_id"] = set_id
            row_id = int(row["id"])
            await self.store.update(conn, t.cache_rules, row_id, values)
            resource_id = self._child_id(registry, Kind.CACHE_RULE, row["name"])
            op_id = await self._new_operation(
                conn, Kind.CACHE_RULE, resource_id, int(registry["id"]), row_id, "update"
            )
        return await self._accepted(Kind.CACHE_RULE, row_id, resource_id, op_id, False)

    async def delete_cache_rule(
        self, ref: RegistryRef, name: str, actor: Actor
    ) -> Accepted[CacheRule]:
        return await self._delete_child(ref, name, Kind.CACHE_RULE, actor)

    # -- credential sets ------------------------------------------------------------------------
    async def get_credential_set(self, ref: RegistryRef, name: str) -> CredentialSet:
        validate_registry_ref(ref)
        validate_name(name, "credentialSet")
        async with self.store.read() as conn:
            registry = await self._registry_row(conn, ref)
            row = await self._child(conn, t.credential_sets, registry, name, "credential set")
        return self._set_model(registry, row)

    async def list_credential_sets(
        self, ref: RegistryRef, token: str | None
    ) -> Page[CredentialSet]:
        validate_registry_ref(ref)
        after = decode_token(token)
        async with self.store.read() as conn:
            registry = await self._registry_row(conn, ref)
            rows = await self.store.list_children(
                conn, t.credential_sets, int(registry["id"]), after, self.arm.page_size + 1
            )
        return self._page([self._set_model(registry, r) for r in rows], rows)

    async def put_credential_set(
        self, ref: RegistryRef, name: str, body: Any, actor: Actor
    ) -> Accepted[CredentialSet]:
        validate_registry_ref(ref)
        validate_name(name, "credentialSet")
        model = CredentialSet.from_arm(_require_object(body), strict=True)
        identity_type = _identity_type(model.identity)
        login_server = _required_str(model.login_server, "properties.loginServer").strip()
        if not LOGIN_SERVER_RE.match(login_server) or len(login_server) > 255:
            raise e.InvalidPropertyValue(
                f"'properties.loginServer' must be a registry host name with an optional port, "
                f"got {login_server!r}.",
                target="properties.loginServer",
            )
        self._check_upstream_allowed(login_server.lower(), "properties.loginServer")
        if model.auth_credentials is None:
            raise e.MissingProperty(
                "'properties.authCredentials' is required.", target="properties.authCredentials"
            )
        credentials = _merge_credentials(
            [], model.auth_credentials, require_complete=True, check=self._check_identifier
        )
        async with self.store.write() as conn:
            registry = await self._registry_row(conn, ref)
            registry_id = int(registry["id"])
            row = await self.store.get_child(conn, t.credential_sets, registry_id, name)
            values: dict[str, Any] = {
                "identity_type": identity_type,
                "auth_credentials": json.dumps(credentials),
                **_modified(actor),
            }
            if row is None:
                count = await self.store.count_children(conn, t.credential_sets, registry_id)
                if count >= self.arm.max_credential_sets_per_registry:
                    raise e.CredentialSetQuotaExceeded(
                        f"Registry '{registry['name']}' already has {count} credential sets, the "
                        f"maximum ({self.arm.max_credential_sets_per_registry}).",
                    )
                values.update(
                    registry_id=registry_id,
                    name=name,
                    name_key=name.lower(),
                    login_server=login_server,
                    principal_id=str(uuid.uuid4()),
                    provisioning_state="Creating",
                    created_at=values["modified_at"],
                    created_by=actor.name,
                )
                row_id = await self.store.insert(conn, t.credential_sets, values)
                created, display = True, name
            else:
                self._check_idle(row)
                if row["login_server"].lower() != login_server.lower():
                    raise e.PropertyChangeNotAllowed(
                        f"The loginServer of credential set '{row['name']}' is "
                        f"{row['login_server']!r} and cannot be changed.",
                        target="properties.loginServer",
                    )
                row_id = int(row["id"])
                values["provisioning_state"] = "Updating"
                await self.store.update(conn, t.credential_sets, row_id, values)
                created, display = False, row["name"]
            resource_id = self._child_id(registry, Kind.CREDENTIAL_SET, display)
            op_id = await self._new_operation(
                conn,
                Kind.CREDENTIAL_SET,
                resource_id,
                registry_id,
                row_id,
                "create" if created else "update",
            )
        return await self._accepted(Kind.CREDENTIAL_SET, row_id, resource_id, op_id, created)

    async def patch_credential_set(
        self, ref: RegistryRef, name: str, body: Any, actor: Actor
    ) -> Accepted[CredentialSet]:
        validate_registry_ref(ref)
        validate_name(name, "credentialSet")
        data = _require_object(body)
        update = CredentialSetUpdateParameters.from_arm(data, strict=True)
        props = data.get("properties") or {}
        async with self.store.write() as conn:
            registry = await self._registry_row(conn, ref)
            row = await self._child(conn, t.credential_sets, registry, name, "credential set")
            self._check_idle(row)
            if (
                "loginServer" in props
                and str(props["loginServer"]).lower() != row["login_server"].lower()
            ):
                raise e.PropertyChangeNotAllowed(
                    "The loginServer of a credential set cannot be changed.",
                    target="properties.loginServer",
                )
            values: dict[str, Any] = {"provisioning_state": "Updating", **_modified(actor)}
            if update.identity is not None:
                values["identity_type"] = _identity_type(update.identity)
            if update.auth_credentials is not None:
                current = json.loads(row["auth_credentials"])
                values["auth_credentials"] = json.dumps(
                    _merge_credentials(
                        current,
                        update.auth_credentials,
                        require_complete=False,
                        check=self._check_identifier,
                    )
                )
            row_id = int(row["id"])
            await self.store.update(conn, t.credential_sets, row_id, values)
            resource_id = self._child_id(registry, Kind.CREDENTIAL_SET, row["name"])
            op_id = await self._new_operation(
                conn, Kind.CREDENTIAL_SET, resource_id, int(registry["id"]), row_id, "update"
            )
        return await self._accepted(Kind.CREDENTIAL_SET, row_id, resource_id, op_id, False)

    async def delete_credential_set(
        self, ref: RegistryRef, name: str, actor: Actor
    ) -> Accepted[CredentialSet]:
        return await self._delete_child(ref, name, Kind.CREDENTIAL_SET, actor)

    # -- operations -----------------------------------------------------------------------------
    async def get_operation(self, resource_id: str, op_id: str) -> OperationStatus:
        """The operation ``op_id`` of the resource ``resource_id`` (compared case-insensitively).

        :raises ResourceNotFound: if there is no such operation on that resource.
        """
        async with self.store.read() as conn:
            row = await self.store.get_operation(conn, op_id)
        if row is None or row["resource_id"].lower() != resource_id.lower():
            raise e.ResourceNotFound(f"Operation '{op_id}' was not found.", target="operationId")
        start = as_utc(row["started_at"])
        assert start is not None
        return OperationStatus(
            id=str(row["id"]),
            resource_id=str(row["resource_id"]),
            action=str(row["action"]),
            status=str(row["status"]),
            start_time=start,
            end_time=as_utc(row["ended_at"]),
            error_code=row["error_code"],
            error_message=row["error_message"],
        )

    def run_soon(self, op_id: str) -> asyncio.Task[None]:
        """Run operation ``op_id`` in the background (a no-op if another worker holds it)."""
        for task in self._tasks:
            if task.get_name() == f"op:{op_id}":
                return task
        task = asyncio.create_task(self._run(op_id), name=f"op:{op_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self, op_id: str) -> None:
        """Run an operation to its end, if this process holds (or can take) its lease.

        An operation accepted by this process arrives with its lease already held (taken in the
        accepting transaction), so a fast operation costs one more write transaction: the
        claim check, the change and the operation's end are committed together.
        """
        lease = dt.timedelta(seconds=self.lease_seconds)
        op: Any = self._fresh.pop(op_id, None)
        if op is None:
            async with self.store.write() as conn:
                if not await self.store.claim_operation(conn, op_id, self.owner, utcnow() + lease):
                    return
                op = await self.store.get_operation(conn, op_id)
            assert op is not None
        started = as_utc(op["started_at"])
        assert started is not None
        ready_at = started + dt.timedelta(seconds=self.arm.operation_min_seconds)
        while (wait := (ready_at - utcnow()).total_seconds()) > 0:
            await asyncio.sleep(min(wait, self.lease_seconds / 3))
            async with self.store.write() as conn:
                if not await self.store.claim_operation(conn, op_id, self.owner, utcnow() + lease):
                    return
        kind = Kind(op["resource_kind"])
        try:
            health = None
            if kind is Kind.CREDENTIAL_SET and op["action"] != "delete" and self.probe:
                # Measured outside any transaction: it reads secrets and talks to the upstream.
                health = await self._holding_lease(op_id, self._measure_row(int(op["row_id"])))
            async with self.store.write() as conn:
                if not await self.store.claim_operation(conn, op_id, self.owner, utcnow() + lease):
                    return
                status, error = await self._apply(conn, op, health)
                await self._finish(conn, op, status, error)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("operation %s failed unexpectedly", op_id)
            status, error = "Failed", e.InternalError("The operation failed unexpectedly.")
            async with self.store.write() as conn:
                if not await self.store.claim_operation(conn, op_id, self.owner, utcnow() + lease):
                    return
                await self._finish(conn, op, status, error)
        log.info("operation %s %s %s: %s", op_id, op["action"], op["resource_id"], status)

    async def _finish(
        self,
        conn: AsyncConnection,
        op: Mapping[str, Any],
        status: str,
        error: e.EntrepotError | None,
    ) -> None:
        """Record the end of ``op``; a failed create or update leaves its resource Failed."""
        if status != "Succeeded" and op["action"] != "delete":
            table = _TABLES[Kind(op["resource_kind"])]
            await self.store.update(
                conn, table, int(op["row_id"]), {"provisioning_state": "Failed"}
            )
        await self.store.finish_operation(
            conn,
            str(op["id"]),
            status,
            error.code if error else None,
            error.message if error else None,
        )

    async def _holding_lease(self, op_id: str, work: Awaitable[T]) -> T:
        """Await ``work`` while renewing this process's lease on ``op_id`` (work such as a
        health measurement may outlast one lease). Losing the lease does not stop the work: every
        step is idempotent, and only the lease holder records the outcome."""
        task = asyncio.ensure_future(work)
        lease = dt.timedelta(seconds=self.lease_seconds)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.lease_seconds / 3)
                if done:
                    return task.result()
                async with self.store.write() as conn:
                    await self.store.claim_operation(conn, op_id, self.owner, utcnow() + lease)
        finally:
            if not task.done():
                task.cancel()

    async def _apply(
        self,
        conn: AsyncConnection,
        op: Mapping[str, Any],
        health: dict[str, dict[str, str]] | None,
    ) -> tuple[str, e.EntrepotError | None]:
        """The database part of an operation, inside the caller's transaction; idempotent."""
        kind = Kind(op["resource_kind"])
        table = _TABLES[kind]
        row_id = int(op["row_id"])
        row = await self.store.get_by_id(conn, table, row_id)
        if op["action"] == "delete":
            if row is None:
                return "Succeeded", None
            if kind is Kind.CREDENTIAL_SET:
                users = await self.store.rules_using_credential_set(conn, row_id)
                if users:
                    await self.store.update(
                        conn, table, row_id, {"provisioning_state": "Succeeded"}
                    )
                    return "Failed", _in_use(row["name"], users)
            await self.store.delete(conn, table, row_id)
            return "Succeeded", None
        if row is None:
            return "Canceled", e.ResourceNotFound("The resource was deleted meanwhile.")
        values: dict[str, Any] = {"provisioning_state": "Succeeded"}
        if health is not None:
            values["auth_credentials"] = _with_health(row["auth_credentials"], health)
        await self.store.update(conn, table, row_id, values)
        return "Succeeded", None

    async def _measure_row(self, row_id: int) -> dict[str, dict[str, str]] | None:
        async with self.store.read() as conn:
            row = await self.store.get_by_id(conn, t.credential_sets, row_id)
        return None if row is None else await self._measure(row)

    # -- credential health ----------------------------------------------------------------------
    async def _measure(self, row: RowMapping) -> dict[str, dict[str, str]] | None:
        """The health of each credential of credential set ``row``, by credential name."""
        if self.probe is None:
            return None
        credentials = json.loads(row["auth_credentials"])
        results = await asyncio.gather(
            *(
                self.probe.measure(row["login_server"], item, row["principal_id"])
                for item in credentials
            )
        )
        return {
            item["name"]: dict(result) | {"_identifiers": _identifiers(item)}
            for item, result in zip(credentials, results, strict=True)
        }

    async def _store_health(self, row_id: int, health: dict[str, dict[str, str]]) -> None:
        async with self.store.write() as conn:
            row = await self.store.get_by_id(conn, t.credential_sets, row_id)
            if row is None:
                return
            await self.store.update(
                conn,
                t.credential_sets,
                row_id,
                {"auth_credentials": _with_health(row["auth_credentials"], health)},
            )

    async def validate_credential_set(self, ref: RegistryRef, name: str) -> CredentialSet:
        """Measure the health of every credential of a set now, store it and return the set.

        :raises ResourceNotFound: no such credential set.
        """
        validate_registry_ref(ref)
        validate_name(name, "credentialSet")
        async with self.store.read() as conn:
            registry = await self._registry_row(conn, ref)
            row = await self._child(conn, t.credential_sets, registry, name, "credential set")
        health = await self._measure(row)
        if health is not None:
            await self._store_health(int(row["id"]), health)
        async with self.store.read() as conn:
            fresh = await self._child(conn, t.credential_sets, registry, name, "credential set")
        return self._set_model(registry, fresh)

    async def refresh_health(self) -> int:
        """Measure every credential set's health once; return how many sets were measured."""
        count, after = 0, 0
        while True:
            async with self.store.read() as conn:
                rows = await self.store.credential_sets_after(conn, after, 100)
            if not rows:
                return count
            for row in rows:
                after = int(row["id"])
                if row["provisioning_state"] not in TERMINAL:
                    continue
                health = await self._measure(row)
                if health is not None:
                    await self._store_health(after, health)
                    count += 1

    async def _health_forever(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            try:
                await self.refresh_health()
            except asyncio.CancelledError:
                raise
            except Exception:  # one failed round must not stop the timer
                log.exception("credential health refresh failed")

    # -- helpers --------------------------------------------------------------------------------
    async def _accepted(
        self, kind: Kind, row_id: int, resource_id: str, op_id: str, created: bool
    ) -> Accepted[Any]:
        task = self.run_soon(op_id)
        with contextlib.suppress(asyncio.TimeoutError):
            # Fast operations finish before the answer; slow ones are polled by the client.
            await asyncio.wait_for(asyncio.shield(task), timeout=0.5)
        async with self.store.read() as conn:
            row = await self.store.get_by_id(conn, _TABLES[kind], row_id)
            if row is None:
                return Accepted(None, created, op_id, resource_id)
            if kind is Kind.REGISTRY:
                return Accepted(self._registry_model(row), created, op_id, resource_id)
            registry = await self.store.get_by_id(conn, t.registries, int(row["registry_id"]))
            assert registry is not None
            if kind is Kind.CACHE_RULE:
                sets = await self.store.credential_set_names(conn, _set_ids([row]))
                return Accepted(self._rule_model(registry, row, sets), created, op_id, resource_id)
            return Accepted(self._set_model(registry, row), created, op_id, resource_id)

    async def _delete_child(
        self, ref: RegistryRef, name: str, kind: Kind, actor: Actor
    ) -> Accepted[Any]:
        validate_registry_ref(ref)
        validate_name(name, "cacheRule" if kind is Kind.CACHE_RULE else "credentialSet")
        table = _TABLES[kind]
        async with self.store.write() as conn:
            registry = await self._registry_row(conn, ref)
            row = await self.store.get_child(conn, table, int(registry["id"]), name)
            resource_id = self._child_id(registry, kind, name if row is None else row["name"])
            if row is None:
                return Accepted(None, False, None, resource_id)
            self._check_idle(row)
            if kind is Kind.CREDENTIAL_SET:
                users = await self.store.rules_using_credential_set(conn, int(row["id"]))
                if users:
                    raise _in_use(row["name"], users)
            await self.store.update(
                conn, table, int(row["id"]), {"provisioning_state": "Deleting", **_modified(actor)}
            )
            op_id = await self._new_operation(
                conn, kind, resource_id, int(registry["id"]), int(row["id"]), "delete"
            )
        return await self._accepted(kind, int(row["id"]), resource_id, op_id, False)

    async def _new_operation(
        self,
        conn: AsyncConnection,
        kind: Kind,
        resource_id: str,
        registry_id: int | None,
        row_id: int,
        action: str,
    ) -> str:
        op_id = f"{kind.value.lower()}-{uuid.uuid4()}"
        now = utcnow()
        values = {
            "id": op_id,
            "resource_id": resource_id,
            "resource_kind": kind.value,
            "registry_id": registry_id,
            "row_id": row_id,
            "action": action,
            "status": "InProgress",
            "started_at": now,
            # The accepting process holds the lease from the start (see _run).
            "lease_owner": self.owner,
            "lease_expires": now + dt.timedelta(seconds=self.lease_seconds),
        }
        await self.store.insert_operation(conn, values)
        self._fresh[op_id] = values
        return op_id

    async def _registry_row(
        self, conn: AsyncConnection, ref: RegistryRef, *, parent: bool = True
    ) -> RowMapping:
        row = await self.store.get_registry(conn, ref.subscription, ref.resource_group, ref.name)
        if row is None or (parent and row["provisioning_state"] == "Deleting"):
            message = (
                f"The registry '{ref.name}' was not found in resource group '{ref.resource_group}'."
            )
            if parent:
                raise e.ParentResourceNotFound(message, target="registryName")
            raise e.ResourceNotFound(message, target="registryName")
        return row

    async def _child(
        self, conn: AsyncConnection, table: sa.Table, registry: RowMapping, name: str, what: str
    ) -> RowMapping:
        row = await self.store.get_child(conn, table, int(registry["id"]), name)
        if row is None:
            raise e.ResourceNotFound(
                f"The {what} '{name}' was not found in registry '{registry['name']}'.", target=name
            )
        return row

    async def _resolve_set_reference(
        self, conn: AsyncConnection, registry: RowMapping, set_ref: str | None
    ) -> int | None:
        if set_ref is None:
            return None
        target = "properties.credentialSetResourceId"
        if not isinstance(set_ref, str):  # pragma: no cover - strict parse
            raise e.InvalidPropertyValue("must be a string", target=target)
        own = _registry_id_of(registry).lower() + "/credentialsets/"
        if not set_ref.lower().startswith(own) or "/" in set_ref[len(own) :]:
            raise e.InvalidCredentialSetReference(
                f"'credentialSetResourceId' must be the id of a credential set of registry "
                f"'{registry['name']}', of the form {_registry_id_of(registry)}/credentialSets/"
                f"<name>; got {set_ref!r}.",
                target=target,
            )
        set_name = set_ref[len(own) :]
        row = await self.store.get_child(conn, t.credential_sets, int(registry["id"]), set_name)
        if row is None or row["provisioning_state"] == "Deleting":
            raise e.CredentialSetNotFound(
                f"The credential set '{set_name}' does not exist in registry '{registry['name']}'. "
                "Create it before the rule that uses it.",
                target=target,
            )
        return int(row["id"])

    async def _check_rule_capacity(
        self, conn: AsyncConnection, registry_id: int, name: str, pattern: RulePattern
    ) -> None:
        if pattern.wildcard:
            clashes = list(
                await self.store.rules_with_targets(
                    conn, registry_id, target_ancestors(pattern.target_path), True
                )
            )
            clashes += await self.store.wildcard_rules_under(conn, registry_id, pattern.target_path)
        else:
            clashes = list(
                await self.store.rules_with_targets(conn, registry_id, [pattern.target_path], False)
            )
        for other in clashes:
            existing = parse_rule(other["source_repository"], other["target_repository"])
            if overlaps(pattern, existing):
                raise e.TargetConflict(
                    f"The target repository '{pattern.target_repository}' of cache rule '{name}' "
                    f"overlaps the target '{existing.target_repository}' of cache rule "
                    f"'{other['name']}'. Wildcard rules may not share or nest targets and static "
                    "rules may not share a target.",
                    target="properties.targetRepository",
                )
        count = await self.store.count_children(conn, t.cache_rules, registry_id)
        if count >= self.arm.max_rules_per_registry:
            raise e.QuotaExceeded(
                f"The registry already has {count} cache rules, the maximum "
                f"({self.arm.max_rules_per_registry}). Delete a rule before creating another."
            )

    def _check_upstream_allowed(self, login_server: str, target: str) -> None:
        host = login_server.lower()
        allowed = self.policy.allowed_login_servers
        if allowed and not any(_host_matches(host, pattern) for pattern in allowed):
            raise e.UpstreamNotAllowed(
                f"Unsupported upstream or login server '{login_server}'. Allowed upstreams: "
                f"{', '.join(allowed)}.",
                target=target,
            )
        bare = urlsplit(f"//{host}").hostname or host
        if self.policy.forbid_private_addresses and is_private_host(bare):
            raise e.UpstreamNotAllowed(
                f"The upstream '{login_server}' is a private or loopback address, which the "
                "upstream policy forbids.",
                target=target,
            )

    def _check_docker_hub_credentials(self, pattern: RulePattern, set_id: int | None) -> None:
        if (
            self.policy.require_docker_hub_credentials
            and set_id is None
            and is_docker_hub(pattern.source_login_server)
        ):
            raise e.DockerHubCredentialsRequired(
                "Cannot create cache rule pointing to Docker Hub without credentials. Please add "
                "a credential set to the cache rule.",
                target="properties.credentialSetResourceId",
            )

    def _check_identifier(self, value: str, target: str) -> None:
        """Refuse a secret identifier no configured resolver can read (no I/O)."""
        if self.resolvers is None:
            return
        try:
            self.resolvers.check_identifier(value)
        except e.InvalidSecretIdentifier as exc:
            raise e.InvalidSecretIdentifier(f"'{target}': {exc.message}", target=target) from None

    @staticmethod
    def _check_idle(row: RowMapping) -> None:
        if row["provisioning_state"] not in TERMINAL:
            raise e.OperationInProgress(
                f"'{row['name']}' is {row['provisioning_state']}; wait for that operation to "
                "finish and try again."
            )

    def _registry_values(
        self,
        ref: RegistryRef,
        location: str,
        sku: str,
        tags: dict[str, str],
        actor: Actor,
        state: str,
    ) -> dict[str, Any]:
        modified = _modified(actor)
        return {
            "subscription": ref.subscription,
            "resource_group": ref.resource_group,
            "resource_group_key": ref.resource_group.lower(),
            "name": ref.name,
            "name_key": ref.name.lower(),
            "location": location,
            "sku": sku,
            "tags": json.dumps(tags),
            "provisioning_state": state,
            "created_at": modified["modified_at"],
            "created_by": actor.name,
            **modified,
        }

    def _page(self, items: list[T], rows: Sequence[RowMapping]) -> Page[T]:
        if len(items) > self.arm.page_size:
            items = items[: self.arm.page_size]
            return Page(items, encode_token(str(rows[self.arm.page_size - 1]["name_key"])))
        return Page(items, None)

    @staticmethod
    def _child_id(registry: RowMapping, kind: Kind, name: str) -> str:
        return f"{_registry_id_of(registry)}/{kind.value}/{name}"

    def _registry_model(self, row: RowMapping) -> Registry:
        return Registry(
            id=_registry_id_of(row),
            name=row["name"],
            type=REGISTRY_TYPE,
            system_data=_system_data(row),
            location=row["location"],
            tags=json.loads(row["tags"]),
            sku=Sku(name=SkuName(row["sku"]), tier=row["sku"]),
            login_server=self.login_server(row["name"]),
            creation_date=as_utc(row["created_at"]),
            provisioning_state=ProvisioningState(row["provisioning_state"]),
        )

    def _rule_model(self, registry: RowMapping, row: RowMapping, sets: dict[int, str]) -> CacheRule:
        set_id = row["credential_set_id"]
        return CacheRule(
            id=self._child_id(registry, Kind.CACHE_RULE, row["name"]),
            name=row["name"],
            type=CACHE_RULE_TYPE,
            system_data=_system_data(row),
            source_repository=row["source_repository"],
            target_repository=row["target_repository"],
            credential_set_resource_id=(
                None
                if set_id is None
                else self._child_id(registry, Kind.CREDENTIAL_SET, sets.get(set_id, str(set_id)))
            ),
            creation_date=as_utc(row["created_at"]),
            provisioning_state=ProvisioningState(row["provisioning_state"]),
        )

    def _set_model(self, registry: RowMapping, row: RowMapping) -> CredentialSet:
        credentials = [
            AuthCredential.from_arm(item) for item in json.loads(row["auth_credentials"])
        ]
        return CredentialSet(
            id=self._child_id(registry, Kind.CREDENTIAL_SET, row["name"]),
            name=row["name"],
            type=CREDENTIAL_SET_TYPE,
            system_data=_system_data(row),
            identity=IdentityProperties(
                type=ResourceIdentityType(row["identity_type"]),
                principal_id=row["principal_id"],
                tenant_id=self.tenant_id,
            ),
            login_server=row["login_server"],
            auth_credentials=credentials,
            creation_date=as_utc(row["created_at"]),
            provisioning_state=ProvisioningState(row["provisioning_state"]),
        )


_TABLES: dict[Kind, sa.Table] = {
    Kind.REGISTRY: t.registries,
    Kind.CACHE_RULE: t.cache_rules,
    Kind.CREDENTIAL_SET: t.credential_sets,
}


def _registry_id_of(row: RowMapping) -> str:
    return RegistryRef(row["subscription"], row["resource_group"], row["name"]).resource_id


def _set_ids(rows: Sequence[RowMapping]) -> list[int]:
    return [int(r["credential_set_id"]) for r in rows if r["credential_set_id"] is not None]


def _modified(actor: Actor) -> dict[str, Any]:
    return {"modified_at": utcnow(), "modified_by": actor.name}


def _system_data(row: RowMapping) -> SystemData:
    return SystemData(
        created_by=row["created_by"],
        created_by_type=CreatedByType.KEY,
        created_at=as_utc(row["created_at"]),
        last_modified_by=row["modified_by"],
        last_modified_by_type=CreatedByType.KEY,
        last_modified_at=as_utc(row["modified_at"]),
    )


def _require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise e.InvalidRequestContent("The request body must be a JSON object.")
    return body


def _required_str(value: Any, target: str) -> str:
    if value is None:
        raise e.MissingProperty(f"'{target}' is required.", target=target)
    if not isinstance(value, str):  # pragma: no cover - strict parse catches it first
        raise e.InvalidPropertyValue(f"'{target}' must be a string.", target=target)
    return value


def _identity_type(identity: IdentityProperties | None) -> str:
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


def _check_secret_identifier(value: Any, target: str) -> str:
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


def _merge_credentials(
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
                item[key] = _check_secret_identifier(value, f"{where}.{key}")
                check(item[key], f"{where}.{key}")
            elif require_complete or key not in item:
                _check_secret_identifier(None, f"{where}.{key}")
        item.pop("credentialHealth", None)  # new identifiers: health is measured again
        merged[name] = item
    return list(merged.values())


def _identifiers(item: dict[str, Any]) -> str:
    return f"{item.get('usernameSecretIdentifier')}\n{item.get('passwordSecretIdentifier')}"


def _with_health(stored: str, health: dict[str, dict[str, str]]) -> str:
    """``stored`` credentials with ``health`` recorded on the items whose identifiers still match.

    A credential whose identifiers changed while its health was measured keeps no health: the
    measurement was of the old identifiers.
    """
    items = json.loads(stored)
    for item in items:
        result = health.get(item["name"])
        if result is not None and result.get("_identifiers") == _identifiers(item):
            item["credentialHealth"] = {k: v for k, v in result.items() if k != "_identifiers"}
    return json.dumps(items)


def _in_use(name: str, users: list[str]) -> e.CredentialSetInUse:
    return e.CredentialSetInUse(
        f"The credential set '{name}' is used by cache rule(s) {', '.join(users)}; update or "
        "delete those rules first.",
        target=name,
    )


def _host_matches(host: str, pattern: str) -> bool:
    """``host`` (``name[:port]``) against ``name``, ``name:port`` or ``*.domain`` (any port)."""
    if ":" not in pattern and not host.startswith("["):
        host = host.split(":", 1)[0]
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and host != pattern[2:]
    return host == pattern
