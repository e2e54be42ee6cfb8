"""The registries and their cache rules as the registry face sees them: in memory, bounded,
revalidated across processes, dropped at once in this one.

A warm pull must not cost a database round trip to find its registry and rule
(ARCHITECTURE.md "Hot paths"). :class:`RegistryDirectory` keeps, per registry name asked for
(and for "the server's only registry"), the answer of the metadata store and, per registry, its
:class:`~entrepot.proxy.resolution.RegistryRules`. What callers may rely on:

* **Freshness across processes**: an answer is reused for at most ``refresh_seconds`` after the
  point read that produced it started; then one point read (the registry's row id, name and
  ``rules_version``, which every change to its rules bumps in the same transaction) revalidates
  it. The rules are read again only when the version (or the registry's row id) changed. So a
  rule created, changed or deleted by another process serves, or stops serving, here within
  ``refresh_seconds`` of its commit (plus the time of one read).
* **Immediately in this process**: :meth:`RegistryDirectory.invalidate` (subscribed to the
  resource store's commits by ``app.py``) drops what a committed change made stale before the
  next request looks: a refresh that was in flight during the change is not kept.
* **Bounded**: at most ``capacity`` names and ``capacity`` registries' rules are held, least
  recently used dropped first; unknown names are remembered too (so a flood of them costs a
  read per name per interval), within the same bound.
* **One read at a time**: concurrent requests for an entry that needs a refresh share one read.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from entrepot.metadata.records import CacheRuleRecord, RegistryHead, ResourceChanges
from entrepot.proxy.resolution import RegistryRules

__all__ = ["RegistryDirectory", "RegistrySource"]

_SOLE = "\x00sole"  # the key of "the server's only registry" (no registry name contains NUL)


class RegistrySource(Protocol):
    """The point reads the directory needs (``SqlResourceStore`` has them)."""

    async def registry_heads(self, name: str) -> list[RegistryHead]:
        """At most two registries named ``name`` (any case), by row id."""
        ...

    async def first_registry_heads(self) -> list[RegistryHead]:
        """The first two registries of the server, by row id."""
        ...

    async def cache_rules(self, registry_id: int) -> list[CacheRuleRecord]:
        """Every cache rule of the registry, at least as new as a version read before."""
        ...


@dataclass(slots=True)
class _Heads:
    heads: list[RegistryHead]
    checked: float


class RegistryDirectory:
    """Registry lookups by name and the rules of each registry, cached (see the module doc).

    :param source: the metadata store's point reads.
    :param refresh_seconds: how long an answer is used before one point read revalidates it.
    :param capacity: how many names, and how many registries' rules, are kept at most.
    :param clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        source: RegistrySource,
        refresh_seconds: float = 1.0,
        capacity: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._refresh = refresh_seconds
        self._capacity = max(1, capacity)
        self._clock = clock
        self._heads: OrderedDict[str, _Heads] = OrderedDict()
        self._rules: OrderedDict[int, tuple[int, RegistryRules]] = OrderedDict()
        self._pending: dict[str, asyncio.Future[list[RegistryHead]]] = {}
        self._generation = 0

    # -- lookups --------------------------------------------------------------------------------
    async def named(self, name: str) -> list[RegistryHead]:
        """At most two registries named ``name`` (any case): none, one, or two for "several"."""
        return await self._lookup(name.lower(), lambda: self._source.registry_heads(name))

    async def sole(self) -> RegistryHead | None:
        """The server's only registry; ``None`` when it holds none or several."""
        heads = await self.first()
        return heads[0] if len(heads) == 1 else None

    async def first(self) -> list[RegistryHead]:
        """The server's first two registries by row id: none, one, or two for "several"."""
        return await self._lookup(_SOLE, self._source.first_registry_heads)

    async def rules(self, head: RegistryHead) -> RegistryRules:
        """The rules of the registry ``head`` names, as of its ``rules_version`` or newer."""
        held = self._rules.get(head.id)
        if held is not None and held[0] == head.rules_version:
            self._rules.move_to_end(head.id)
            return held[1]
        generation = self._generation
        records = await self._source.cache_rules(head.id)
        rules = RegistryRules(head.id, head.name, records)
        if generation == self._generation:  # else a change committed meanwhile: do not keep
            self._rules[head.id] = (head.rules_version, rules)
            self._rules.move_to_end(head.id)
            while len(self._rules) > self._capacity:
                self._rules.popitem(last=False)
        return rules

    def invalidate(self, changes: ResourceChanges) -> None:
        """Forget what ``changes`` (committed by this process) made stale."""
        self._generation += 1
        self._pending.clear()  # reads in flight may predate the change: new requests read anew
        if changes.registries:
            self._heads.clear()
        for registry_id in changes.rules_of:
            self._rules.pop(registry_id, None)
        if changes.rules_of:  # the heads hold the old rules_version
            stale = [
                key
                for key, entry in self._heads.items()
                if any(h.id in changes.rules_of for h in entry.heads)
            ]
            for key in stale:
                del self._heads[key]

    # -- internals ------------------------------------------------------------------------------
    async def _lookup(
        self, key: str, read: Callable[[], Awaitable[list[RegistryHead]]]
    ) -> list[RegistryHead]:
        entry = self._heads.get(key)
        now = self._clock()
        if entry is not None and now - entry.checked < self._refresh:
            self._heads.move_to_end(key)
            return entry.heads
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._read(key, read))
            self._pending[key] = pending
            pending.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(pending)

    async def _read(
        self, key: str, read: Callable[[], Awaitable[list[RegistryHead]]]
    ) -> list[RegistryHead]:
        generation = self._generation
        started = self._clock()
        heads = await read()
        if generation == self._generation:
            self._heads[key] = _Heads(heads, started)
            self._heads.move_to_end(key)
            while len(self._heads) > self._capacity:
                self._heads.popitem(last=False)
        return heads

    def _forget(self, key: str, done: asyncio.Future[list[RegistryHead]]) -> None:
        if self._pending.get(key) is done:
            del self._pending[key]
        if not done.cancelled():
            done.exception()  # retrieved, so a failure nobody awaited is not logged
