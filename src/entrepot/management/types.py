"""The values the management services take and return (no I/O, no HTTP)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Generic, TypeVar

from entrepot.metadata.records import OperationState, RegistryKey
from entrepot.models import CreatedByType, registry_resource_id

T = TypeVar("T")

__all__ = ["Accepted", "Actor", "OperationState", "OperationStatus", "Page", "RegistryRef"]


@dataclass(frozen=True)
class RegistryRef(RegistryKey):
    """Which registry a request is about, as written in its path."""

    @property
    def resource_id(self) -> str:
        return registry_resource_id(self.subscription, self.resource_group, self.name)


@dataclass(frozen=True)
class Accepted(Generic[T]):
    """The outcome of a mutating call: the resource as it stands and the operation carrying it
    out (``operation_id`` is ``None`` when there was nothing to do, e.g. deleting nothing)."""

    resource: T | None
    created: bool
    operation_id: str | None
    resource_id: str


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list and the keyset position after its last item (``None``: last page)."""

    items: list[T]
    next_after: str | None


@dataclass(frozen=True)
class OperationStatus:
    """An operation record as the status endpoints show it."""

    id: str
    resource_id: str
    action: str
    status: OperationState
    start_time: dt.datetime
    end_time: dt.datetime | None
    error_code: str | None
    error_message: str | None


@dataclass(frozen=True)
class Actor:
    """Who makes a change, for ``systemData``."""

    name: str
    type: CreatedByType = CreatedByType.KEY
